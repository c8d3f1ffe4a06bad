"""A burst: 10,000 one-span requests (what `glia run` sends without a collector: one run, one request) from 200
concurrent keep-alive connections, all sent at once, against one receiver on a private embedded PostgreSQL.

    uv run python bench/burst.py [--requests 10000] [--connections 200] [--port 43188] [--set GLIA_X=V ...]

`--set` gives the receiver a setting, e.g. `--set GLIA_POOL_MAX_SIZE=1 --set GLIA_POOL_ACQUIRE_TIMEOUT=0.05` to
make it push back (503 + Retry-After) on a burst it would otherwise absorb.

Each connection sends its share back to back; a 503 is retried on the same connection after its Retry-After, as
glia's client resends its spool (any other status than 200 or 503 fails the run). Prints when the first attempts
went out (the arrival window), the answers by status, the time until every request was answered 200, the rows in
PostgreSQL (exactly one per request: count and distinct keys) and the receiver's RSS sampled every 200 ms. Targets
(issue 15): every request stored exactly once within 60 s of the burst, the receiver's memory bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest

from receiver.embedded import EmbeddedPostgres
from receiver.migrate import upgrade


class Tally:
    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()
        self.first_sent: list[float] = []
        self.done_at = 0.0


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, float]:
    """The status and Retry-After (0 if none) of one HTTP/1.1 answer; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, retry_after = 0, 0.0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "retry-after":
            retry_after = float(value)
    if length:
        await reader.readexactly(length)
    return status, retry_after


async def connection(port: int, bodies: list[bytes], tally: Tally, started: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            head = (
                f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\n"
                f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            first = True
            while True:
                writer.write(head + body)
                if first:
                    tally.first_sent.append(time.perf_counter() - started)
                    first = False
                status, retry_after = await read_answer(reader)
                tally.statuses[status] += 1
                if status == 200:
                    break
                if status != 503:
                    raise RuntimeError(f"the receiver answered {status}")
                await asyncio.sleep(retry_after or 1.0)
        tally.done_at = max(tally.done_at, time.perf_counter() - started)
    finally:
        writer.close()


async def burst(port: int, bodies: list[bytes], connections: int) -> Tally:
    tally = Tally()
    shares = [bodies[i::connections] for i in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(connection(port, share, tally, started) for share in shares))
    return tally


async def stored(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS keys FROM spans")
        assert row is not None
        return int(row["n"]), int(row["keys"])
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--port", type=int, default=43188)
    parser.add_argument("--set", action="append", default=[], metavar="GLIA_X=V", help="a receiver setting")
    args = parser.parse_args()
    for setting in args.set:
        name, _, value = setting.partition("=")
        os.environ[name] = value  # the receiver process inherits it

    data_dir = Path(tempfile.mkdtemp(prefix="glia-bench-burst-"))
    data_dir.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    pg = EmbeddedPostgres(data_dir)
    try:
        url = pg.start()
        upgrade(url)
        bodies = ingest.one_span_bodies(args.requests, seed=77)
        proc = ingest.start_receiver(url, args.port)
        try:
            sampler = ingest.RssSampler(proc.pid)
            sampler.start()
            tally = asyncio.run(burst(args.port, bodies, args.connections))
            time.sleep(0.5)
            sampler.stop.set()
            sampler.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        rows, keys = asyncio.run(stored(url))
        mib = [s / 2**20 for s in sampler.samples] or [0.0]
        window = max(tally.first_sent) - min(tally.first_sent)
        others = {s: n for s, n in tally.statuses.items() if s not in (200, 503)}
        print(f"burst: {args.requests} one-span requests over {args.connections} keep-alive connections {args.set}")
        print(f"  first attempts sent within {window:.2f} s (target: within 10 s)")
        print(f"  answers: 200 x {tally.statuses[200]}, 503 x {tally.statuses[503]}, other {others or 0}")
        print(f"  every request answered 200 after {tally.done_at:.2f} s (target: stored within 60 s)")
        print(f"  rows in PostgreSQL: {rows}, distinct keys {keys}, expected {args.requests}")
        print(f"  receiver RSS: {mib[0]:.0f} MiB at the start, {max(mib):.0f} MiB at the peak")
        ok = rows == keys == args.requests and tally.done_at < 60 and window < 10
        print("  targets: " + ("met" if ok else "NOT met"))
        sys.exit(0 if ok else 1)
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
