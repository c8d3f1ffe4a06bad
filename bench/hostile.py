"""What hostile requests cost the receiver: peak memory for 32 MB bodies, and what one bad row costs a batch.

    uv run python bench/hostile.py [--baseline REV] [--only memory|bad-row] [--spans 20000] [--baseline-spans 2000]

Every receiver runs as its own process (`glia serve --database-url`) on a private embedded PostgreSQL in a temporary
directory, a fresh process for each measurement. With `--baseline REV` the same measurements run against that
revision's code too (exported with `git archive` into a temporary directory, its own database migrated by its own
migrations), and both are printed side by side.

- memory: 32 MB bodies of empty spans (ids and times only: the most spans a byte can carry), protobuf and OTLP/JSON,
  and a JSON body of `{}` spans (each rejected), two one after the other and four at once. Peak RSS is the kernel's
  high-water mark (`VmHWM` in /proc/PID/status, reset through clear_refs once the receiver is ready), so a short
  spike is not missed. Printed: the receiver's RSS when idle, its peak, (peak - idle) / body, and that per body
  decoding at once (all four without a decode budget; with the default budget of 64 MiB two 32 MB bodies decode
  together, the others wait or are answered 503, and retried after Retry-After: the 503s are counted).
- bad row: a batch of N spans (5 attributes each) all good, then the same with one span that cannot be stored, median
  of --repeat POSTs each: (a) its resource's host.name is 3,000 random hex digits (over PostgreSQL's 2,704-byte index
  row limit), (b) a row PostgreSQL refuses that no check before the database can foresee (a CHECK constraint the bench
  adds to `spans`, refusing span names starting with "poison"), at the start, middle and end of the batch. The ratio
  is bad / good.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from receiver.embedded import EmbeddedPostgres  # noqa: E402

BODY_BYTES = 32_000_000
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


# --- the code under test: this checkout, or a revision exported beside it --------------------------------------


@dataclass
class Code:
    label: str
    tree: Path


def export_revision(rev: str, into: Path) -> Path:
    """`rev`'s files (git archive, no checkout touched) in a new directory under `into`."""
    tree = into / f"rev-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class Receiver:
    """`glia serve` from `code` as its own process, on database `url`."""

    def __init__(self, code: Code, url: str, port: int, log: Path, **env: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        environment = {
            **os.environ,
            "GLIA_DATABASE_URL": url,
            "GLIA_LOG_LEVEL": "warning",
            "PYTHONPATH": str(code.tree),
            **env,
        }
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glia_otel._cli", "serve", "--port", str(port)],
            env=environment,
            cwd=code.tree,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited; see {log}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"receiver did not become ready; see {log}")
            time.sleep(0.1)

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.proc.pid}/status")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


# --- bodies --------------------------------------------------------------------------------------------------


def empty_spans(kind: str, seed: int, size: int = BODY_BYTES) -> bytes:
    """A body of `kind` just under `size` bytes, of spans with ids and times only (or nothing at all: "json-{}")."""
    start = time.time_ns() - 10**9
    if kind == "json-{}":
        head, tail = b'{"resourceSpans":[{"scopeSpans":[{"spans":[', b"{}]}]}]}"
        return head + b"{}," * ((size - len(head) - len(tail)) // 3) + tail
    if kind == "protobuf":
        one, none = _pb_spans(1, seed, start), _pb_spans(0, seed, start)
        per_span = len(one.SerializeToString()) - len(none.SerializeToString())
        count = (size - 200) // per_span
        body = _pb_spans(count, seed, start).SerializeToString()
    else:
        per_span = len(_json_spans(2, seed, start)) - len(_json_spans(1, seed, start))
        count = (size - 200) // per_span
        body = _json_spans(count, seed, start)
    assert len(body) <= size, len(body)
    return body


def _pb_spans(count: int, seed: int, start: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(count):
        span = spans.add(start_time_unix_nano=start + i, end_time_unix_nano=start + i + 1000)
        span.trace_id = (seed << 64 | i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
    return request


def _json_spans(count: int, seed: int, start: int) -> bytes:
    spans = [
        {
            "traceId": f"{seed << 64 | i + 1:032x}",
            "spanId": f"{i + 1:016x}",
            "startTimeUnixNano": str(start + i),
            "endTimeUnixNano": str(start + i + 1000),
        }
        for i in range(count)
    ]
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})


def batch(count: int, seed: int, bad: str | None = None, at: float = 0.5) -> bytes:
    """`count` spans with 5 attributes each; `bad` makes one of them unstorable: "host" or "refused"."""
    request = ExportTraceServiceRequest()
    start = time.time_ns() - 10**9
    good_count = count - 1 if bad == "host" else count
    poison = int((count - 1) * at) if bad == "refused" else -1
    for resource_index, n in enumerate((good_count, count - good_count)):
        if not n:
            continue
        rs = request.resource_spans.add()
        host = os.urandom(1500).hex() if resource_index else "bench-host"
        for key, value in (("service.name", "bench"), ("host.name", host), ("process.owner", "ada")):
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        spans = rs.scope_spans.add().spans
        for i in range(n):
            number = resource_index * good_count + i + 1
            span = spans.add(
                name="poison" if number - 1 == poison else f"task-{number % 50}",
                start_time_unix_nano=start + number,
                end_time_unix_nano=start + number + 10**6,
            )
            span.trace_id = (seed << 64 | number).to_bytes(16, "big")
            span.span_id = number.to_bytes(8, "big")
            for a in range(5):
                kv = span.attributes.add()
                kv.key, kv.value.string_value = f"attr{a}", f"value-{number % 97}-{a}"
    return request.SerializeToString()


# --- measurements --------------------------------------------------------------------------------------------


@dataclass
class Peak:
    idle_mib: float
    peak_mib: float
    at_once: int
    busy: int  # 503s retried
    seconds: float


async def _post_all(url: str, bodies: list[bytes], headers: dict[str, str]) -> tuple[int, float]:
    busy = 0

    async def one(client: httpx.AsyncClient, body: bytes) -> None:
        nonlocal busy
        while True:
            response = await client.post(url + "/v1/traces", content=body, headers=headers)
            if response.status_code == 200:
                return
            if response.status_code != 503:
                raise RuntimeError(f"{response.status_code}: {response.content[:200]!r}")
            busy += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client, body) for body in bodies))
    return busy, time.perf_counter() - started


def decoding_at_once(code: Code, bodies: int, body_bytes: int) -> int:
    """How many of `bodies` sent at once decode together: all, unless `code` has the decode budget (its default)."""
    if "max_decoding_bytes" not in (code.tree / "receiver" / "settings.py").read_text():
        return bodies
    return min(bodies, max(1, 64 * 2**20 // body_bytes))


def measure_memory(code: Code, url: str, port: int, log: Path, kind: str, bodies: list[bytes], at_once: bool) -> Peak:
    receiver = Receiver(code, url, port, log)
    try:
        time.sleep(0.5)
        receiver.reset_peak()
        idle = receiver.status_kib("VmRSS") / 1024
        headers = PB if kind == "protobuf" else JS
        busy, seconds = 0, 0.0
        if at_once:
            busy, seconds = asyncio.run(_post_all(receiver.url, bodies, headers))
        else:
            for body in bodies:
                b, s = asyncio.run(_post_all(receiver.url, [body], headers))
                busy, seconds = busy + b, seconds + s
        peak = receiver.status_kib("VmHWM") / 1024
    finally:
        receiver.stop()
    return Peak(idle, peak, len(bodies) if at_once else 1, busy, seconds)


def measure_bad_row(code: Code, url: str, port: int, log: Path, count: int, repeat: int) -> dict[str, float]:
    """Median seconds per POST of each batch variant, the variants taken in turn so that the machine's load
    falls on all of them alike; each answer is checked (the bad span rejected, the others stored)."""
    receiver = Receiver(code, url, port, log)
    variants = {
        "all good": (None, 0.5),
        "one host.name over the index limit": ("host", 0.5),
        "one row refused by PostgreSQL, first": ("refused", 0.0),
        "one row refused by PostgreSQL, middle": ("refused", 0.5),
        "one row refused by PostgreSQL, last": ("refused", 1.0),
    }
    times: dict[str, list[float]] = {label: [] for label in variants}
    try:
        with httpx.Client(timeout=3600) as client:
            client.post(receiver.url + "/v1/traces", content=batch(100, seed=99), headers=PB)  # warm up
            asyncio.run(_sql(url, "TRUNCATE spans"))
            seed = 1000
            for _ in range(repeat):
                for label, (bad, at) in variants.items():
                    seed += 1
                    body = batch(count, seed, bad, at)
                    started = time.perf_counter()
                    response = client.post(receiver.url + "/v1/traces", content=body, headers=PB)
                    times[label].append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise RuntimeError(f"{label}: {response.status_code} {response.content[:200]!r}")
                    rejected = ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans
                    stored = asyncio.run(_count(url))
                    if (rejected, stored) != (int(bad is not None), count - int(bad is not None)):
                        raise RuntimeError(f"{label}: {rejected} rejected, {stored} stored of {count}")
                    asyncio.run(_sql(url, "TRUNCATE spans"))
    finally:
        receiver.stop()
    return {label: statistics.median(figures) for label, figures in times.items()}


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM spans"))
    finally:
        await conn.close()


async def _sql(url: str, query: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(query)
    finally:
        await conn.close()


def _database(pg: EmbeddedPostgres, code: Code, name: str, log: Path) -> str:
    asyncio.run(_sql(pg.url(), f'CREATE DATABASE "{name}"'))  # our own name, not input
    url = pg.url(database=name)
    env = {**os.environ, "PYTHONPATH": str(code.tree)}
    with log.open("ab") as out:
        subprocess.run(
            [sys.executable, "-m", "glia_otel._cli", "migrate", "--database-url", url],
            cwd=code.tree, env=env, check=True, stdout=out, stderr=out,
        )  # fmt: skip
    return url


def _ratio_rows(results: dict[str, dict[str, float]]) -> Iterator[str]:
    for label in next(iter(results.values())):
        cells = []
        for figures in results.values():
            good = figures["all good"]
            cells.append(f"{figures[label]:>9.3f} s {figures[label] / good:>6.2f}x")
        yield f"{label:<40}" + "".join(f"{c:>22}" for c in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a git revision to measure side by side (e.g. the one before a change)")
    parser.add_argument("--only", choices=["memory", "bad-row"])
    parser.add_argument("--spans", type=int, action="append", help="bad-row batch sizes (default 2000 and 20000)")
    parser.add_argument("--baseline-spans", type=int, action="append",
                        help="bad-row batch sizes for the baseline (default 2000: one by one, 20,000 take minutes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-repeat", type=int, default=1)
    parser.add_argument("--kinds", action="append", choices=["protobuf", "json", "json-{}"])
    parser.add_argument("--skip-baseline-json-at-once", action="store_true",
                        help="the baseline's four JSON bodies at once need about 10 GB")
    parser.add_argument("--port", type=int, default=43199)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="glia-bench-hostile-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    log = Path(tempfile.mkstemp(prefix="glia-bench-hostile-", suffix=".log")[1])  # kept: read it when a run fails
    codes = [Code("this checkout", REPO)]
    if args.baseline:
        codes.insert(0, Code(f"baseline {args.baseline}", export_revision(args.baseline, work)))
    pg = EmbeddedPostgres(work / "pg")
    try:
        pg.start()
        print(f"PostgreSQL: embedded, {work}; {os.cpu_count()} cores; receiver log {log}\n")
        urls = {code.label: _database(pg, code, f"bench_{i}", log) for i, code in enumerate(codes)}

        if args.only in (None, "memory"):
            print(f"peak RSS of the receiver process, {BODY_BYTES / 1e6:.0f} MB bodies of empty spans")
            header = f"{'body':<10}{'how':<14}{'code':<24}{'idle':>7}{'peak':>8}{'(peak-idle)/body':>18}"
            header += f"{'per body decoding':>22}{'seconds':>9}{'503s':>6}"
            print(header)
            print("-" * len(header))
            for kind in args.kinds or ["protobuf", "json", "json-{}"]:
                for how, count in (("2 in turn", 2), ("4 at once", 4)):
                    for code in codes:
                        if code is codes[0] and args.baseline and kind != "protobuf" and count == 4 \
                                and args.skip_baseline_json_at_once:
                            print(f"{kind:<10}{how:<14}{code.label:<24}  (skipped)")
                            continue
                        bodies = [empty_spans(kind, seed=s + 1) for s in range(count)]
                        peak = measure_memory(code, urls[code.label], args.port, log, kind, bodies, count == 4)
                        total = (peak.peak_mib - peak.idle_mib) * 2**20 / len(bodies[0])
                        together = decoding_at_once(code, peak.at_once, len(bodies[0]))
                        print(
                            f"{kind:<10}{how:<14}{code.label:<24}{peak.idle_mib:>5.0f}Mi{peak.peak_mib:>6.0f}Mi"
                            f"{total:>17.1f}x{total / together:>13.1f}x ({together})"
                            f"{peak.seconds:>9.1f}{peak.busy:>6}"
                        )
                        asyncio.run(_sql(urls[code.label], "TRUNCATE spans"))
            print()

        if args.only in (None, "bad-row"):
            for url in urls.values():
                asyncio.run(_sql(url, "ALTER TABLE spans ADD CONSTRAINT bench_poison CHECK (name NOT LIKE 'poison%')"))
            sizes = {codes[-1].label: args.spans or [2000, 20000]}
            if args.baseline:
                sizes[codes[0].label] = args.baseline_spans or [2000]
            for count in sorted({n for ns in sizes.values() for n in ns}):
                results = {}
                for code in codes:
                    if count in sizes[code.label]:
                        repeat = args.baseline_repeat if code is codes[0] and args.baseline else args.repeat
                        results[code.label] = measure_bad_row(code, urls[code.label], args.port, log, count, repeat)
                print(f"{count:,} spans a batch: median seconds per POST (of {args.repeat}; baseline of "
                      f"{args.baseline_repeat}), and the ratio to all good")
                print(f"{'batch':<40}" + "".join(f"{label:>22}" for label in results))
                for line in _ratio_rows(results):
                    print(line)
                print()
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
