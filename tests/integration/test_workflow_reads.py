"""Reading a workflow through a real receiver and PostgreSQL: `/api/runs?workflow=`, `glia runs --workflow` by both
paths (database and query API, the same bytes), and `glia show` of a workflow span with its tasks under it; tasks
whose workflow span never arrived still group by workflow_run_id."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson
import pytest

from glia_otel._cli import main
from tests.conftest import ReceiverServer
from tests.helpers import JS, Sql, post

SESSION = "6f2c0a1e-5b7d-4c1a-9e57-0d1b2c3d4e5f"  # a Nextflow session id
LOST = "lost-workflow-run"  # a workflow whose own span never arrived
TRACE = "ab" * 16
OTHER_TRACE = "cd" * 16
WORKFLOW = "0a0a0a0a0a0a0a01"
T0 = time.time_ns() - 3600 * 10**9
MIB = 1024 * 1024


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": v}


def _span(span_id: str, name: str, start_s: float, wall_s: float, attrs: dict[str, Any], trace: str = TRACE,
          parent: str | None = None, error: bool = False) -> dict[str, Any]:  # fmt: skip
    start = T0 + int(start_s * 1e9)
    span: dict[str, Any] = {
        "traceId": trace,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + int(wall_s * 1e9)),
        "attributes": [{"key": k, "value": _value(v)} for k, v in attrs.items()],
        "status": {"code": 2 if error else 1},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def _task(span_id: str, name: str, attempt: int, start_s: float, exit_code: int = 0, trace: str = TRACE,
          parent: str | None = None) -> dict[str, Any]:  # fmt: skip
    attrs = {
        "glia.run.kind": "task",
        "glia.workflow.engine": "nextflow",
        "glia.workflow.run_id": SESSION,
        "glia.task.name": name,
        "glia.task.attempt": attempt,
        "process.exit.code": exit_code,
        "glia.memory.peak_rss_bytes": 50 * MIB * attempt,
        "glia.requested.memory_bytes": 2048 * MIB,
        "glia.requested.cpus": 2,
    }
    return _span(span_id, name, start_s, 1.5, attrs, trace=trace, parent=parent, error=exit_code != 0)


def _resource(service: str, *spans: dict[str, Any]) -> dict[str, Any]:
    attrs = [{"key": "service.name", "value": {"stringValue": service}}]
    return {"resource": {"attributes": attrs}, "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}


def _workflow_request() -> bytes:
    workflow = _span(
        WORKFLOW, "happy_euler", 0, 60, {
            "glia.run.kind": "workflow", "glia.workflow.engine": "nextflow", "glia.workflow.run_id": SESSION,
            "glia.workflow.name": "happy_euler",
        },
    )  # fmt: skip
    align = [
        _task("0a0a0a0a0a0a0a02", "align (S1)", 1, 1, exit_code=137, parent=WORKFLOW),
        _task("0a0a0a0a0a0a0a03", "align (S1)", 2, 5, parent=WORKFLOW),
        _task("0a0a0a0a0a0a0a04", "align (S2)", 1, 2, parent=WORKFLOW),
    ]
    # a task of the same workflow sent in a trace of its own, without its parent
    stray = _task("0a0a0a0a0a0a0a05", "report", 1, 30, trace=OTHER_TRACE)
    lost = [
        _span(f"0b0b0b0b0b0b0b0{i}", f"call ({i})", 10 + i, 1, {
            "glia.run.kind": "task", "glia.workflow.engine": "snakemake", "glia.workflow.run_id": LOST,
            "glia.task.name": f"call ({i})", "glia.task.attempt": 1,
        }, trace="ef" * 16, parent="0b0b0b0b0b0b0b00")
        for i in (1, 2)
    ]  # fmt: skip
    unrelated = _span("0c0c0c0c0c0c0c01", "other", 3, 1, {"glia.run.kind": "command"}, trace="12" * 16)
    return orjson.dumps(
        {
            "resourceSpans": [
                _resource("nextflow", workflow),
                _resource("align", *align),
                _resource("report", stray),
                _resource("call", *lost),
                _resource("other", unrelated),
            ]
        }
    )


@pytest.fixture
def workflows(receiver: ReceiverServer, sql: Sql) -> ReceiverServer:
    response = post(receiver, _workflow_request(), JS)
    assert response.status_code == 200 and response.content == b"{}", response.text
    assert sql("SELECT count(*) AS n FROM runs") == [{"n": 8}]
    return receiver


def _api_runs(receiver: ReceiverServer, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{receiver.url}/api/runs", params=params, timeout=30)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["runs"]
    return runs


def test_the_api_lists_a_workflow_by_its_engine_s_id_or_by_its_span_s_run_id(workflows: ReceiverServer) -> None:
    by_session = _api_runs(workflows, workflow=SESSION, sort="started_at")
    assert [r["run_id"] for r in by_session] == [WORKFLOW, *(f"0a0a0a0a0a0a0a0{i}" for i in (2, 4, 3, 5))]
    assert _api_runs(workflows, workflow=WORKFLOW, sort="started_at") == by_session
    assert _api_runs(workflows, workflow=WORKFLOW.upper(), sort="started_at") == by_session
    first = by_session[1]
    assert {k: first[k] for k in ("workflow_engine", "workflow_run_id", "task_name", "task_attempt", "exit_code")} == {
        "workflow_engine": "nextflow",
        "workflow_run_id": SESSION,
        "task_name": "align (S1)",
        "task_attempt": 1,
        "exit_code": 137,
    }
    assert first["requested_memory_bytes"] == 2048 * MIB and first["requested_cpus"] == 2.0
    assert first["program_name"] == "align" and first["status"] == "error"
    assert by_session[0]["run_kind"] == "workflow" and by_session[0]["workflow_name"] == "happy_euler"
    # the contract's attributes left the bag
    assert "glia.task.name" not in first["attributes"]


def test_tasks_whose_workflow_span_never_arrived_still_group(workflows: ReceiverServer) -> None:
    lost = _api_runs(workflows, workflow=LOST, sort="started_at")
    assert [r["task_name"] for r in lost] == ["call (1)", "call (2)"]
    assert _api_runs(workflows, workflow="no-such-workflow") == []
    assert _api_runs(workflows, workflow="0123456789abcdef") == []  # a run id of no run


def test_the_workflow_filter_combines_with_the_others(workflows: ReceiverServer) -> None:
    failed = _api_runs(workflows, workflow=SESSION, status="error")
    assert [r["run_id"] for r in failed] == ["0a0a0a0a0a0a0a02"]
    assert [r["run_id"] for r in _api_runs(workflows, workflow=SESSION, program="report")] == ["0a0a0a0a0a0a0a05"]
    response = httpx.get(f"{workflows.url}/api/runs", params={"workflow": ""}, timeout=30)
    assert response.status_code == 422


def _glia(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_glia_runs_workflow_prints_the_same_from_the_database_and_the_api(
    workflows: ReceiverServer, database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GLIA_API_URL", "GLIA_API_KEY", "GLIA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for argv in (
        ["runs", "--workflow", SESSION, "--sort", "started_at"],
        ["runs", "--workflow", WORKFLOW, "--format", "json"],
        ["runs", "--workflow", LOST, "--format", "csv"],
        ["show", WORKFLOW],
        ["show", WORKFLOW, "--format", "json"],
    ):
        want = _glia(capsys, *argv, "--database-url", database_url)
        with monkeypatch.context() as m:
            m.setenv("GLIA_API_URL", workflows.url)
            m.setenv("GLIA_DATABASE_URL", "postgresql://glia@127.0.0.1:9/nowhere")
            got = _glia(capsys, *argv)
        assert got == want, argv
        assert want[0] == 0, want
    code, out, _ = _glia(capsys, "runs", "--workflow", SESSION, "--format", "json", "--database-url", database_url)
    assert code == 0 and {r["task_name"] for r in json.loads(out)} == {None, "align (S1)", "align (S2)", "report"}
    code, out, _ = _glia(capsys, "runs", "--workflow", LOST, "--format", "csv", "--database-url", database_url)
    assert code == 0
    header, *rows = out.splitlines()
    assert "workflow_run_id" in header.split(",") and "scheduler_job_id" in header.split(",")
    assert len(rows) == 2
    with pytest.raises(SystemExit) as refused:
        main(["runs", "--workflow", " ", "--database-url", database_url])
    assert refused.value.code == 2


def test_glia_show_of_a_workflow_span_lists_its_tasks_under_it(
    workflows: ReceiverServer, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _glia(capsys, "show", WORKFLOW, "--database-url", database_url)
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("child spans (3):")
    assert lines[start + 1 : start + 4] == [
        "  align (S1)  1.50s  error  attempt 1  exit 137  peak 50.0 MiB",
        "  align (S2)  1.50s  ok  attempt 1  exit 0  peak 50.0 MiB",
        "  align (S1)  1.50s  ok  attempt 2  exit 0  peak 100.0 MiB",
    ]
    # the task sent in a trace of its own is there too, by its workflow_run_id
    assert lines[start + 4] == f"runs of workflow {SESSION} not below it (1):"
    assert lines[start + 5] == "  report  1.50s  ok  attempt 1  exit 0  peak 50.0 MiB  run 0a0a0a0a0a0a0a05"
    assert f"  workflow_run_id      {SESSION}" in lines
    # through the API: the same tasks, in the detail's fields
    detail = httpx.get(f"{workflows.url}/api/runs/{WORKFLOW}", timeout=30).json()
    assert [c["task_attempt"] for c in detail["children"]] == [1, 1, 2]
    assert [t["run_id"] for t in detail["workflow_tasks"]] == ["0a0a0a0a0a0a0a05"]
    assert detail["workflow_tasks_truncated"] is False
    # a task's own detail names its workflow, and lists no tasks of its own
    task = httpx.get(f"{workflows.url}/api/runs/0a0a0a0a0a0a0a02", timeout=30).json()
    assert task["workflow_run_id"] == SESSION and task["workflow_tasks"] == []
