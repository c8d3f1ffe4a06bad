"""A fast HTTP/1.1 load generator for the benchmarks: raw sockets, keep-alive, one asyncio protocol per connection.

    uv run python bench/loadgen.py --port 4318 --path /v1/traces --bodies FILE [--connections 32] [--gzip]

httpx tops out near 500 requests/s here, far below what a receiver of one-span requests or a trivial ASGI app
answers; this client sends prebuilt request bytes and reads answers by Content-Length, so it costs a few microseconds
a request. It runs as its own process (the benchmarks start it with `run_process`), prints one JSON line of results
and its own CPU time, so a benchmark can tell when the client itself was the limit.

A 503 (or a connection closed by the server) puts the request back in the queue, to be sent again after the answer's
Retry-After (capped by --max-retry-wait): a sender that retries, as the clients' spool does. Every other status is
final and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Stats:
    """What a run saw: final statuses, retries, seconds from the first request to the last answer."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    retried: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms) or [0.0]
        return {
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "retried": self.retried,
            "reconnects": self.reconnects,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "p50_ms": lat[len(lat) // 2],
            "p99_ms": lat[min(len(lat) - 1, len(lat) * 99 // 100)],
            "max_ms": lat[-1],
        }


def request_bytes(host: str, path: str, body: bytes, content_type: str, gzip: bool) -> bytes:
    """One POST, ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"{'Content-Encoding: gzip' + chr(13) + chr(10) if gzip else ''}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: int | None = None  # index of the request in flight
        self.sent_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self.next()

    def next(self) -> None:
        index = self.load.take()
        if index is None:
            self.current = None
            if self.transport is not None:
                self.transport.close()
            return
        self.current = index
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.load.requests[index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return
            status = int(head[9:12])
            retry_after = 0.0
            if status == 503:
                at = head.find(b"retry-after:")
                if at >= 0:
                    line_end = head.find(b"\r\n", at)
                    retry_after = float(head[at + 12 : line_end if line_end >= 0 else len(head)])
            closing = b"connection: close" in head
            del self.buffer[: end + 4 + length]
            index, self.current = self.current, None
            self.load.answered(index, status, retry_after, time.perf_counter() - self.sent_at)
            if closing:
                assert self.transport is not None
                self.transport.close()
                return
            self.next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.current is not None:  # cut before its answer: the sender tries again, as an exporter does
            self.load.stats.reconnects += 1
            self.load.retry(self.current, 0.05)
            self.current = None
        if not self.closed.done():
            self.closed.set_result(None)


class _Load:
    def __init__(self, requests: Sequence[bytes], max_retry_wait: float) -> None:
        self.requests = requests
        self.queue: collections.deque[int] = collections.deque(range(len(requests)))
        self.outstanding = len(requests)
        self.delayed = 0
        self.stats = Stats()
        self.max_retry_wait = max_retry_wait
        self.finished = asyncio.get_running_loop().create_future()
        self.wakeup: asyncio.Event = asyncio.Event()

    def take(self) -> int | None:
        return self.queue.popleft() if self.queue else None

    def answered(self, index: int, status: int, retry_after: float, seconds: float) -> None:
        if status == 503:
            self.stats.retried += 1
            self.retry(index, min(retry_after, self.max_retry_wait))
            return
        self.stats.statuses[status] += 1
        self.stats.latencies_ms.append(seconds * 1e3)
        self.outstanding -= 1
        if not self.outstanding and not self.finished.done():
            self.finished.set_result(None)

    def retry(self, index: int, delay: float) -> None:
        self.delayed += 1

        def again() -> None:
            self.delayed -= 1
            self.queue.append(index)
            self.wakeup.set()

        asyncio.get_running_loop().call_later(delay, again)


async def run(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    max_retry_wait: float = 5.0,
    ramp_seconds: float = 0.0,
) -> Stats:
    """Send every request over `connections` keep-alive connections until each has a final (non-503) answer.
    `ramp_seconds` spreads the connections' starts over that time (a burst arriving, not all at once)."""
    loop = asyncio.get_running_loop()
    load = _Load(requests, max_retry_wait)
    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)

    async def connection(delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        while load.outstanding:
            if not load.queue:  # everything is in flight or waiting out a Retry-After
                load.wakeup.clear()
                await load.wakeup.wait()
                continue
            try:
                _, protocol = await loop.create_connection(lambda: _Connection(load), host, port)
            except OSError:
                load.stats.reconnects += 1
                await asyncio.sleep(0.1)
                continue
            await protocol.closed

    tasks = [asyncio.create_task(connection(ramp_seconds * i / connections)) for i in range(connections)]
    await load.finished
    load.stats.seconds = time.perf_counter() - started
    load.wakeup.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    load.stats.cpu_seconds = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    return load.stats


# --- bodies in a file, so a benchmark can hand them to a client process ------------------------------------------


def write_bodies(path: Path, bodies: Sequence[bytes]) -> None:
    """Length-prefixed bodies, for --bodies."""
    with path.open("wb") as f:
        for body in bodies:
            f.write(struct.pack("<I", len(body)))
            f.write(body)


def read_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    bodies, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        bodies.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return bodies


def run_process(
    port: int,
    path: str,
    bodies_file: Path,
    connections: int,
    *,
    gzip: bool = False,
    ramp_seconds: float = 0.0,
    max_retry_wait: float = 5.0,
) -> dict[str, Any]:
    """Run this script as a process of its own and return its results (Stats.as_dict)."""
    command = [
        sys.executable, __file__, "--port", str(port), "--path", path, "--bodies", str(bodies_file),
        "--connections", str(connections), "--ramp-seconds", str(ramp_seconds), "--max-retry-wait",
        str(max_retry_wait),
    ]  # fmt: skip
    if gzip:
        command.append("--gzip")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/traces")
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--ramp-seconds", type=float, default=0.0)
    parser.add_argument("--max-retry-wait", type=float, default=5.0)
    args = parser.parse_args()
    bodies = read_bodies(args.bodies)
    requests = [request_bytes(args.host, args.path, b, "application/x-protobuf", args.gzip) for b in bodies]
    del bodies
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    stats = asyncio.run(run(args.host, args.port, requests, args.connections, args.max_retry_wait, args.ramp_seconds))
    print(json.dumps(stats.as_dict()))


if __name__ == "__main__":
    main()
