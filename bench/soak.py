"""Soak: runs through collector -> HAProxy -> receivers -> PostgreSQL while a receiver is SIGKILLed every minute.

All real processes, in the layout of collector-config/ (config.yaml as the gateway, haproxy.cfg in front of two or
more `glia serve` receivers on one private embedded PostgreSQL). A sender posts pre-serialised OTLP/HTTP protobuf
batches of glia-run-shaped spans (unique span ids) to the collector; one receiver at a time is killed with SIGKILL
and started again on its port. At the end: rows stored (must equal --runs), duplicates (rows minus distinct
(trace_id, span_id)), each process's peak RSS in each quarter of the run, kills, and the end-to-end rate.

    uv run python bench/soak.py                                  # 1,000,000 runs, a kill every 60 s
    uv run python bench/soak.py --runs 50000 --kill-every 10     # a short run for development
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from receiver.embedded import EmbeddedPostgres  # noqa: E402
from receiver.migrate import upgrade  # noqa: E402

CONFIG_DIR = REPO / "collector-config"
COLLECTOR_BIN = Path(os.environ.get("GLIA_OTELCOL_BIN") or REPO / ".build" / "collector" / "otelcol-glia")
GLIA = str(Path(sys.executable).parent / "glia")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, headers={"Host": "localhost"}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def body(start: int, count: int, now: int) -> bytes:
    """One request: `count` glia-run-shaped spans numbered from `start`, each its own trace (one run)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("service.name", "soak"), ("host.name", "soak-node-1"), ("process.owner", "ada")):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    ss = rs.scope_spans.add()
    ss.scope.name = "glia"
    for n in range(start, start + count):
        span = ss.spans.add()
        span.trace_id = (0x50A4 << 64 | n).to_bytes(16, "big")
        span.span_id = (n + 1).to_bytes(8, "big")
        span.name = f"align sample-{n % 500}"
        span.kind = 1
        span.start_time_unix_nano = now + n * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + 2_000_000_000
        for key, value in (
            ("glia.run.kind", "block"),
            ("glia.run.command", f"bwa mem ref.fa sample-{n % 500}.fq"),
            ("glia.run.cwd", "/scratch/ada/project"),
            ("glia.workflow.name", "soak"),
        ):
            kv = span.attributes.add()
            kv.key, kv.value.string_value = key, value
        kv = span.attributes.add()
        kv.key, kv.value.int_value = "process.exit_code", 0
    return gzip.compress(request.SerializeToString(), compresslevel=1)


async def send_all(url: str, runs: int, batch: int, connections: int, rate: float) -> int:
    """Post every run to the collector, at most `rate` runs/s (0: as fast as it goes); retried on any non-200 (its
    memory limiter's 503). Returns the retries."""
    now = time.time_ns() - runs * 1000 - 3_600_000_000_000
    starts = iter(range(0, runs, batch))
    retries = 0
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal retries
        for start in starts:
            if rate:
                await asyncio.sleep(max(0.0, began + start / rate - time.monotonic()))
            payload = body(start, min(batch, runs - start), now)
            while True:
                try:
                    response = await client.post(url + "/v1/traces", content=payload, headers=headers)
                    if response.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                retries += 1
                await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    began = time.monotonic()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    return retries


class Receiver:
    def __init__(self, database_url: str, log: Path) -> None:
        self.database_url, self.log, self.port = database_url, log, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "GLIA_DATABASE_URL"}
        env["GLIA_LOG_LEVEL"] = "warning"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [GLIA, "serve", "--database-url", self.database_url, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_http(f"http://127.0.0.1:{self.port}/readyz", self.process, f"receiver on {self.port}")

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


class Sampler(threading.Thread):
    """RSS of each role four times a second: (seconds since start, role, bytes); a role's processes are summed."""

    def __init__(self, roles: dict[str, Callable[[], list[int]]]) -> None:
        super().__init__(daemon=True)
        self.roles = roles  # name -> its pids now
        self.samples: list[tuple[float, str, int]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic() - self.t0
            for role, pids in self.roles.items():
                total = 0
                for pid in pids():
                    with contextlib.suppress(psutil.Error):
                        total += psutil.Process(pid).memory_info().rss
                if total:
                    self.samples.append((t, role, total))
            self.stop.wait(0.25)


def postgres_pids(data_dir: Path) -> list[int]:
    try:
        main = psutil.Process(int(next(data_dir.rglob("postmaster.pid")).read_text().split()[0]))
        return [main.pid, *(c.pid for c in main.children(recursive=True))]
    except (StopIteration, OSError, ValueError, psutil.Error):
        return []


async def count(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT (trace_id, span_id)) AS keys FROM spans"
            " WHERE name LIKE 'align sample-%'"
        )
        assert row is not None
        return int(row["rows"]), int(row["keys"])
    finally:
        await conn.close()


async def rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM spans"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between SIGKILLs of a receiver")
    parser.add_argument("--receivers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250, help="spans a request to the collector")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0, help="runs/s to send at most (0: as fast as it goes)")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the last rows")
    args = parser.parse_args()
    if args.receivers > 2:
        parser.error("haproxy.cfg names two receivers (GLIA_RECEIVER_1, _2); add server lines for more")
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    work = Path(tempfile.mkdtemp(prefix="glia-soak-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    pg = EmbeddedPostgres(work / "pg")
    procs: list[subprocess.Popen[bytes]] = []
    receivers: list[Receiver] = []
    try:
        url = pg.start()
        upgrade(url)
        receivers = [Receiver(url, work / f"receiver{i}.log") for i in range(1, args.receivers + 1)]
        for r in receivers:
            r.start()
        lb_port = free_port()
        lb_env = {
            **os.environ,
            "GLIA_LB_BIND": f"127.0.0.1:{lb_port}",
            **{f"GLIA_RECEIVER_{i}": f"127.0.0.1:{r.port}" for i, r in enumerate(receivers, 1)},
        }
        with (work / "haproxy.log").open("ab") as out:
            lb = subprocess.Popen(
                [haproxy, "-db", "-f", str(CONFIG_DIR / "haproxy.cfg")], stdout=out, stderr=out, env=lb_env
            )
        procs.append(lb)
        wait_http(f"http://127.0.0.1:{lb_port}/readyz", lb, "haproxy")
        http = f"127.0.0.1:{free_port()}"
        health = f"127.0.0.1:{free_port()}"
        col_env = {
            **os.environ,
            "GLIA_RECEIVER_ENDPOINT": f"http://127.0.0.1:{lb_port}",
            "GLIA_COLLECTOR_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
            "GLIA_COLLECTOR_HTTP_ENDPOINT": http,
            "GLIA_COLLECTOR_HEALTH_ENDPOINT": health,
            "GLIA_COLLECTOR_METRICS_HOST": "127.0.0.1",
            "GLIA_COLLECTOR_METRICS_PORT": str(free_port()),
            "GLIA_COLLECTOR_QUEUE_DIR": str(work / "queue"),
            "GLIA_COLLECTOR_RETRY_MAX_INTERVAL": "2s",
        }
        (work / "queue").mkdir()
        with (work / "collector.log").open("ab") as out:
            col = subprocess.Popen(
                [str(COLLECTOR_BIN), f"--config={CONFIG_DIR / 'config.yaml'}"], stdout=out, stderr=out, env=col_env
            )
        procs.append(col)
        wait_http(f"http://{health}/", col, "collector")

        roles: dict[str, Callable[[], list[int]]] = {
            "collector": lambda: [col.pid],
            "haproxy": lambda: [lb.pid],
            **{f"receiver-{i}": r.pids for i, r in enumerate(receivers, 1)},
            "postgres (all)": lambda: postgres_pids(work / "pg"),
        }
        sampler = Sampler(roles)
        sampler.start()
        print(
            f"{args.runs} runs, {args.batch} a request, {args.connections} connections, {args.receivers} receivers, "
            f"at most {args.rate:g} runs/s (0: unpaced), a kill every {args.kill_every:g} s; "
            f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )

        kills = 0
        stop = threading.Event()

        def killer() -> None:
            nonlocal kills
            while not stop.wait(args.kill_every):
                victim = receivers[kills % len(receivers)]
                victim.kill()
                kills += 1
                time.sleep(1.0)
                victim.start()

        kill_thread = threading.Thread(target=killer, daemon=True)
        t0 = time.monotonic()
        kill_thread.start()
        retries = asyncio.run(send_all(f"http://{http}", args.runs, args.batch, args.connections, args.rate))
        sent_at = time.monotonic() - t0
        print(f"sent in {sent_at:.1f} s ({retries} retried posts); load average {os.getloadavg()[0]:.2f}", flush=True)
        last, last_change = -1, time.monotonic()
        while True:
            stored = asyncio.run(rows(url))
            if stored != last:
                last, last_change = stored, time.monotonic()
            if stored >= args.runs or time.monotonic() - last_change > args.drain_timeout:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        stop.set()
        kill_thread.join()
        sampler.stop.set()
        sampler.join()
        time.sleep(5)  # a late duplicate would show here
        stored, keys = asyncio.run(count(url))
        print(f"\nstored: {stored} (expected {args.runs}); duplicates: {stored - keys}; kills: {kills}")
        print(f"end to end: {elapsed:.1f} s, {stored / elapsed:,.0f} runs/s (first send to last stored)")
        print(f"load average at the end {os.getloadavg()[0]:.2f}\n")
        print(f"{'peak RSS, MiB':<16}" + "".join(f"{f'Q{q}':>8}" for q in range(1, 5)))
        for role in roles:
            peaks = [0] * 4
            for t, name, rss in sampler.samples:
                if name == role:
                    q = min(3, int(4 * t / elapsed))
                    peaks[q] = max(peaks[q], rss)
            print(f"{role:<16}" + "".join(f"{p / 2**20:>8.0f}" for p in peaks))
        if stored != args.runs or stored != keys:
            print(f"\nFAILED: logs kept in {work}")
            sys.exit(1)
    finally:
        for r in receivers:
            if r.process and r.process.poll() is None:
                r.process.terminate()
                r.process.wait(timeout=20)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
        pg.stop()


if __name__ == "__main__":
    main()
