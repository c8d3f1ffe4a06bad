"""Live runs, the pure parts: the start record's row, in_key_order's merge within a statement, and store.sql's
update list covering every column."""

from __future__ import annotations

import re
import time
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import decode, flatten, sqlfiles

NOW = time.time_ns()


def _span(state: str | None, start: int, end: int = 0, heartbeat: int | None = None, span_id: int = 1) -> Span:
    span = Span(trace_id=(7).to_bytes(16, "big"), span_id=span_id.to_bytes(8, "big"), name="job")
    span.start_time_unix_nano, span.end_time_unix_nano = start, end
    if state is not None:
        kv = span.attributes.add()
        kv.key, kv.value.string_value = "glia.run.state", state
        if heartbeat is not None:
            kv = span.attributes.add()
            kv.key, kv.value.int_value = "glia.run.heartbeat_unix_nano", heartbeat
    return span


def _rows(*spans: Span) -> list[dict[str, Any]]:
    batch: decode.ResourceSpans = decode.ResourceItems(
        Resource(), [decode.ScopeItems(InstrumentationScope(), list(spans))]
    )
    out = flatten.span_rows([batch], flatten.Limits(), NOW)
    assert out.rejected == 0, out.errors
    return [dict(zip(flatten.SPAN_COLUMNS, row, strict=True)) for row in out.rows]


def test_a_start_record_has_no_end_and_its_heartbeat_time() -> None:
    start = NOW - 5 * 10**9
    (row,) = _rows(_span("started", start, heartbeat=start + 10**9))
    assert row["end_time"] is None and row["duration_ns"] is None
    assert abs(row["heartbeat_at"].timestamp() - (start + 10**9) / 1e9) < 1e-5
    assert "glia.run.state" not in row["attributes"]
    # a stock span whose end is before its start is still refused; a span with another state is a final one
    batch: decode.ResourceSpans = decode.ResourceItems(
        Resource(), [decode.ScopeItems(InstrumentationScope(), [_span(None, start)])]
    )
    assert flatten.span_rows([batch], flatten.Limits(), NOW).rejected == 1
    (ended,) = _rows(_span("done", start, start + 10))
    assert ended["duration_ns"] == 10 and ended["heartbeat_at"] is None and "glia.run.state" in ended["attributes"]


def test_within_a_statement_the_final_row_wins_then_the_latest_heartbeat() -> None:
    start = NOW - 9 * 10**9
    rows = _rows(
        _span("running", start, heartbeat=start + 3 * 10**9, span_id=2),
        _span("started", start, heartbeat=start + 10**9, span_id=2),
        _span("started", start, heartbeat=start + 10**9, span_id=1),
        _span(None, start, start + 5, span_id=1),
        _span("running", start, heartbeat=start + 4 * 10**9, span_id=1),
    )
    assert [(r["span_id"][-1], r["duration_ns"]) for r in rows] == [("1", 5), ("2", None)]
    assert abs(rows[1]["heartbeat_at"].timestamp() - (start + 3 * 10**9) / 1e9) < 1e-5


def test_rows_come_in_key_order() -> None:
    start = NOW - 10**9
    rows = _rows(*(_span(None, start, start + 1, span_id=i) for i in (9, 3, 7, 1)))
    assert [r["span_id"] for r in rows] == sorted(r["span_id"] for r in rows)


def test_the_merge_updates_every_column_but_the_key_and_lost_at() -> None:
    schema = (sqlfiles.SQL_DIR / "schema.sql").read_text()
    body = re.search(r"CREATE TABLE spans \((.*?)\n\) PARTITION", schema, re.S)
    assert body is not None
    columns = {c for c in re.findall(r"^\s+(\w+)\s+\w+", body.group(1), re.M)} - {"PRIMARY"}
    insert = sqlfiles.load("store.sql")["insert_spans"]
    updated = set(re.findall(r"(\w+) = EXCLUDED\.\1\b", insert))
    assert updated == columns - {"trace_id", "span_id", "start_time", "lost_at"}
    assert "lost_at = CASE" in insert
