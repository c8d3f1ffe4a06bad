"""The query layer of the API and the database commands: run filters, sort keys, keyset cursors, and the queries of
`sql/query.sql` (`RunQueries.list_runs`, `get_run`, `run_children`, `workflow_tasks`, `run_metrics`).

`/api/...` (api.py) and `glia runs` / `glia show` (query_cli.py) run exactly these, under the same limits: a read-only
transaction with a statement timeout of its own (`reading`), values cut at a length with a marker, and pages that
stop at a byte budget (`ReadLimits`). Where the connection comes from (the receiver's pool, a command's own) and how
its errors are told is `database.py`'s. No web framework here: the commands import this module, not the API.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from . import sqlfiles
from .errors import InvalidQuery

if TYPE_CHECKING:
    import asyncpg

RUN_ID_PATTERN = r"^[0-9a-fA-F]{16}$"
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LIMIT = 500
MAX_CHILDREN = 1000
MAX_POINTS = 100_000
# The one list of statuses (the runs view's `status`): not ended yet, not ended and its heartbeats stopped, failed
# (span status ERROR or a non-zero exit code), else ok. The raw span status stays in spans.status_code.
STATUSES = ("running", "lost", "error", "ok")


def _sql(name: str) -> str:
    return sqlfiles.load("query.sql")[name]


class ReadSettings(Protocol):
    """What ReadLimits is made from: the receiver's Settings, or the CommandSettings of `glia runs`."""

    @property
    def read_statement_timeout_ms(self) -> int: ...
    @property
    def api_response_bytes(self) -> int: ...
    @property
    def api_list_value_chars(self) -> int: ...
    @property
    def api_list_row_bytes(self) -> int: ...
    @property
    def api_detail_value_chars(self) -> int: ...


class Sort(enum.StrEnum):
    """Sort keys of /api/runs; a leading '-' means descending."""

    NEWEST = "-started_at"
    OLDEST = "started_at"
    WALL_DESC = "-wall_seconds"
    WALL_ASC = "wall_seconds"
    MEMORY_DESC = "-peak_rss_bytes"
    MEMORY_ASC = "peak_rss_bytes"
    CPU_DESC = "-cpu_seconds"
    CPU_ASC = "cpu_seconds"


@dataclass(frozen=True)
class _SortSql:
    sort_expr: str
    cursor_type: str


# The only text ever formatted into list_runs: chosen by the validated Sort, never taken from the request.
_SORT_SQL = {
    "started_at": _SortSql("started_at", "timestamptz"),
    # missing figures sort as -1: last when descending, first when ascending
    "wall_seconds": _SortSql("coalesce(wall_seconds, -1)", "float8"),
    "peak_rss_bytes": _SortSql("coalesce(peak_rss_bytes::float8, -1)", "float8"),
    "cpu_seconds": _SortSql("coalesce(cpu_seconds, -1)", "float8"),
}


@cache
def list_runs_sql(sort: Sort) -> str:
    """list_runs for one sort key: the only text ever formatted into it, from the fixed table above."""
    column = sort.value.lstrip("-")
    spec = _SORT_SQL[column]
    descending = sort.value.startswith("-")
    return _sql("list_runs").format(
        sort_expr=spec.sort_expr,
        cursor_type=spec.cursor_type,
        direction="DESC" if descending else "ASC",
        cmp="<" if descending else ">",
    )


# --- parameters ---------------------------------------------------------------------------------------------------


def parse_when(text: str, param: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time, or an age such as `7d`, `12h`, `30m`, `2w` meaning that long before now."""
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds > 100 * 365 * 86400:
            raise InvalidQuery(param, f"{text!r} is more than a century")
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidQuery(
            param,
            f"{text!r} is neither an ISO 8601 time (2026-11-01T12:00:00Z) nor an age (7d, 12h, 30m, 2w)",
        ) from None
    return _utc(value, param, text)


def _utc(value: datetime, param: str, text: str) -> datetime:
    """`value` in UTC (a time without zone is taken as UTC); InvalidQuery when UTC cannot hold it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        # 9999-12-31T23:59:59-14:00 is past the last representable UTC time: asyncpg would fail to encode it
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidQuery(param, f"{text!r} is out of range (years 1 to 9999 in UTC)") from None


def parse_attrs(items: list[str]) -> dict[str, Any] | None:
    """`key=value` pairs -> one JSONB containment object. A value that reads as JSON (1000, 2.5, true, "S1")
    is matched with its JSON type; anything else as a string."""
    if not items:
        return None
    wanted: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidQuery("attr", f"{item!r} is not key=value (e.g. attr=sample=S1)")
        if key in wanted:
            raise InvalidQuery("attr", f"{key!r} is given twice")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        if isinstance(value, dict | list):
            value = raw  # containment is for scalar values; a JSON document is matched as the text it is
        wanted[key] = value
    return wanted


@dataclass
class RunFilter:
    """The filters of /api/runs and `glia runs`; None means not filtered."""

    program: str | None = None
    user: str | None = None
    host: str | None = None
    status: str | None = None
    exit_code: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    attrs: dict[str, Any] | None = None
    script_sha256: str | None = None
    # a workflow's runs: its engine's workflow_run_id, or the run id of its workflow span
    workflow: str | None = None
    name: str | None = None  # the run name (`glia run --name`, the block's name)

    def check(self) -> None:
        """Raise InvalidQuery for values PostgreSQL would refuse (NUL characters) or that cannot match."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and "\x00" in value:
                raise InvalidQuery(f.name, "must not contain NUL characters")
        if self.attrs and _has_nul(self.attrs):
            # checked on the parsed values: the JSON text spells a NUL as \u0000, which jsonb refuses
            raise InvalidQuery("attr", "must not contain NUL characters")
        if self.status is not None and self.status not in STATUSES:
            raise InvalidQuery("status", f"{self.status!r} is not one of {', '.join(STATUSES)}")
        if self.workflow is not None and not self.workflow.strip():
            raise InvalidQuery("workflow", "must be a workflow run id or a run id, not empty")
        if self.since and self.until and self.since >= self.until:
            raise InvalidQuery("until", "must be later than since")


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in `value`, its keys or anything nested in it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def encode_cursor(sort: Sort, row: dict[str, Any]) -> str:
    """An opaque keyset cursor: the sort value and the id of the last row of a page."""
    value = row["sort_value"]
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = orjson.dumps([sort.value, value, row["trace_id"], row["run_id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort) -> tuple[Any, str, str]:
    """(sort value, trace_id, run_id) from a cursor made for the same sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, value, trace_id, run_id = orjson.loads(raw)
        if made_for != sort.value:
            raise InvalidQuery("cursor", f"this cursor was made for sort={made_for}, not sort={sort.value}")
        if not isinstance(trace_id, str) or not isinstance(run_id, str) or "\x00" in trace_id + run_id:
            raise ValueError
        if _SORT_SQL[sort.value.lstrip("-")].cursor_type == "timestamptz":
            value = _utc(datetime.fromisoformat(value), "cursor", str(value))
        elif not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError
        return value, trace_id, run_id
    except InvalidQuery:
        raise
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidQuery("cursor", "is not a cursor this API handed out (use next_cursor as given)") from None


# --- limits -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLimits:
    """What bounds one read, from the API or the CLI (the GLIA_READ_* and GLIA_API_* settings, whose defaults are the
    settings')."""

    statement_timeout_ms: int
    response_bytes: int  # a page of runs, the children of a run, each bag of the run itself
    list_value_chars: int  # a value in a row of /api/runs or a child span
    list_row_bytes: int  # the attributes of a row of /api/runs or a child span
    detail_value_chars: int  # a value of the run itself in /api/runs/{id}

    @classmethod
    def from_settings(cls, settings: ReadSettings) -> ReadLimits:
        """The limits a receiver (Settings) or a command (CommandSettings) was configured with."""
        return cls(
            statement_timeout_ms=settings.read_statement_timeout_ms,
            response_bytes=settings.api_response_bytes,
            list_value_chars=settings.api_list_value_chars,
            list_row_bytes=settings.api_list_row_bytes,
            detail_value_chars=settings.api_detail_value_chars,
        )


def cut_marker(chars: int) -> str:
    """What ends a value cut to `chars` characters."""
    return f"…[cut at {chars} characters]"


def elide(row: dict[str, Any], chars: int) -> dict[str, Any]:
    """Cut the values of a row that are longer than `chars` and mark them, in place; returns the row.

    The queries send a longer value as its first `chars + 1` characters, and say how many entries of a bag (or
    arguments of a command line) they left out in `<name>_dropped`. Each cut value ends in `cut_marker`; the row's
    `elided` lists what was cut (`run_name`, `attributes.key`, `command_args[3]`) or left out (`attributes.*`).
    """
    marker = cut_marker(chars)
    elided: list[str] = []

    def note(where: str) -> None:
        if where not in elided:
            elided.append(where)

    def cut(text: str, where: str) -> str:
        if len(text) <= chars:
            return text
        note(where)
        return text[:chars] + marker

    dropped = {key.removesuffix("_dropped"): row.pop(key) for key in [k for k in row if k.endswith("_dropped")]}
    for key, value in row.items():
        if isinstance(value, str):
            if len(value) > chars:
                row[key] = cut(value, key)
        elif isinstance(value, list):
            row[key] = [cut(v, f"{key}[{i}]") if isinstance(v, str) else v for i, v in enumerate(value)]
        elif isinstance(value, dict):
            if all(len(k) <= chars and not (isinstance(v, str) and len(v) > chars) for k, v in value.items()):
                continue  # the common case: nothing in the bag was cut
            bag: dict[str, Any] = {}
            for name, item in value.items():
                shown = name if len(name) <= chars else name[:chars] + marker
                if shown != name:
                    note(f"{key}.{shown}")
                bag[shown] = cut(item, f"{key}.{shown}") if isinstance(item, str) else item
            row[key] = bag
    for key, count in dropped.items():
        if count:
            elided.append(f"{key}[*]" if isinstance(row.get(key), list) else f"{key}.*")
    row["elided"] = elided
    return row


async def _fetch_within(
    conn: asyncpg.Connection,
    sql: str,
    args: Sequence[Any],
    *,
    rows: int,
    budget: int,
    shape: Callable[[asyncpg.Record], dict[str, Any]],
) -> tuple[list[dict[str, Any]], bool]:
    """At most `rows` rows, stopping after the one whose JSON takes the total past `budget` bytes (so always at
    least one); and whether more rows were there. A cursor, so rows past the budget are never sent or computed."""
    out: list[dict[str, Any]] = []
    size = 0
    async for record in conn.cursor(sql, *args, prefetch=64):
        if len(out) >= rows or size >= budget:
            return out, True
        row = shape(record)
        size += len(orjson.dumps(row))
        out.append(row)
    return out, False


# --- queries ------------------------------------------------------------------------------------------------------


def _row(record: asyncpg.Record) -> dict[str, Any]:
    out = dict(record)
    for key in ("attributes", "resource"):
        if isinstance(out.get(key), str):
            out[key] = orjson.loads(out[key])
    return out


@contextlib.asynccontextmanager
async def reading(conn: asyncpg.Connection, limits: ReadLimits) -> AsyncIterator[RunQueries]:
    """A read-only transaction whose statements each stop after the read timeout (shorter than ingest's, so reads
    cannot hold the connections ingest needs), and the queries to run in it. Open the connection with
    `read_timeout_ms` (`database.connect`, `Database.connection`) so that a timed-out statement is told as such."""
    check_client = conn.get_server_version() >= (14, 0)
    async with conn.transaction(readonly=True):
        await conn.execute(
            _sql("read_settings_check_client" if check_client else "read_settings"), str(limits.statement_timeout_ms)
        )
        yield RunQueries(conn, limits)


class RunQueries:
    """The queries of one read transaction (`reading`), each bounded by its limits."""

    def __init__(self, conn: asyncpg.Connection, limits: ReadLimits) -> None:
        self.conn = conn
        self.limits = limits

    async def list_runs(
        self, flt: RunFilter, sort: Sort = Sort.NEWEST, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs and the cursor of the next page (None on the last page).

        The page ends early, with its cursor, after the run that takes it past `limits.response_bytes`."""
        limits = self.limits
        flt.check()
        after: tuple[Any, str | None, str | None] = (None, None, None)
        if cursor:
            after = decode_cursor(cursor, sort)
        workflow_ids, workflow_run = await self._workflow(flt.workflow)
        args = (
            flt.program,
            flt.user,
            flt.host,
            flt.status,
            flt.exit_code,
            flt.since,
            flt.until,
            orjson.dumps(flt.attrs).decode() if flt.attrs else None,
            flt.script_sha256,
            *after,
            limit + 1,
            limits.list_value_chars,
            limits.list_row_bytes,
            workflow_ids,
            workflow_run,
            flt.name,
        )
        rows, more = await _fetch_within(
            self.conn,
            list_runs_sql(sort),
            args,
            rows=limit,
            budget=limits.response_bytes,
            shape=lambda r: elide(_row(r), limits.list_value_chars),
        )
        next_cursor = encode_cursor(sort, rows[-1]) if more else None
        for row in rows:
            del row["sort_value"]
        return rows, next_cursor

    async def _workflow(self, given: str | None) -> tuple[list[str] | None, str | None]:
        """The workflow_run_ids a `workflow` filter matches, and the run id it may be: the id as given (an engine's
        id), plus, when it reads as a run id, the workflow_run_id of that run (a workflow span's own id)."""
        if given is None:
            return None, None
        if not re.match(RUN_ID_PATTERN, given):
            return [given], None
        run_id = given.lower()
        found = await self.conn.fetch(_sql("workflow_of_run"), run_id)
        return [given, *(r["workflow_run_id"] for r in found if r["workflow_run_id"] != given)], run_id

    async def workflow_tasks(
        self, run: dict[str, Any], below: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], bool]:
        """The other runs of the run's workflow (same workflow_run_id) that are not among `below` (its children), in
        start order, at most MAX_CHILDREN and within `limits.response_bytes`; and whether there were more. Empty
        for a run that belongs to no workflow."""
        workflow_run_id = run.get("workflow_run_id")
        if not workflow_run_id or "workflow_run_id" in run.get("elided", ()):
            return [], False
        limits = self.limits
        shown = {child["span_id"] for child in below}
        rows: list[dict[str, Any]] = []
        size = 0
        args = (workflow_run_id, run["run_id"], MAX_CHILDREN + len(shown) + 1, limits.list_value_chars)
        async for record in self.conn.cursor(_sql("workflow_tasks"), *args, prefetch=64):
            if record["run_id"] in shown and record["trace_id"] == run["trace_id"]:
                continue
            if len(rows) >= MAX_CHILDREN or size >= limits.response_bytes:
                return rows, True
            row = elide(_row(record), limits.list_value_chars)
            size += len(orjson.dumps(row))
            rows.append(row)
        return rows, False

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run with this id (its span id), or None."""
        limits = self.limits
        record = await self.conn.fetchrow(
            _sql("get_run"), run_id.lower(), limits.detail_value_chars, limits.response_bytes
        )
        return elide(_row(record), limits.detail_value_chars) if record else None

    async def run_children(self, run: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """The spans below the run in its trace (each once, depth first, with their depth), at most MAX_CHILDREN and
        up to the span that takes them past `limits.response_bytes`; and whether there were more."""
        limits = self.limits
        args = (run["trace_id"], run["run_id"], MAX_CHILDREN + 1, limits.list_value_chars, limits.list_row_bytes)
        return await _fetch_within(
            self.conn,
            _sql("run_children"),
            args,
            rows=MAX_CHILDREN,
            budget=limits.response_bytes,
            shape=lambda r: elide(_row(r), limits.list_value_chars),
        )

    async def run_tree(self, run: dict[str, Any]) -> None:
        """Add what is below the run to it, in place: `children` (run_children) and, for a workflow span whose
        children were all shown, `workflow_tasks` (its workflow's other runs that are not among them)."""
        run["children"], run["children_truncated"] = await self.run_children(run)
        run["workflow_tasks"], run["workflow_tasks_truncated"] = [], False
        if run.get("run_kind") == "workflow" and not run["children_truncated"]:
            run["workflow_tasks"], run["workflow_tasks_truncated"] = await self.workflow_tasks(run, run["children"])

    async def run_metrics(self, run: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """The run's metric points as series, one per metric name and attribute set, at most MAX_POINTS points; and
        whether some were left out. Series stop after the one whose name, unit and attributes take them past
        `limits.response_bytes` (the points, bounded by their number, do not count)."""
        limits = self.limits
        args = (
            run["service_instance_id"],
            run["started_at"],
            run["ended_at"],
            run["trace_id"],
            run["run_id"],
            limits.list_value_chars,
            limits.list_row_bytes,
            MAX_POINTS + 1,
        )
        series: dict[tuple[str, str], dict[str, Any]] = {}
        size = 0
        points = 0
        async for r in self.conn.cursor(_sql("run_metrics"), *args, prefetch=1000):
            if points == MAX_POINTS:
                return list(series.values()), True
            key = (r["metric_name"], r["attributes"])
            entry = series.get(key)
            if entry is None:
                if size >= limits.response_bytes:
                    return list(series.values()), True
                meta = {
                    "name": r["metric_name"],
                    "unit": r["unit"],
                    "type": r["metric_type"],
                    "attributes": orjson.loads(r["attributes"]),
                    "attributes_dropped": r["attributes_dropped"],
                }
                entry = series[key] = {**elide(meta, limits.list_value_chars), "points": []}
                size += len(orjson.dumps(entry))
            entry["points"].append({"time": r["time"], "value": r["value"]})
            points += 1
        return list(series.values()), False
