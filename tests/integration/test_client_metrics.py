"""Process samples land in metric_points, linked to the run: from one second in with the default ramp, at a fixed
interval when one is set; runs within their first second send none; the samples spool like runs."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env, run_python

LONG = """
import time
import glia_otel
with glia_otel.track("long"):
    chunks = []
    for _ in range(20):
        chunks.append(bytearray(8 * 1024 * 1024))
        time.sleep(0.1)
with glia_otel.track("short"):
    pass
"""


@pytest.mark.slow
def test_long_run_exports_process_samples_linked_to_it(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool", OTEL_METRIC_EXPORT_INTERVAL="300")
    proc = run_python(tmp_path, LONG, env)
    assert proc.returncode == 0, proc.stderr
    runs = {r["name"]: r for r in sql("SELECT name, trace_id, span_id, service_instance_id FROM spans")}
    points = sql(
        "SELECT metric_name, value, trace_id, span_id, service_instance_id FROM metric_points "
        "WHERE metric_name = 'process.memory.usage' ORDER BY time"
    )
    assert len(points) >= 2
    linked = [p for p in points if p["trace_id"] == runs["long"]["trace_id"]]
    assert linked and all(p["span_id"] == runs["long"]["span_id"] for p in linked)
    assert {p["service_instance_id"] for p in points} == {runs["long"]["service_instance_id"]}
    assert max(p["value"] for p in linked) > min(p["value"] for p in linked)  # memory grew during the run
    names = {r["metric_name"] for r in sql("SELECT DISTINCT metric_name FROM metric_points")}
    assert {"process.memory.usage", "process.cpu.time"} <= names


def test_short_runs_send_no_samples(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool", OTEL_METRIC_EXPORT_INTERVAL="2000")
    proc = run_python(tmp_path, "import glia_otel\nwith glia_otel.track('quick'):\n    pass\n", env)
    assert proc.returncode == 0, proc.stderr
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 1
    assert sql("SELECT count(*) AS n FROM metric_points")[0]["n"] == 0


@pytest.mark.slow
def test_long_command_exports_tree_samples_linked_to_it(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    prog = tmp_path / "grow.py"
    prog.write_text(
        "import time\nx = []\nfor _ in range(15):\n    x.append(bytearray(10 * 1024 * 1024))\n    time.sleep(0.1)\n"
    )
    env = client_env(receiver.url, tmp_path / "spool", OTEL_METRIC_EXPORT_INTERVAL="300")
    proc = subprocess.run([GLIA, "run", "--", sys.executable, str(prog)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (run,) = sql("SELECT trace_id, span_id, service_instance_id FROM spans")
    points = sql(
        "SELECT value, trace_id, span_id, service_instance_id FROM metric_points "
        "WHERE metric_name = 'process.memory.usage' ORDER BY time"
    )
    assert len(points) >= 2, points
    assert all((p["trace_id"], p["span_id"]) == (run["trace_id"], run["span_id"]) for p in points)
    assert {p["service_instance_id"] for p in points} == {run["service_instance_id"]}
    # the tree's memory grew while the command ran (to 150 MiB and the interpreter); the last sample may catch the
    # interpreter freeing it all at exit, so it is the largest that is compared with the first
    values = [p["value"] for p in points]
    assert max(values) > values[0] + 50 * 1024 * 1024, values


# --- timelines with the default ramp: a first sample 1 s in, then every second ------------------------------------

BUSY = """import time
x = b"x" * ({mib} * 1024 * 1024)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
"""


def _points(sql: Sql, trace_id: str, span_id: str, name: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT time, time_unix_nano, start_time_unix_nano, value, metric_type, is_monotonic, "
        "attributes->>'type' AS type, attributes->>'glia.scope' AS scope FROM metric_points "
        "WHERE trace_id = $1 AND span_id = $2 AND metric_name = $3 ORDER BY time, attributes->>'type'",
        trace_id,
        span_id,
        name,
    )


def _cpu_totals(points: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(s since the first point, user + system s) per sample time, from the cumulative process.cpu.time points."""
    totals: dict[int, float] = {}
    for p in points:
        totals[p["time_unix_nano"]] = totals.get(p["time_unix_nano"], 0.0) + p["value"]
    t0 = min(totals)
    return [((t - t0) / 1e9, v) for t, v in sorted(totals.items())]


def test_a_four_second_command_has_memory_and_cpu_timelines(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    prog = tmp_path / "busy.py"
    prog.write_text(BUSY.format(mib=40, seconds=4))
    env = client_env(receiver.url, tmp_path / "spool")  # the default settings: no OTEL_METRIC_EXPORT_INTERVAL
    proc = subprocess.run([GLIA, "run", "--", sys.executable, str(prog)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (run,) = sql(
        "SELECT trace_id, span_id, start_time_unix_nano AS t0, start_time_unix_nano + duration_ns AS t1, "
        "cpu_user_seconds, cpu_system_seconds FROM spans"
    )
    memory = _points(sql, run["trace_id"], run["span_id"], "process.memory.usage")
    cpu = _points(sql, run["trace_id"], run["span_id"], "process.cpu.time")
    threads = _points(sql, run["trace_id"], run["span_id"], "process.thread.count")
    assert len(memory) >= 3, memory
    assert len({p["time"] for p in cpu}) >= 3, cpu
    assert threads and all(p["value"] >= 1 for p in threads)
    assert all(run["t0"] <= p["time_unix_nano"] <= run["t1"] for p in memory + cpu), (run, memory, cpu)
    assert all(p["scope"] == "tree" for p in memory + cpu + threads)
    assert min(p["value"] for p in memory) > 40 * 1024 * 1024  # the tree holds the program's 40 MiB
    # CPU: cumulative seconds since the command began (user and system), a counter
    assert {p["type"] for p in cpu} == {"user", "system"}
    assert all(p["metric_type"] == "sum" and p["is_monotonic"] for p in cpu)
    assert {p["start_time_unix_nano"] for p in cpu} == {cpu[0]["time_unix_nano"]}  # counted from the start
    totals = _cpu_totals(cpu)
    assert totals[0] == (0.0, 0.0)  # the zero point at the command's start
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(totals))
    # the last point is the span's own figure (wait4), the busy loop kept about one core busy in between
    assert totals[-1][1] == pytest.approx(run["cpu_user_seconds"] + run["cpu_system_seconds"], abs=1e-6)
    assert totals[-2][1] / totals[-2][0] > 0.3, totals


def test_a_four_second_block_has_memory_and_cpu_timelines(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    script = (
        "import time, glia_otel\nwith glia_otel.track('busy'):\n    x = []\n    end = time.monotonic() + 4\n"
        "    while time.monotonic() < end:\n        x.append(b'x' * 65536)\n        sum(range(10000))\n"
    )
    proc = run_python(tmp_path, script, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    (run,) = sql(
        "SELECT trace_id, span_id, start_time_unix_nano AS t0, start_time_unix_nano + duration_ns AS t1 FROM spans"
    )
    memory = _points(sql, run["trace_id"], run["span_id"], "process.memory.usage")
    cpu = _points(sql, run["trace_id"], run["span_id"], "process.cpu.time")
    threads = _points(sql, run["trace_id"], run["span_id"], "process.thread.count")
    assert len(memory) >= 3 and len({p["time"] for p in cpu}) >= 3, (memory, cpu)
    assert threads and all(p["value"] >= 1 for p in threads)
    assert all(run["t0"] <= p["time_unix_nano"] <= run["t1"] for p in memory + cpu), (run, memory, cpu)
    assert all(p["scope"] is None for p in memory + cpu)  # the process, not a tree
    assert memory[-1]["value"] > memory[0]["value"]  # the block kept allocating
    totals = _cpu_totals(cpu)
    assert totals[0] == (0.0, 0.0) and totals[-1][1] / totals[-1][0] > 0.3, totals


def test_a_run_within_its_first_second_sends_no_samples(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    assert subprocess.run([GLIA, "run", "--", "sleep", "0.6"], env=env, capture_output=True).returncode == 0
    proc = run_python(tmp_path, "import time, glia_otel\nwith glia_otel.track('q'):\n    time.sleep(0.6)\n", env)
    assert proc.returncode == 0, proc.stderr
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 2
    assert sql("SELECT count(*) AS n FROM metric_points")[0]["n"] == 0


def test_a_fixed_interval_replaces_the_ramp(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool", OTEL_METRIC_EXPORT_INTERVAL="250")
    assert subprocess.run([GLIA, "run", "--", "sleep", "1.7"], env=env, capture_output=True).returncode == 0
    (run,) = sql("SELECT trace_id, span_id, start_time FROM spans")
    memory = _points(sql, run["trace_id"], run["span_id"], "process.memory.usage")
    cpu = _points(sql, run["trace_id"], run["span_id"], "process.cpu.time")
    assert len(memory) >= 5, memory  # every 250 ms from 250 ms on, where the ramp would have taken one
    gaps = [(b["time_unix_nano"] - a["time_unix_nano"]) / 1e9 for a, b in itertools.pairwise(memory)]
    assert all(0.2 < g < 0.5 for g in gaps), gaps
    assert len({p["time"] for p in cpu}) >= len(memory)


def test_sampling_imports_neither_the_sdk_nor_protobuf_nor_psutil(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    report = "import atexit, sys\natexit.register(lambda: print('IMPORTED', *sorted(sys.modules)))\n"
    env = client_env(receiver.url, tmp_path / "spool", OTEL_METRIC_EXPORT_INTERVAL="300")
    block = run_python(
        tmp_path, report + "import time, glia_otel\nwith glia_otel.track('b'):\n    time.sleep(1)\n", env
    )
    command = run_python(
        tmp_path, report + "from glia_otel._cli import main\nassert main(['run', '--', 'sleep', '1']) == 0\n", env
    )
    for proc in (block, command):
        assert proc.returncode == 0, proc.stderr
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTED")]
        loaded = set(line.split()[1:])
        heavy = {m for m in loaded if m.split(".")[0] in ("opentelemetry", "google", "psutil")}
        assert not heavy, sorted(heavy)
        assert "glia_otel._otlp_metrics" in loaded  # it did sample
    for run in sql("SELECT trace_id, span_id FROM spans"):
        assert len(_points(sql, run["trace_id"], run["span_id"], "process.cpu.time")) >= 4


def test_samples_spool_while_the_endpoint_is_down_and_flush_later(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    spool = tmp_path / "spool"
    env = client_env(None, spool, OTEL_METRIC_EXPORT_INTERVAL="300", GLIA_EXPORT_DEADLINE_MS="250")
    proc = subprocess.run([GLIA, "run", "--", "sleep", "1.2"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.startswith("metrics-") for p in spool.iterdir()), sorted(spool.iterdir())
    flush = subprocess.run(
        [GLIA, "flush", "--endpoint", receiver.url], env=env, capture_output=True, text=True, timeout=60
    )
    assert flush.returncode == 0, flush.stdout + flush.stderr
    (run,) = sql("SELECT trace_id, span_id FROM spans")
    assert len(_points(sql, run["trace_id"], run["span_id"], "process.memory.usage")) >= 3
    assert len(_points(sql, run["trace_id"], run["span_id"], "process.cpu.time")) >= 6
    assert not any(p.name.endswith(".gz") for p in spool.iterdir())
