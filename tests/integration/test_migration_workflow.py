"""Revision 0004 adds the workflow and scheduler columns and moves nothing: rows stored before it keep their bags
(the attributes they sent under these names stay there), the new columns start empty, and the way back drops them."""

from __future__ import annotations

import json

from receiver.migrate import downgrade, upgrade
from tests.conftest import PgServer, run_sql
from tests.helpers import fresh_database

NEW_COLUMNS = {
    "workflow_engine", "workflow_run_id", "workflow_name", "task_name", "task_attempt", "scheduler",
    "scheduler_job_id", "requested_memory_bytes", "requested_cpus", "requested_seconds",
}  # fmt: skip
BAG = {"glia.workflow.run_id": "w1", "glia.task.attempt": 2, "sample": "S1"}


def _columns(url: str, table: str) -> set[str]:
    rows = run_sql(
        url,
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table,
    )
    return {r["attname"] for r in rows}


def test_0004_adds_columns_moves_nothing_and_goes_back(pg_server: PgServer) -> None:
    url = fresh_database(pg_server, "migrate_workflow")
    upgrade(url, "0003_tree_peak")
    run_sql(
        url,
        "INSERT INTO spans (trace_id, span_id, start_time, name, end_time, start_time_unix_nano, duration_ns,"
        " run_kind, attributes) VALUES ($1, $2, now(), 'task', now(), 0, 1, 'command', $3::jsonb)",
        "0" * 31 + "1",
        "00000000000000d1",
        json.dumps(BAG),
    )
    upgrade(url, "0004_workflow_scheduler")
    assert _columns(url, "spans") >= NEW_COLUMNS and _columns(url, "runs") >= NEW_COLUMNS
    (row,) = run_sql(url, f"SELECT attributes, {', '.join(sorted(NEW_COLUMNS))} FROM runs")
    assert json.loads(row.pop("attributes")) == BAG
    assert set(row.values()) == {None}
    indexes = run_sql(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'spans'")
    assert "spans_workflow_run_idx" in {r["indexname"] for r in indexes}
    downgrade(url, "0003_tree_peak")
    assert not NEW_COLUMNS & _columns(url, "spans") and not NEW_COLUMNS & _columns(url, "runs")
    (row,) = run_sql(url, "SELECT attributes FROM runs")
    assert json.loads(row["attributes"]) == BAG
