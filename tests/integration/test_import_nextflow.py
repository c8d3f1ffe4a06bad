"""`glia import nextflow` into a real receiver and PostgreSQL.

tests/testdata/nextflow/trace-custom.txt is the trace Nextflow 24.10 wrote for a pipeline of 10 task attempts (light
tasks, allocations of 50/150/200 MiB, a task retried once, a failing task ignored, a tag with quotes, `$` and `*`)
with a custom `trace.fields` set: no `name` field, `peak_rss:num` raw, the rest formatted (`61.4 MB`, `10m`,
`16.7%`, `-`), in local time (UTC on the machine that ran it). Its dates stay what they are: the receiver's default
window takes old history (docs/receiver.md).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from glia_otel._import import task_span_id, trace_id, workflow_span_id
from tests.conftest import REPO, ReceiverServer
from tests.helpers import GLIA, Sql, client_env

TRACE = REPO / "tests" / "testdata" / "nextflow" / "trace-custom.txt"


def glia_import(endpoint: str | None, spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GLIA, "import", "nextflow", *args], env=client_env(endpoint, spool), capture_output=True, text=True, timeout=60
    )


# The contract's attributes that revision 0004 made typed columns (the receiver moves them out of the bag).
COLUMNS = {
    "glia.workflow.engine": "workflow_engine",
    "glia.workflow.run_id": "workflow_run_id",
    "glia.workflow.name": "workflow_name",
    "glia.task.name": "task_name",
    "glia.task.attempt": "task_attempt",
    "glia.requested.memory_bytes": "requested_memory_bytes",
    "glia.requested.cpus": "requested_cpus",
    "glia.requested.seconds": "requested_seconds",
}


def attr(row: dict[str, Any], name: str) -> Any:
    """An attribute of a stored span (a row of `SELECT *`): its typed column where there is one, else the bag's."""
    bag = row["attributes"]
    bag = json.loads(bag) if isinstance(bag, str) else bag
    column = COLUMNS.get(name)
    if column is not None:
        assert name not in bag, f"{name} in the bag, not only in its column {column}"
        return row[column]
    return bag.get(name)


def rows(sql: Sql) -> list[dict[str, Any]]:
    return sql("SELECT * FROM spans ORDER BY start_time, span_id")


def test_a_trace_with_custom_fields_imported_twice_is_stored_once(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    first = glia_import(receiver.url, tmp_path / "spool", "--timezone", "UTC", str(TRACE))
    assert first.returncode == 0, first.stderr
    assert "10 task(s)" in first.stdout and ": sent" in first.stdout, first.stdout
    stored = rows(sql)
    assert len(stored) == 11  # 10 attempts and their workflow

    second = glia_import(receiver.url, tmp_path / "spool", "--timezone", "UTC", str(TRACE))
    assert second.returncode == 0, second.stderr
    assert rows(sql) == stored  # the same ids, the same start times: nothing new, nothing changed

    (workflow,) = [r for r in stored if r["run_kind"] == "workflow"]
    run_id = attr(workflow, "glia.workflow.run_id")
    assert run_id.startswith("trace-")
    assert (workflow["trace_id"], workflow["span_id"]) == (
        f"{trace_id('nextflow', run_id):032x}",
        f"{workflow_span_id('nextflow', run_id):016x}",
    )
    assert workflow["name"] == "trace-custom" and workflow["service_name"] == "nextflow"
    tasks = {r["name"]: r for r in stored if r["run_kind"] == "task" and r["name"] != "flaky"}
    flaky = sorted((r for r in stored if r["name"] == "flaky"), key=lambda r: attr(r, "glia.task.attempt"))
    assert sorted(tasks) == sorted(
        [
            *("light (1)", "light (2)", "light (3)", "alloc (50 MiB)", "alloc (150 MiB)", "alloc (200 MiB)"),
            *("broken", 'quoted (it\'s "quoted" $HOME *)'),
        ]
    )
    for row in [*tasks.values(), *flaky]:
        assert row["trace_id"] == workflow["trace_id"] and row["parent_span_id"] == workflow["span_id"]
        assert attr(row, "glia.workflow.run_id") == run_id and attr(row, "glia.workflow.engine") == "nextflow"
        assert row["start_time"] >= workflow["start_time"] and row["end_time"] <= workflow["end_time"]
        key = ("hash", attr(row, "glia.nextflow.hash"), str(attr(row, "glia.task.attempt")))
        assert row["span_id"] == f"{task_span_id('nextflow', run_id, key):016x}"

    alloc = tasks["alloc (50 MiB)"]
    assert alloc["service_name"] == "alloc"
    # 2 43/00576d alloc 50 MiB COMPLETED 0 1 ... 19.911 ... 20.489 549ms 8.6% 0.2% 61.4 MB 64397312 67.8 MB 0 0 1 GB 1 -
    assert alloc["start_time"] == datetime(2026, 12, 2, 17, 57, 19, 911000, tzinfo=UTC)
    assert alloc["end_time"] == datetime(2026, 12, 2, 17, 57, 20, 489000, tzinfo=UTC)
    assert (alloc["status_code"], alloc["exit_code"]) == (0, 0)
    assert (alloc["peak_rss_bytes"], alloc["peak_rss_method"]) == (64397312, "nextflow-poll")
    assert alloc["cpu_percent"] == 8.6
    assert attr(alloc, "glia.nextflow.hash") == "4300576d3bfaf3bc6186b2aefc22ab54"  # the full hash, from the work dir
    assert attr(alloc, "glia.nextflow.hash_short") == "43/00576d"
    assert attr(alloc, "glia.nextflow.rss_bytes") == round(61.4 * 1024**2)
    assert attr(alloc, "glia.nextflow.peak_vmem_bytes") == round(67.8 * 1024**2)
    assert attr(alloc, "glia.nextflow.realtime_seconds") == 0.549
    assert attr(alloc, "glia.nextflow.mem_percent") == 0.2
    assert attr(alloc, "glia.requested.memory_bytes") == 1024**3 and attr(alloc, "glia.requested.cpus") == 1.0
    assert attr(alloc, "glia.requested.seconds") is None  # `-`: missing, not zero
    assert attr(alloc, "glia.nextflow.native_id") == "9749"  # the executor's id (a Slurm job id), kept as text

    light = tasks["light (1)"]
    assert attr(light, "glia.requested.seconds") == 600.0 and attr(light, "glia.requested.memory_bytes") == 64 * 1024**2
    broken = tasks["broken"]
    assert (broken["status_code"], broken["exit_code"]) == (2, 7)
    assert broken["status_message"] == "Nextflow: FAILED, exit code 7"
    assert attr(broken, "glia.nextflow.error_action") == "IGNORE"
    assert [(r["status_code"], r["exit_code"], attr(r, "glia.nextflow.error_action")) for r in flaky[:1]] == [
        (2, 3, "RETRY")
    ]
    assert (flaky[1]["status_code"], flaky[1]["exit_code"]) == (0, 0)
    assert attr(flaky[0], "glia.nextflow.hash") != attr(flaky[1], "glia.nextflow.hash")


def test_an_import_with_the_endpoint_down_is_spooled_and_flushed_once(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    spool = tmp_path / "spool"
    down = glia_import(None, spool, "--timezone", "UTC", "--run-id", "my-run", "--run-name", "nightly", str(TRACE))
    assert down.returncode == 0, down.stderr
    assert "kept in the spool" in down.stdout
    again = glia_import(
        receiver.url, spool, "--timezone", "UTC", "--run-id", "my-run", "--run-name", "nightly", str(TRACE)
    )
    assert again.returncode == 0, again.stderr
    flushed = subprocess.run(
        [GLIA, "flush"], env=client_env(receiver.url, spool), capture_output=True, text=True, timeout=60
    )
    assert flushed.returncode == 0, flushed.stderr
    stored = rows(sql)
    assert len(stored) == 11  # the spooled copy and the direct one are the same spans
    (workflow,) = [r for r in stored if r["run_kind"] == "workflow"]
    assert workflow["name"] == "nightly"
    assert {attr(r, "glia.workflow.run_id") for r in stored} == {"my-run"}
    assert {attr(r, "glia.workflow.name") for r in stored} == {"nightly"}


def test_a_file_that_is_not_a_trace_is_refused_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("sample\treads\nS1\t100\n")
    proc = glia_import(None, tmp_path / "spool", str(bad))
    assert proc.returncode == 1
    assert "not a Nextflow trace file" in proc.stderr and "'sample'" in proc.stderr
    assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").iterdir())
