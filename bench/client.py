"""Benchmarks of the Python client: each baseline and glia side by side in one run, with deltas and ratios.

1. Per-run cost of a tracked script: a script with one `with glia_otel.track(...)` block vs the same script that only
   imports `glia_otel`, with the endpoint up and down, on an application that has its own TracerProvider, and with
   the OpenTelemetry API imported by the script (its own line: the script's cost, not glia's); the stock SDK doing
   the same one span for scale. Target: the tracked block adds at most 40 ms.
2. `glia run -- true` vs GNU time (`/usr/bin/time true`), endpoint up and down, with the cgroup glia makes by
   default. Target: at most 25 ms added.
3. Exit delay and loss with the endpoint down or hung: glia vs the stock SDK (BatchSpanProcessor + OTLPSpanExporter).
4. Per-run overhead of `with glia_otel.track():` inside a process, export excluded (median of 10,000).
5. The cost of process sampling: CPU time (user + system, from wait4) of a 60 s `sleep` under `glia run` and of a
   script sleeping 60 s in one tracked block, sampling on (the default ramp) vs off (`OTEL_METRICS_EXPORTER=none`),
   whole processes, imports included. Target: at most 1% of one core over the run.
6. The cost of live status (start record after 1 s, then heartbeats): a `glia run -- sleep S` and a script sleeping S
   in one tracked block, live status on (the default) vs off (`GLIA_LIVE=false`), S = 1 s (the start record is due
   just as the run ends) and 1.5 s (it is always sent), whole processes. Target: at most 5 ms added per run.

    uv run python bench/client.py [--quick] [--endpoint URL] [--parts 123456]

Whole processes are timed from the outside (start to reap), A and B in turn (A B A B ...) so drift in the machine's
speed hits both; the figure is the median, the delta is median(A) - median(B). Endpoints: "up" is a local HTTP
server answering 200 at once (the client's own cost, not a database's); "down" is a closed port (connection
refused); `--endpoint` adds a real receiver.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

GLIA = str(Path(sys.executable).with_name("glia"))
GNU_TIME = "/usr/bin/time"

IMPORT_ONLY = """
import glia_otel
sum(range(1000))
"""
ONE_BLOCK = """
import glia_otel
with glia_otel.track("job"):
    sum(range(1000))
"""
API_IMPORT_ONLY = """
from opentelemetry import trace
import glia_otel
sum(range(1000))
"""
API_ONE_BLOCK = """
from opentelemetry import trace
import glia_otel
with glia_otel.track("job"):
    with trace.get_tracer("app").start_as_current_span("step"):
        sum(range(1000))
"""
# The application's own provider, exporting in memory: what the delta shows is glia's work, not the application's
# exporter (which, with the endpoint down, would hold the exit for seconds whether glia is there or not).
APP_SETUP = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
trace.set_tracer_provider(provider)
import glia_otel
"""
APP_IMPORT_ONLY = APP_SETUP + "sum(range(1000))\n"
APP_ONE_BLOCK = APP_SETUP + 'with glia_otel.track("job"):\n    sum(range(1000))\n'
STOCK_ONE_SPAN = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
with trace.get_tracer("bench").start_as_current_span("job"):
    sum(range(1000))
"""
PLAIN = """
sum(range(1000))
"""


# An endpoint that answers 200 at once, in a process of its own (the benchmark's own threads and GIL stay out of the
# figures): it reads a request's headers and body and answers, one connection at a time.
STUB = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()
"""
_stubs: list[subprocess.Popen[str]] = []


def stub_endpoint() -> str:
    proc = subprocess.Popen([sys.executable, "-c", STUB], stdout=subprocess.PIPE, text=True)
    _stubs.append(proc)
    assert proc.stdout is not None
    return f"http://127.0.0.1:{int(proc.stdout.readline())}"


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def env_for(endpoint: str, spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GLIA_")) and k != "TRACEPARENT"}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, GLIA_SPOOL_DIR=str(spool), OTEL_SERVICE_NAME="bench", **extra)
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def paired(
    a: list[str], b: list[str], env_a: dict[str, str], env_b: dict[str, str], reps: int
) -> tuple[float, float, float]:
    """(median of A, median of B, median of the pairs' A - B) in seconds, run in turn after one warm-up each."""
    timed(a, env_a)
    timed(b, env_b)
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(a, env_a))
        tb.append(timed(b, env_b))
    return statistics.median(ta), statistics.median(tb), statistics.median(x - y for x, y in zip(ta, tb, strict=True))


def verdict(added_ms: float, target_ms: float) -> str:
    return f"target <= {target_ms:.0f} ms: {'met' if added_ms <= target_ms else 'NOT met'}"


def row(label: str, result: tuple[float, float, float], base: str, target: float | None = None) -> str:
    """One line: A's and B's medians, the median of the pairs' differences (what glia adds), the ratio."""
    a, b, diff = result
    added = diff * 1000
    line = f"  {label:<46} {a * 1000:7.1f} ms   {base:<19} {b * 1000:6.1f} ms   {added:+7.1f} ms   x{a / b:5.2f}"
    return line + (f"   {verdict(added, target)}" if target is not None else "")


def part1(reps: int, real_endpoint: str | None) -> None:
    print(f"## 1. Per-run cost of a tracked script: whole process, median of {reps} (A B A B ...)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        scripts = {
            "import.py": IMPORT_ONLY,
            "block.py": ONE_BLOCK,
            "api-import.py": API_IMPORT_ONLY,
            "api-block.py": API_ONE_BLOCK,
            "app-import.py": APP_IMPORT_ONLY,
            "app-block.py": APP_ONE_BLOCK,
            "stock.py": STOCK_ONE_SPAN,
            "plain.py": PLAIN,
        }
        for name, text in scripts.items():
            (d / name).write_text(textwrap.dedent(text))
        py = sys.executable
        endpoints = [("up", stub_endpoint()), ("down", closed_port())]
        if real_endpoint:
            endpoints.append(("receiver", real_endpoint))
        print(f"  {'':<46} {'with glia':>10}   {'baseline':<29}   {'added':>10}   ratio")
        print(f"  {'':<46} {'(median)':>10}   {'(median)':<29}   {'(median A-B)':>10}")
        for label, url in endpoints:
            env = env_for(url, d / f"spool-{label}")
            r = paired([py, str(d / "block.py")], [py, str(d / "import.py")], env, env, reps)
            print(row(f"one block, endpoint {label}", r, "import only", 40))
        env = env_for(endpoints[0][1], d / "spool-app")
        r = paired([py, str(d / "app-block.py")], [py, str(d / "app-import.py")], env, env, reps)
        print(row("one block, the application's TracerProvider", r, "same, import only", 40))
        for label, url in endpoints[:2]:
            env = env_for(url, d / f"spool-api-{label}")
            r = paired([py, str(d / "api-block.py")], [py, str(d / "api-import.py")], env, env, reps)
            print(row(f"one block + an API span, API imported, {label}", r, "same, import only", 40))
        env = env_for(endpoints[0][1], d / "spool-up")
        r = paired([py, str(d / "api-import.py")], [py, str(d / "import.py")], env, env, reps)
        print(row("the script imports the OpenTelemetry API", r, "import only"))
        print("    (the script's own cost, not glia's: an application that uses the API pays for it without glia)")
        r = paired([py, str(d / "import.py")], [py, str(d / "plain.py")], env, env, reps)
        print(row("`import glia_otel` alone", r, "no glia"))
        r = paired([py, str(d / "stock.py")], [py, str(d / "plain.py")], env, env, max(5, reps // 3))
        print(row("stock SDK, one span, endpoint up (scale)", r, "no tracing"))


def part2(reps: int, real_endpoint: str | None) -> None:
    print(f"## 2. `glia run -- true` vs GNU time: whole process, median of {reps} (A B A B ...)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from glia_otel import _cgroup

    probe = _cgroup.create("bench")
    if probe is not None:
        probe.remove()
    print(f"  cgroup: {f'made per run (v{probe.version})' if probe is not None else 'none can be made here: sampled'}")
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        endpoints = [("up", stub_endpoint()), ("down", closed_port())]
        if real_endpoint:
            endpoints.append(("receiver", real_endpoint))
        gnu = [GNU_TIME, "true"]
        # Its own cache, so the spawner's one build (first use) is timed on its own and not counted per run.
        cache = Path(tmp) / "cache"
        first = env_for(endpoints[0][1], spool, XDG_CACHE_HOME=str(cache))
        print(f"  first run, building the spawner: {timed([GLIA, 'run', '--', 'true'], first) * 1e3:.0f} ms, "
              f"then {timed([GLIA, 'run', '--', 'true'], first) * 1e3:.1f} ms")
        for label, url in endpoints:
            env = env_for(url, spool, XDG_CACHE_HOME=str(cache))
            r = paired([GLIA, "run", "--", "true"], gnu, env, env, reps)
            print(row(f"glia run -- true, endpoint {label}", r, "/usr/bin/time true", 25))
        env = env_for(endpoints[0][1], spool, GLIA_CGROUP="false", XDG_CACHE_HOME=str(cache))
        r = paired([GLIA, "run", "--", "true"], gnu, env, env, reps)
        print(row("glia run -- true, up, GLIA_CGROUP=false", r, "/usr/bin/time true"))
        fallback = env_for(endpoints[0][1], spool, XDG_CACHE_HOME=str(Path(tmp) / "none"), CC="/nonexistent/cc")
        r = paired([GLIA, "run", "--", "true"], gnu, fallback, fallback, reps)
        print(row("glia run -- true, up, no spawner (no compiler: fork from Python)", r, "/usr/bin/time true"))
        r = paired([sys.executable, "-c", "pass"], gnu, env, env, reps)
        print(row("(for scale: python -c pass)", r, "/usr/bin/time true"))


def exit_delay(script: Path, env: dict[str, str]) -> float:
    """Seconds from the script's last line to the process's end."""
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - float(out.stdout.split()[-1])


def part3(reps: int, stock_reps: int) -> None:
    print("## 3. Exit delay with the endpoint down (connection refused) or hung, one-run script")
    stamp = "import time\nprint(time.monotonic(), flush=True)\n"
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as silent:
        d = Path(tmp)
        for name, text in (("plain.py", PLAIN), ("stock.py", STOCK_ONE_SPAN), ("glia.py", ONE_BLOCK)):
            (d / name).write_text(textwrap.dedent(text) + stamp)
        env = env_for(closed_port(), d / "spool")
        plain = statistics.median(exit_delay(d / "plain.py", env) for _ in range(reps))
        glia = statistics.median(exit_delay(d / "glia.py", env) for _ in range(reps))
        spooled = len([p for p in (d / "spool").glob("*") if p.name.endswith(".gz")])
        stock = statistics.median(exit_delay(d / "stock.py", env) for _ in range(stock_reps))
        print(
            f"  exit delay (median): no tracing {plain * 1000:.1f} ms   stock SDK {stock * 1000:,.1f} ms   "
            f"glia {glia * 1000:.1f} ms (+{(glia - plain) * 1000:.1f} ms; stock/glia {stock / glia:.0f}x)"
        )
        print(f"  loss: glia spooled {spooled} of {reps} runs; the stock SDK dropped {stock_reps} of {stock_reps}")
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = env_for(f"http://127.0.0.1:{silent.getsockname()[1]}", d / "spool-hung")
        hung = [exit_delay(d / "glia.py", env) for _ in range(max(3, reps // 3))]
        spooled = len([p for p in (d / "spool-hung").glob("*") if p.name.endswith(".gz")])
        print(
            f"  endpoint accepting but never answering: glia exit delay median "
            f"{statistics.median(hung) * 1000:.1f} ms (the 250 ms deadline, then the spool); spooled {spooled} of "
            f"{len(hung)}"
        )


OVERHEAD = """
import statistics, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
if mode in ("sdk-span", "app-provider", "bridged"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    tracer = trace.get_tracer("bench")
if mode == "app-provider":
    trace.set_tracer_provider(TracerProvider())  # no exporter: glia only adds attributes
import glia_otel
if mode in ("glia", "app-provider", "bridged"):
    glia_otel.configure(metrics=False)
    with glia_otel.track("warm"):
        pass
samples = []
pc = time.perf_counter_ns
for i in range(n):
    if mode == "empty":
        t0 = pc()
        t1 = pc()
    elif mode == "sdk-span":
        t0 = pc()
        with tracer.start_as_current_span("x"):
            pass
        t1 = pc()
    else:
        t0 = pc()
        with glia_otel.track("x"):
            pass
        t1 = pc()
    samples.append(t1 - t0)
samples.sort()
print(statistics.median(samples) / 1000, samples[int(0.99 * (n - 1))] / 1000)
"""


def part4(n: int) -> None:
    print(f"## 4. Per-run overhead of `with glia_otel.track():`, export excluded (median of {n:,})")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "overhead.py"
        script.write_text(textwrap.dedent(OVERHEAD))
        env = env_for(stub_endpoint(), Path(tmp) / "spool")
        labels = {
            "empty": "timer only",
            "sdk-span": "stock SDK span (ProxyTracer, no provider)",
            "app-provider": "glia.track on an app TracerProvider, no exporter",
            "bridged": "glia.track, OpenTelemetry API imported (glia's provider)",
            "glia": "glia.track, glia's own spans (background export to a stub)",
        }
        results = {}
        for mode in labels:
            out = subprocess.run(
                [sys.executable, str(script), mode, str(n)], env=env, capture_output=True, text=True, check=True
            )
            results[mode] = tuple(float(x) for x in out.stdout.split())
    for mode, (med, p99) in results.items():
        print(f"  {labels[mode]:<60} median {med:7.1f} us   p99 {p99:7.1f} us")
    print(f"  target <= 100 us: glia median {results['glia'][0]:.1f} us ({results['glia'][0] / 100:.2f} of the budget)")


SLEEPING_BLOCK = """
import sys, time
import glia_otel
with glia_otel.track("sleeping"):
    time.sleep(float(sys.argv[1]))
"""


def cpu_of(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def part5(seconds: float, reps: int) -> None:
    print(f"## 5. Process sampling: CPU time of a {seconds:.0f} s sleep, sampling on vs off (median of {reps})")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from glia_otel._metrics import next_offset

    samples, offset = 0, next_offset(0, 0.0, None)
    while offset is not None and offset <= seconds:
        samples += 1
        offset = next_offset(samples, offset, None)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "block.py").write_text(textwrap.dedent(SLEEPING_BLOCK))
        url = stub_endpoint()
        on = env_for(url, d / "spool")
        off = env_for(url, d / "spool", OTEL_METRICS_EXPORTER="none")
        cases = {
            "glia run -- sleep": [GLIA, "run", "--", "sleep", str(seconds)],
            "one tracked block sleeping": [sys.executable, str(d / "block.py"), str(seconds)],
        }
        # All at once: they sleep, so they barely compete, and the whole part takes one run's time.
        procs = {(label, mode, i): cpu_of(cmd, env) for label, cmd in cases.items()
                 for mode, env in (("on", on), ("off", off)) for i in range(reps)}  # fmt: skip
        cpu: dict[tuple[str, str], list[float]] = {}
        for (label, mode, _), proc in procs.items():
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu.setdefault((label, mode), []).append(usage.ru_utime + usage.ru_stime)
    print(f"  {samples} samples in {seconds:.0f} s with the default ramp (4 points each, plus the zero point)")
    budget_ms = 0.01 * seconds * 1000
    for label in cases:
        a, b = statistics.median(cpu[(label, "on")]), statistics.median(cpu[(label, "off")])
        added = (a - b) * 1000
        print(
            f"  {label:<30} sampling on {a * 1000:7.1f} ms   off {b * 1000:7.1f} ms   {added:+6.1f} ms CPU "
            f"= {100 * (a - b) / seconds:.3f}% of one core   target <= {budget_ms:.0f} ms (1%): "
            f"{'met' if added <= budget_ms else 'NOT met'}"
        )


SLEEPING_BLOCK_S = """
import sys, time
import glia_otel
with glia_otel.track("job"):
    time.sleep(float(sys.argv[1]))
"""


def part6(reps: int, real_endpoint: str | None) -> None:
    print(f"## 6. Live status on vs off (GLIA_LIVE=false): whole process, median of {reps} (A B A B ...)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        script = d / "sleeping.py"
        script.write_text(textwrap.dedent(SLEEPING_BLOCK_S))
        endpoints = [("up", stub_endpoint())]
        if real_endpoint:
            endpoints.append(("receiver", real_endpoint))
        print(f"  {'':<46} {'live on':>10}   {'baseline':<29}   {'added':>10}   ratio")
        for label, url in endpoints:
            on = env_for(url, d / "spool", OTEL_METRICS_EXPORTER="none")
            off = {**on, "GLIA_LIVE": "false"}
            for seconds in ("1", "1.5"):
                r = paired([GLIA, "run", "--", "sleep", seconds], [GLIA, "run", "--", "sleep", seconds], on, off, reps)
                print(row(f"glia run -- sleep {seconds}, {label}", r, "live off", 5))
                cmd = [sys.executable, str(script), seconds]
                r = paired(cmd, cmd, on, off, reps)
                print(row(f"a {seconds} s track block, {label}", r, "live off", 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--endpoint", help="a real receiver's base URL to add to parts 1 and 2")
    parser.add_argument("--parts", default="123456")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"# glia client benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
    )
    # An installed wheel ships compiled bytecode; a source checkout run with PYTHONDONTWRITEBYTECODE=1 (as here)
    # would recompile glia_otel in every process and time the compiler, not glia.
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "glia_otel"), quiet=1)
    try:
        if "1" in args.parts:
            part1(reps=10 if args.quick else 40, real_endpoint=args.endpoint)
        if "2" in args.parts:
            part2(reps=15 if args.quick else 50, real_endpoint=args.endpoint)
        if "3" in args.parts:
            part3(reps=5 if args.quick else 15, stock_reps=1 if args.quick else 3)
        if "4" in args.parts:
            part4(2000 if args.quick else 10_000)
        if "5" in args.parts:
            part5(20.0 if args.quick else 60.0, 3)
        if "6" in args.parts:
            part6(reps=6 if args.quick else 15, real_endpoint=args.endpoint)
    finally:
        for stub in _stubs:
            stub.kill()
            stub.wait()
    load = os.getloadavg()
    print(f"# load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
