"""Process samples of a long run land in metric_points, linked to the run; short runs send none."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ReceiverServer
from tests.integration.test_client_track import Sql, client_env, run_python

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
    import subprocess
    import sys

    from tests.integration.test_client_track import GLIA

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
    assert points[-1]["value"] > points[0]["value"]  # the tree's memory grew while the command ran
