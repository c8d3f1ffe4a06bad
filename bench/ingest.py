"""Ingest throughput, two measurements against one dedicated embedded PostgreSQL (a temporary data directory):

    uv run python bench/ingest.py [--spans 200000] [--batch 512 --batch 8192] [--concurrency 4]
                                  [--workers 1 --workers 2] [--one-span 30000] [--connections 32]
                                  [--only batches|one-span|live]

- batches: OTLP/HTTP protobuf batches through the receiver versus asyncpg COPY straight into the same `spans`
  table. The baseline COPYs the rows the receiver would have made; the receiver runs as its own process
  (`glia serve --database-url`), and the benchmark POSTs pre-serialised batches (10 attributes a span) until the
  target number of spans is stored. It prints spans/s, the ratio to COPY, and the receiver's RSS over the run;
  `--workers` runs the receiver with that many processes (`glia serve --workers`), each count in turn.
- one-span requests (what every job exporting without a collector sends): requests/s of unique one-span protobuf
  requests through the receiver versus the trivial-handler ceiling, a raw ASGI app answering 200 with an empty body
  in one uvicorn process, both hit in turn by the same fast client (bench/loadgen.py: raw sockets, keep-alive, its
  own process) over the same number of connections. Every span is counted in PostgreSQL.
- live mix (`--only live`): records/s through the receiver when a third of them are final spans and the rest the
  start records and heartbeats of the same runs (docs/attributes.md, "Live runs": one start record and one heartbeat
  a run, in earlier requests than its final span), versus the same number of records that are all final spans, in
  the same batch size, side by side in one run, alternating. Each run must end as exactly one final row.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import loadgen  # noqa: E402

from receiver import decode, flatten  # noqa: E402
from receiver.embedded import EmbeddedPostgres  # noqa: E402
from receiver.migrate import upgrade  # noqa: E402


def _request() -> tuple[ExportTraceServiceRequest, Any]:
    """An empty request with one resource (service, host, owner) and one scope; returns it and its scope spans."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("service.name", "bench"), ("host.name", "bench-host"), ("process.owner", "ada")):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    return request, ss


def _add_span(ss: Any, run: int, seed: int, now: int, state: str | None) -> None:
    """One record of run `run`, 10 attributes: its final span (`state` None), or its start record or a heartbeat."""
    span = ss.spans.add()
    span.trace_id = (seed << 64 | run).to_bytes(16, "big")
    span.span_id = run.to_bytes(8, "big")
    span.name = f"task-{run % 50}"
    span.start_time_unix_nano = now - 10_000_000 + run
    span.end_time_unix_nano = 0 if state else span.start_time_unix_nano + 1_000_000
    for i in range(10):
        kv = span.attributes.add()
        if i % 2:
            kv.key, kv.value.int_value = f"attr.int{i}", run * i
        else:
            kv.key, kv.value.string_value = f"attr.str{i}", f"value-{run % 97}-{i}"
    if state:
        extra: list[tuple[str, str | int | float]] = [
            ("glia.run.state", state),
            ("glia.run.heartbeat_unix_nano", now + run),
        ]
        if state == "running":
            extra += [("glia.memory.rss_bytes", 50_000_000 + run), ("glia.cpu.user_seconds", 0.5)]
        for key, value in extra:
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, str):
                kv.value.string_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.int_value = value


def make_batches(total: int, batch: int, seed: int) -> list[bytes]:
    """Serialised ExportTraceServiceRequests with unique ids, `batch` spans each, 10 attributes a span."""
    bodies = []
    now = time.time_ns()
    made = 0
    while made < total:
        request, ss = _request()
        for _ in range(min(batch, total - made)):
            made += 1
            _add_span(ss, made, seed, now, None)
        bodies.append(gzip.compress(request.SerializeToString(), compresslevel=1))
    return bodies


def make_live_batches(total: int, batch: int, seed: int) -> tuple[list[bytes], int]:
    """`total` records in requests of `batch`: for each run its start record, then a heartbeat a window later, then
    its final span a window after that (windows of `batch` runs), so a run's records arrive in different requests
    and the receiver merges each into its row. Returns (bodies, runs)."""
    runs = total // 3
    now = time.time_ns()
    stream: list[tuple[int, str | None]] = []
    window = batch
    for w in range(0, runs + 2 * window, window):
        stream += [(r, "started") for r in range(w, min(w + window, runs))]
        stream += [(r, "running") for r in range(max(w - window, 0), min(w, runs))]
        stream += [(r, None) for r in range(max(w - 2 * window, 0), min(w - window, runs))]
    bodies = []
    for i in range(0, len(stream), batch):
        request, ss = _request()
        for run, state in stream[i : i + batch]:
            _add_span(ss, run + 1, seed, now, state)
        bodies.append(gzip.compress(request.SerializeToString(), compresslevel=1))
    return bodies, runs


def measure_live(url: str, args: argparse.Namespace) -> None:
    """Records/s with live records mixed in vs all final spans, same batch, alternating, `args.rounds` rounds."""
    batch = (args.batch or [512])[0]
    total = args.spans - args.spans % 3
    print(f"live mix: {total} records a measurement, {batch} a request, {args.concurrency} concurrent clients")
    header = f"{'round':<7}{'all final, records/s':>22}{'live mix, records/s':>22}{'runs/s':>10}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    ratios = []
    for round_ in range(1, args.rounds + 1):
        final_bodies = make_batches(total, batch, seed=5000 + round_)
        live_bodies, runs = make_live_batches(total, batch, seed=6000 + round_)
        rates = {}
        for label, bodies, rows in (("final", final_bodies, total), ("live", live_bodies, runs)):
            proc = start_receiver(url, args.port)
            try:
                seconds = asyncio.run(post_all(f"http://127.0.0.1:{args.port}/v1/traces", bodies, args.concurrency))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            stored, ended = asyncio.run(_count_ended(url))
            assert stored == rows == ended, f"{label}: {stored} rows, {ended} ended, expected {rows}"
            asyncio.run(_truncate(url))
            rates[label] = total / seconds
        ratio = rates["live"] / rates["final"]
        ratios.append(ratio)
        print(
            f"{round_:<7}{rates['final']:>22,.0f}{rates['live']:>22,.0f}{rates['live'] / 3:>10,.0f}{ratio:>8.2f}",
            flush=True,
        )
    print(f"live mix ratio (target >= 0.80): median {sorted(ratios)[len(ratios) // 2]:.2f}")
    print("(every run ended as one row with its end time, checked in PostgreSQL)\n")


async def copy_baseline(url: str, bodies: list[bytes], table: str = "spans") -> tuple[int, float]:
    """COPY the same rows straight into `table`; returns (rows, seconds) for the COPY alone."""
    rows: list[tuple[object, ...]] = []
    months: set[object] = set()
    for body in bodies:
        decoded = decode.decode_traces(gzip.decompress(body), decode.PROTOBUF)
        flat = flatten.span_rows(decoded.items, flatten.Limits(), time.time_ns())
        rows.extend(flat.rows)
        months |= flat.months
    conn = await asyncpg.connect(url)
    try:
        for month in months:
            await conn.execute("SELECT glia_ensure_partition('spans', $1)", month)
        await conn.execute("CHECKPOINT")  # each measurement starts with no dirty pages left by the one before
        started = time.perf_counter()
        for i in range(0, len(rows), 8192):
            await conn.copy_records_to_table(table, records=rows[i : i + 8192], columns=flatten.SPAN_COLUMNS)
        seconds = time.perf_counter() - started
        await conn.execute(f"TRUNCATE {table}")  # our own table name, not input
    finally:
        await conn.close()
    return len(rows), seconds


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                tree = [self.process, *self.process.children()]
                self.samples.append(sum(p.memory_info().rss for p in tree))
            except psutil.NoSuchProcess:
                pass
            self.stop.wait(0.2)


async def post_all(endpoint: str, bodies: list[bytes], concurrency: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                response = await client.post(endpoint, content=body, headers=headers)
                if response.status_code == 200:
                    break
                if response.status_code != 503:
                    raise RuntimeError(f"receiver answered {response.status_code}: {response.text[:200]}")
                await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError("receiver exited")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("receiver did not become ready")


async def trivial_app(scope: dict[str, object], receive: object, send: object) -> None:
    """The ceiling: a raw ASGI app that reads the body and answers 200 with an empty body."""
    assert callable(receive) and callable(send)
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def serve_trivial(port: int) -> None:
    """One uvicorn process, httptools and uvloop as `glia serve` picks them."""
    uvicorn.run(trivial_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_receiver(url: str, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GLIA_DATABASE_URL": url, "GLIA_LOG_LEVEL": "warning", "GLIA_WORKERS": str(workers)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glia_otel._cli", "serve", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}", proc)
    return proc


def one_span_bodies(count: int, seed: int) -> list[bytes]:
    """`count` unique one-span requests (gzip, as glia's client sends them)."""
    return make_batches(count, 1, seed)


def measure_one_span(url: str, args: argparse.Namespace, work: Path, round_: int) -> float:
    """The receiver's requests/s for one-span requests between two runs of the trivial handler, the same client for
    all three; returns the ratio to the better of the two ceilings (the machine's other load moves both)."""
    bodies_file = work / "one-span.bin"
    loadgen.write_bodies(bodies_file, one_span_bodies(args.one_span, seed=1000 + round_))
    count: int = args.one_span
    trivial_bodies = min(count, 2000)
    trivial_file = work / "trivial.bin"
    loadgen.write_bodies(trivial_file, one_span_bodies(trivial_bodies, seed=0) * 50)

    def ceiling() -> float:
        trivial = subprocess.Popen([sys.executable, __file__, "--serve-trivial", str(args.port)], cwd=REPO)
        try:
            wait_port(args.port, trivial)
            result = loadgen.run_process(args.port, "/v1/traces", trivial_file, args.connections, gzip=True)
        finally:
            trivial.terminate()
            trivial.wait(timeout=30)
        assert result["statuses"] == {"200": 50 * trivial_bodies}, result
        seconds: float = result["seconds"]
        return 50 * trivial_bodies / seconds

    before = ceiling()
    proc = start_receiver(url, args.port)
    try:
        sampler = RssSampler(proc.pid)
        sampler.start()
        received = loadgen.run_process(args.port, "/v1/traces", bodies_file, args.connections, gzip=True)
        sampler.stop.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    after = ceiling()
    stored = asyncio.run(_count(url))
    assert stored == args.one_span, f"stored {stored} spans, expected {args.one_span}"
    assert received["statuses"] == {"200": args.one_span}, received
    asyncio.run(_truncate(url))
    seconds: float = received["seconds"]
    rate = count / seconds
    best = max(before, after)
    mib = max(sampler.samples or [0]) / 2**20
    print(
        f"round {round_}: trivial ASGI app {before:>8,.0f} / {after:>8,.0f} req/s (before / after)"
        f"   receiver {rate:>6,.0f} req/s (p50 {received['p50_ms']:.1f} ms, p99 {received['p99_ms']:.1f} ms,"
        f" client CPU {float(received['cpu_seconds']) / float(received['seconds']):.0%},"
        f" peak RSS {mib:.0f} MiB)   ratio {rate / best:.3f} (to the mean ceiling {2 * rate / (before + after):.3f})",
        flush=True,
    )
    return rate / best


def measure_batches(
    url: str, args: argparse.Namespace, bodies: list[bytes], rows: int, workers: int
) -> tuple[float, list[float]]:
    """Spans/s of the receiver (`workers` processes) storing `bodies`, and its RSS samples in MiB (with workers:
    the parent's and its workers' summed); every span is counted in PostgreSQL, then the table is emptied."""
    asyncio.run(_checkpoint(url))  # as the baseline does
    proc = start_receiver(url, args.port, workers)
    try:
        endpoint = f"http://127.0.0.1:{args.port}"
        sampler = RssSampler(proc.pid)
        sampler.start()
        seconds = asyncio.run(post_all(endpoint + "/v1/traces", bodies, args.concurrency))
        sampler.stop.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stored = asyncio.run(_count(url))
    assert stored == rows, f"stored {stored} spans, expected {rows}"
    asyncio.run(_truncate(url))
    return rows / seconds, [s / 2**20 for s in sampler.samples] or [0.0]


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, action="append", help="spans per request (repeatable)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=43187)
    parser.add_argument("--one-span", type=int, default=30_000, help="one-span requests per measurement")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections, one-span case")
    parser.add_argument("--rounds", type=int, default=2, help="one-span measurements, each beside its ceiling")
    parser.add_argument("--only", choices=("batches", "one-span", "live"))
    parser.add_argument(
        "--workers", type=int, action="append", help="receiver processes for the batches (repeatable; default 1)"
    )
    parser.add_argument("--serve-trivial", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_trivial:
        serve_trivial(args.serve_trivial)
        return
    batches = args.batch or [512, 8192]

    data_dir = Path(tempfile.mkdtemp(prefix="glia-bench-ingest-"))
    data_dir.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    pg = EmbeddedPostgres(data_dir)
    work = Path(tempfile.mkdtemp(prefix="glia-bench-bodies-"))
    try:
        url = pg.start()
        upgrade(url)
        print(f"PostgreSQL: embedded, {data_dir}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}\n")
        if args.only == "live":
            measure_live(url, args)
            return
        if args.only != "batches":
            print(f"one-span requests: {args.one_span} a measurement, {args.connections} keep-alive connections")
            ratios = [measure_one_span(url, args, work, round_) for round_ in range(1, args.rounds + 1)]
            print(f"one-span ratio to the trivial handler: median {sorted(ratios)[len(ratios) // 2]:.3f}\n")
        if args.only == "one-span":
            return
        print(f"batches: {args.spans} spans a measurement")
        header = f"{'path':<44}{'spans/s':>10}{'vs COPY':>9}{'RSS start':>11}{'max 1st half':>14}{'max 2nd half':>14}"
        print(header)
        print("-" * len(header))
        # context: the same COPY into a plain table with no index and no partitions
        asyncio.run(_plain_table(url))
        rows, plain_seconds = asyncio.run(copy_baseline(url, make_batches(args.spans, 8192, seed=1), "spans_plain"))
        print(f"{'asyncpg COPY, unindexed table':<44}{rows / plain_seconds:>10,.0f}   (context, not the baseline)")
        for batch in batches:
            bodies = make_batches(args.spans, batch, seed=batch)
            rows, copy_seconds = asyncio.run(copy_baseline(url, bodies))
            copy_rate = rows / copy_seconds
            print(f"{f'asyncpg COPY (the same {rows} rows)':<44}{copy_rate:>10,.0f}{'1.00':>9}")
            for workers in args.workers or [1]:
                rate, mib = measure_batches(url, args, bodies, rows, workers)
                half = max(1, len(mib) // 2)  # flat RSS: the second half of the run peaks no higher than the first
                label = f"receiver, {batch} spans/request" + (f", {workers} workers" if workers > 1 else "")
                print(
                    f"{label:<44}{rate:>10,.0f}{rate / copy_rate:>9.2f}"
                    f"{mib[0]:>9.0f}Mi{max(mib[:half]):>12.0f}Mi{max(mib[half:] or mib):>12.0f}Mi"
                )
        print(f"\n(receiver: {args.concurrency} concurrent clients, gzip bodies, every span counted in PostgreSQL)")
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _plain_table(url: str) -> None:
    await _execute(url, "CREATE TABLE IF NOT EXISTS spans_plain (LIKE spans INCLUDING DEFAULTS)")


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM spans"))
    finally:
        await conn.close()


async def _count_ended(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(end_time) AS ended FROM spans")
        assert row is not None
        return int(row["n"]), int(row["ended"])
    finally:
        await conn.close()


async def _checkpoint(url: str) -> None:
    await _execute(url, "CHECKPOINT")


async def _truncate(url: str) -> None:
    await _execute(url, "TRUNCATE spans")


if __name__ == "__main__":
    main()
