"""Pipeline throughput and latency: the OpenTelemetry SDK -> built collector -> receiver -> PostgreSQL, versus
the SDK straight to the receiver, in one run.

    bash collector-config/build.sh     # once: builds .build/collector/otelcol-glia (or set GLIA_OTELCOL_BIN)
    uv run python bench/pipeline.py [--spans 40000] [--clients 2] [--rounds 2] [--latency-spans 100]

Everything is a real process on this machine: a dedicated embedded PostgreSQL (temporary data directory, with
`track_commit_timestamp = on`), `glia serve` as its own process, the collector running collector-config/config.yaml
with its defaults (only ports and the queue directory changed), and client processes using the stock Python SDK
(TracerProvider, OTLPSpanExporter with gzip). Each span carries the attributes of a glia run.

- Throughput: `--clients` processes each end `--spans / --clients` spans as fast as they can through a
  BatchSpanProcessor (queue big enough to drop nothing); spans/s = spans / (first span started .. last row
  committed), committed times from `pg_xact_commit_timestamp`. Paths alternate for `--rounds` rounds; the table
  shows every round and the median.
- Latency: one client ends a span every 1/`--latency-rate` s with a SimpleSpanProcessor (exported at span end);
  latency = the row's commit time - the span's end time. The collector's added latency is the difference of the
  medians; with the default `GLIA_COLLECTOR_BATCH_TIMEOUT` (1s) a span waits for its batch to fill or time out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESOURCE = {
    "service.name": "bench-pipeline",
    "host.name": "bench-host",
    "host.arch": "amd64",
    "os.type": "linux",
    "process.owner": "ada",
    "process.executable.name": "python3",
    "process.command_args": ["python3", "align.py", "--threads", "4"],
    "glia.script.path": "/home/ada/align.py",
    "glia.script.sha256": "ab" * 32,
}


# --- client processes -----------------------------------------------------------------------------------------


def client_main(endpoint: str, spans: int, mode: str, rate: float) -> None:
    """Run in a child process: end `spans` glia-like spans, export them to `endpoint`, print a JSON summary."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    results: dict[str, int] = {"exported": 0, "failed": 0}

    class Counting(OTLPSpanExporter):
        def export(self, batch: Any) -> SpanExportResult:
            result = super().export(batch)
            results["exported" if result is SpanExportResult.SUCCESS else "failed"] += len(batch)
            return result

    exporter: SpanExporter = Counting(endpoint=f"{endpoint}/v1/traces", compression=Compression.Gzip, timeout=60)
    provider = TracerProvider(resource=Resource.create({**RESOURCE, "process.pid": os.getpid()}))
    if mode == "throughput":
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=spans + 1, max_export_batch_size=512, schedule_delay_millis=50)
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    started = time.time()
    interval = 1.0 / rate if mode == "latency" else 0.0
    for i in range(spans):
        with tracer.start_as_current_span(f"task-{i % 50}") as span:
            span.set_attributes(
                {
                    "glia.run.kind": "command",
                    "process.exit.code": 0,
                    "glia.cpu.user_seconds": 1.25,
                    "glia.cpu.system_seconds": 0.5,
                    "glia.cpu.percent": 97.5,
                    "glia.memory.peak_rss_bytes": 123_456_789 + i,
                    "glia.memory.peak_rss_method": "cgroup",
                    "glia.io.read_bytes": 4096 * i,
                    "glia.io.write_bytes": 8192,
                    "sample": f"S{i % 97}",
                }
            )
        if interval:
            time.sleep(interval)
    created = time.time()
    provider.force_flush(timeout_millis=600_000)
    flushed = time.time()
    provider.shutdown()
    print(json.dumps({"started": started, "created": created, "flushed": flushed, **results}))


def run_clients(endpoint: str, clients: int, spans: int, mode: str, rate: float = 0.0) -> list[dict[str, Any]]:
    per = spans // clients
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--client", endpoint, str(per), mode, str(rate)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    summaries = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"client exited with {proc.returncode}")
        summary = json.loads(out.strip().splitlines()[-1])
        if summary["failed"] or summary["exported"] != per:
            raise RuntimeError(f"client exported {summary['exported']} of {per}, {summary['failed']} failed")
        summaries.append(summary)
    return summaries


# --- the servers ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready at {url} after 60 s")


def collector_binary() -> Path:
    if os.environ.get("GLIA_OTELCOL_BIN"):
        return Path(os.environ["GLIA_OTELCOL_BIN"])
    out = subprocess.run(
        ["bash", str(REPO / "collector-config" / "build.sh")], capture_output=True, text=True, check=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def start_collector(
    binary: Path, receiver_url: str, work: Path, settings: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    http = f"127.0.0.1:{free_port()}"
    health = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "GLIA_RECEIVER_ENDPOINT": receiver_url,
        "GLIA_COLLECTOR_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "GLIA_COLLECTOR_HTTP_ENDPOINT": http,
        "GLIA_COLLECTOR_HEALTH_ENDPOINT": health,
        "GLIA_COLLECTOR_METRICS_HOST": "127.0.0.1",
        "GLIA_COLLECTOR_METRICS_PORT": str(free_port()),
        "GLIA_COLLECTOR_QUEUE_DIR": str(work / "collector-queue"),
        "GLIA_COLLECTOR_LOG_LEVEL": "warn",
        **settings,
    }
    with (work / "collector.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(binary), f"--config={REPO / 'collector-config' / 'config.yaml'}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_http(f"http://{health}/", proc, "collector")
    return proc, f"http://{http}"


# --- measuring in PostgreSQL ----------------------------------------------------------------------------------


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query)
        return rows
    finally:
        await conn.close()


def sql(url: str, query: str) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(url, query))


def wait_rows(url: str, expected: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        n = sql(url, "SELECT count(*) FROM spans")[0][0]
        if n >= expected:
            if n != expected:
                raise RuntimeError(f"PostgreSQL has {n} spans, expected {expected}")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"after {timeout:g} s PostgreSQL has {n} of {expected} spans")
        time.sleep(0.05)


def throughput(url: str, endpoint: str, clients: int, spans: int) -> tuple[float, float, float]:
    """Spans/s: first span started .. last row committed; while the 10th to the 90th percentile of rows were
    committed (the steady state, without start-up and the last batch's wait); as the clients saw it (started ..
    flushed)."""
    sql(url, "TRUNCATE spans")
    summaries = run_clients(endpoint, clients, spans, "throughput")
    total = sum(s["exported"] for s in summaries)
    wait_rows(url, total)
    (row,) = sql(
        url,
        "SELECT extract(epoch FROM max(c)), extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY c)),"
        " extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY c))"
        " FROM (SELECT pg_xact_commit_timestamp(xmin) AS c FROM spans) AS commits",
    )
    last_commit, p10, p90 = (float(v) for v in row)
    started = min(s["started"] for s in summaries)
    flushed = max(s["flushed"] for s in summaries)
    return total / (last_commit - started), 0.8 * total / (p90 - p10), total / (flushed - started)


def latency(url: str, endpoint: str, spans: int, rate: float) -> list[float]:
    """Seconds from each span's end to its row's commit."""
    sql(url, "TRUNCATE spans")
    run_clients(endpoint, 1, spans, "latency", rate)
    wait_rows(url, spans)
    rows = sql(
        url,
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin))"
        " - (start_time_unix_nano + duration_ns) / 1e9 FROM spans",
    )
    return sorted(float(r[0]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=40_000, help="spans per throughput measurement")
    parser.add_argument("--clients", type=int, default=2, help="client processes in a throughput measurement")
    parser.add_argument("--rounds", type=int, default=2, help="throughput measurements per path, alternating")
    parser.add_argument("--latency-spans", type=int, default=100)
    parser.add_argument("--latency-rate", type=float, default=20.0, help="spans per second in the latency run")
    parser.add_argument(
        "--collector-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a collector setting other than its default, e.g. GLIA_COLLECTOR_BATCH_TIMEOUT=100ms (repeatable)",
    )
    args = parser.parse_args()

    from receiver.embedded import EmbeddedPostgres
    from receiver.migrate import upgrade

    binary = collector_binary()
    work = Path(tempfile.mkdtemp(prefix="glia-bench-pipeline-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    pg = EmbeddedPostgres(work / "pg", preferred_port=free_port())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = pg.start()
        sql(url, "ALTER SYSTEM SET track_commit_timestamp = on")
        pg.stop()
        url = pg.start()
        upgrade(url)

        port = free_port()
        receiver = subprocess.Popen(
            [sys.executable, "-m", "glia_otel._cli", "serve", "--port", str(port), "--database-url", url],
            env={**os.environ, "GLIA_LOG_LEVEL": "warning"},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        procs.append(receiver)
        direct = f"http://127.0.0.1:{port}"
        wait_http(direct + "/readyz", receiver, "receiver")
        settings = dict(item.split("=", 1) for item in args.collector_env)
        collector, through = start_collector(binary, direct, work, settings)
        procs.append(collector)
        paths = {"direct": direct, "collector": through}

        print(
            f"{os.cpu_count()} cores; {args.spans} spans per measurement from {args.clients} SDK client processes;"
            f" collector {binary.name} with config.yaml defaults{''.join(f', {k}={v}' for k, v in settings.items())}\n"
        )
        if args.rounds:
            measure_throughput(url, paths, args)
        measure_latency(url, paths, args)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure_throughput(url: str, paths: dict[str, str], args: argparse.Namespace) -> None:
    """Print the throughput table: every round, the medians and their ratio."""
    header = f"{'round':<7}{'path':<30}{'spans/s to PG':>15}{'steady 10-90%':>15}{'SDK done':>10}"
    print(header)
    print("-" * len(header))
    rates: dict[str, list[float]] = {name: [] for name in paths}
    steady: dict[str, list[float]] = {name: [] for name in paths}
    for round_no in range(1, args.rounds + 1):
        for name, endpoint in paths.items():
            committed, steady_rate, client_side = throughput(url, endpoint, args.clients, args.spans)
            rates[name].append(committed)
            steady[name].append(steady_rate)
            label = "SDK -> receiver" if name == "direct" else "SDK -> collector -> receiver"
            print(f"{round_no:<7}{label:<30}{committed:>15,.0f}{steady_rate:>15,.0f}{client_side:>10,.0f}")
    d, c = statistics.median(rates["direct"]), statistics.median(rates["collector"])
    sd, sc = statistics.median(steady["direct"]), statistics.median(steady["collector"])
    print(f"{'median':<7}{'SDK -> receiver (baseline)':<30}{d:>15,.0f}{sd:>15,.0f}")
    print(f"{'median':<7}{'SDK -> collector -> receiver':<30}{c:>15,.0f}{sc:>15,.0f}")
    print(f"ratio collector / direct: {c / d:.2f} to PG, {sc / sd:.2f} steady (target >= 0.80)\n")


def measure_latency(url: str, paths: dict[str, str], args: argparse.Namespace) -> None:
    """Print the latency table and the collector's added median latency."""
    header = f"{'latency, span end -> row committed':<36}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}"
    print(f"{args.latency_spans} spans at {args.latency_rate:g}/s, SimpleSpanProcessor, one client")
    print(header)
    print("-" * len(header))
    medians = {}
    for name, endpoint in paths.items():
        seconds = latency(url, endpoint, args.latency_spans, args.latency_rate)
        medians[name] = statistics.median(seconds)
        p90 = seconds[int(0.9 * (len(seconds) - 1))]
        label = "SDK -> receiver" if name == "direct" else "SDK -> collector -> receiver"
        print(f"{label:<36}{medians[name] * 1e3:>9.1f}{p90 * 1e3:>9.1f}{seconds[-1] * 1e3:>9.1f}")
    print(f"the collector's added median latency: {(medians['collector'] - medians['direct']) * 1e3:.0f} ms")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--client":
        client_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    else:
        main()
