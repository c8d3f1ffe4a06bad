"""Flattening the workflow, task, scheduler and requested-resource attributes (issue 12), and the start-time window
that lets old history in while refusing clock faults."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import decode, flatten

NOW = time.time_ns()


def _set(kvs: Any, attrs: dict[str, object]) -> None:
    for key, value in attrs.items():
        kv: KeyValue = kvs.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = str(value)


def _span(attrs: dict[str, object] | None = None, start: int = NOW, span_id: bytes = b"\x02" * 8) -> Span:
    span = Span(
        trace_id=b"\x01" * 16, span_id=span_id, name="s", start_time_unix_nano=start, end_time_unix_nano=start + 5
    )
    _set(span.attributes, attrs or {})
    return span


def _rows(
    *spans: Span, resource: dict[str, object] | None = None, limits: flatten.Limits | None = None
) -> flatten.Rows:
    res = Resource()
    _set(res.attributes, resource or {})
    batch: decode.ResourceSpans = decode.ResourceItems(res, [decode.ScopeItems(InstrumentationScope(), list(spans))])
    return flatten.span_rows([batch], limits or flatten.Limits(), NOW)


def _named(rows: flatten.Rows) -> list[dict[str, Any]]:
    return [dict(zip(flatten.SPAN_COLUMNS, row, strict=True)) for row in rows.rows]


TASK = {
    "glia.run.kind": "task",
    "glia.workflow.engine": "nextflow",
    "glia.workflow.run_id": "6f2c0a1e-5b7d-4c1a-9e57-0d1b2c3d4e5f",
    "glia.workflow.name": "happy_euler",
    "glia.task.name": "align (S3)",
    "glia.task.attempt": 2,
    "glia.requested.memory_bytes": 2 * 1024**3,
    "glia.requested.cpus": 4,
    "glia.requested.seconds": 3600.0,
    "glia.nextflow.hash": "ab/cdef12",
}


def test_workflow_and_task_attributes_land_in_their_columns_with_their_types() -> None:
    (row,) = _named(_rows(_span(TASK)))
    assert row["workflow_engine"] == "nextflow"
    assert row["workflow_run_id"] == TASK["glia.workflow.run_id"]
    assert row["workflow_name"] == "happy_euler" and row["task_name"] == "align (S3)"
    assert row["task_attempt"] == 2 and row["requested_memory_bytes"] == 2 * 1024**3
    assert row["requested_cpus"] == 4.0 and isinstance(row["requested_cpus"], float)
    assert row["requested_seconds"] == 3600.0
    # what went to a column leaves the bag; the engine's extras stay
    assert orjson.loads(row["attributes"]) == {"glia.nextflow.hash": "ab/cdef12"}


def test_values_sent_as_text_are_read_as_their_column_s_type() -> None:
    # `glia run --attr glia.task.attempt=3` sends text
    (row,) = _named(_rows(_span({"glia.task.attempt": "3", "glia.requested.cpus": "0.5"})))
    assert row["task_attempt"] == 3 and row["requested_cpus"] == 0.5


def test_a_value_that_does_not_fit_its_column_stays_in_the_bag() -> None:
    (row,) = _named(_rows(_span({"glia.task.attempt": 2**31, "glia.requested.cpus": "many"})))
    assert row["task_attempt"] is None and row["requested_cpus"] is None
    assert orjson.loads(row["attributes"]) == {"glia.task.attempt": 2**31, "glia.requested.cpus": "many"}


def test_scheduler_context_comes_from_the_resource() -> None:
    resource = {
        "service.name": "align",
        "glia.scheduler.name": "slurm",
        "glia.scheduler.job_id": "4242_7",
        "glia.scheduler.partition": "short",
        "glia.requested.memory_bytes": 500 * 1024**2,
        "glia.requested.cpus": 2,
    }
    (row,) = _named(_rows(_span({"glia.run.kind": "command"}), resource=resource))
    assert row["scheduler"] == "slurm" and row["scheduler_job_id"] == "4242_7"
    assert row["requested_memory_bytes"] == 500 * 1024**2 and row["requested_cpus"] == 2.0
    bag = orjson.loads(row["resource"])
    # the resource's own values stay in its bag (other spans of the resource may carry their own)
    assert bag["glia.scheduler.partition"] == "short" and bag["glia.scheduler.name"] == "slurm"
    assert "service.name" not in bag  # a resource column, as before


def test_the_span_s_value_wins_over_the_resource_s() -> None:
    resource = {"glia.requested.memory_bytes": 500 * 1024**2, "glia.requested.cpus": 2, "glia.scheduler.name": "slurm"}
    own = _span({"glia.requested.memory_bytes": 8 * 1024**3}, span_id=b"\x03" * 8)
    other = _span({}, span_id=b"\x04" * 8)
    first, second = _named(_rows(own, other, resource=resource))
    assert first["requested_memory_bytes"] == 8 * 1024**3 and first["requested_cpus"] == 2.0
    assert second["requested_memory_bytes"] == 500 * 1024**2
    assert first["scheduler"] == second["scheduler"] == "slurm"
    assert "glia.requested.memory_bytes" not in orjson.loads(first["attributes"])


def test_a_workflow_run_id_over_the_index_limit_rejects_its_span_by_name() -> None:
    long_id = "w" * (flatten.MAX_INDEXED_BYTES + 1)
    rows = _rows(_span({"glia.workflow.run_id": long_id}), _span({"glia.workflow.run_id": "ok"}, span_id=b"\x05" * 8))
    assert rows.rejected == 1 and len(rows.rows) == 1
    assert "glia.workflow.run_id is 1025 bytes, over the 1024-byte limit" in rows.errors[0]
    # from the resource, the same rule: every span it would go to is rejected
    rows = _rows(_span(), resource={"glia.workflow.run_id": long_id})
    assert rows.rejected == 1 and rows.rows == []


def _ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()) * 10**9


def test_old_history_is_accepted_and_clock_faults_are_not() -> None:
    old = _ns(date(2018, 3, 1))  # the opentelemetry-proto example trace's year
    rows = _rows(_span(start=old))
    assert rows.rejected == 0 and len(rows.rows) == 1
    assert rows.months == {datetime(2018, 3, 1, tzinfo=UTC)}  # its partition is made on demand
    for fault in (0, 1_700_000_000, 1_700_000_000_000, 1_700_000_000_000_000):  # unset; s, ms, µs read as ns
        rows = _rows(_span(start=fault))
        assert rows.rejected == 1 and "outside the accepted window 2000-01-01" in rows.errors[0], fault
        assert rows.months == set()


def test_the_window_s_bounds_are_settings() -> None:
    old = _ns(date(2018, 3, 1))
    assert _rows(_span(start=old), limits=flatten.Limits(earliest=date(2019, 1, 1))).rejected == 1
    assert _rows(_span(start=_ns(date(1999, 6, 1))), limits=flatten.Limits(earliest=date(1990, 1, 1))).rejected == 0
    # an age limit refuses what is older still, whatever the earliest date says
    aged = _rows(_span(start=old), limits=flatten.Limits(max_age_days=400))
    assert aged.rejected == 1 and "GLIA_MAX_SPAN_AGE_DAYS" in aged.errors[0]
    assert _rows(_span(start=NOW + 40 * flatten.NS_PER_DAY)).rejected == 1  # the future stays bounded


@pytest.mark.parametrize("key", flatten.SPAN_OR_RESOURCE)
def test_every_span_or_resource_attribute_is_a_span_attribute_column(key: str) -> None:
    assert key in flatten.SPAN_ATTRIBUTE_COLUMNS
