"""A run's log records and exceptions, for `glia show` and `/api/runs/{id}` (the queries of `sql/run_logs.sql`).

Log records are the run's by trace and span id: records its process wrote inside the run's span or a span below it
(the stock SDK's LoggingHandler), and the stderr tail `glia run --keep-stderr` kept. The newest `MAX_RECORDS` are
shown, newest last, each value cut at the detail limit and stopping at the response budget; `logs_truncated` says
some were left out. Exceptions are the run's own `exception` events (what a Python or R block that raised records):
type, message and stack trace.
"""

from __future__ import annotations

from typing import Any

from . import sqlfiles
from .query import RunQueries, _fetch_within, _row, elide

MAX_RECORDS = 200
MAX_EXCEPTIONS = 20


def _sql(name: str) -> str:
    return sqlfiles.load("run_logs.sql")[name]


async def run_logs(runs: RunQueries, run: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The newest log records of the run and of the spans below it (`run["children"]`, when run_tree added them),
    oldest first; and whether some were left out."""
    limits = runs.limits
    span_ids = [run["run_id"], *(child["span_id"] for child in run.get("children") or ())]
    args = (run["trace_id"], span_ids, MAX_RECORDS + 1, limits.detail_value_chars, limits.list_row_bytes)
    newest, more = await _fetch_within(
        runs.conn,
        _sql("run_logs"),
        args,
        rows=MAX_RECORDS,
        budget=limits.response_bytes,
        shape=lambda r: elide(_row(r), limits.detail_value_chars),
    )
    return newest[::-1], more


async def run_exceptions(runs: RunQueries, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The exceptions the run recorded (its `exception` events), in order."""
    chars = runs.limits.detail_value_chars
    args = (run["trace_id"], run["run_id"], run["started_at"], MAX_EXCEPTIONS, chars, chars)
    rows = await runs.conn.fetch(_sql("run_exceptions"), *args)
    return [elide(dict(r), chars) for r in rows]


async def add_logs(runs: RunQueries, run: dict[str, Any]) -> None:
    """Add `logs`, `logs_truncated` and `exceptions` to the run, in place (after run_tree, so that the records of
    the spans below it count)."""
    run["logs"], run["logs_truncated"] = await run_logs(runs, run)
    run["exceptions"] = await run_exceptions(runs, run)
