"""The query API (`/api/runs`, `/api/runs/{id}`, `/api/runs/{id}/metrics`) and the read-only page at `/`.

The queries themselves (`list_runs`, `get_run`, `run_children`, `run_metrics`) take an asyncpg connection inside
`read_transaction`, so `glia runs` and `glia show` run exactly what the API runs, under the same limits: a statement
timeout of their own, values cut at a length with a marker, and pages that stop at a byte budget (`ReadLimits`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from . import auth, queries, store
from .errors import Unavailable
from .settings import Settings

T = TypeVar("T")
log = logging.getLogger("glia.api")

PAGE_DIR = Path(__file__).parent / "page"
PAGE_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
RUN_ID_PATTERN = r"^[0-9a-fA-F]{16}$"
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LIMIT = 500
MAX_CHILDREN = 1000
MAX_POINTS = 100_000
DATA_EXCEPTION = "22"  # SQLSTATE class: a value PostgreSQL cannot take, answered 422 on /api


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
def _list_runs_sql(sort: Sort) -> str:
    column = sort.value.lstrip("-")
    spec = _SORT_SQL[column]
    descending = sort.value.startswith("-")
    return queries.load("api.sql")["list_runs"].format(
        sort_expr=spec.sort_expr,
        cursor_type=spec.cursor_type,
        direction="DESC" if descending else "ASC",
        cmp="<" if descending else ">",
    )


class InvalidQuery(ValueError):
    """A query parameter that cannot be used; `param` names it for the 422 answer."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


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

    def check(self) -> None:
        """Raise InvalidQuery for values PostgreSQL would refuse (NUL characters) or that cannot match."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and "\x00" in value:
                raise InvalidQuery(f.name, "must not contain NUL characters")
        if self.attrs and _has_nul(self.attrs):
            # checked on the parsed values: the JSON text spells a NUL as \u0000, which jsonb refuses
            raise InvalidQuery("attr", "must not contain NUL characters")
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
    """What bounds one read, from the API or the CLI (the GLIA_READ_* and GLIA_API_* settings)."""

    statement_timeout_ms: int = 10_000
    response_bytes: int = 4 * 1024 * 1024  # a page of runs, the children of a run, each bag of the run itself
    list_value_chars: int = 4096  # a value in a row of /api/runs or a child span
    list_row_bytes: int = 64 * 1024  # the attributes of a row of /api/runs or a child span
    detail_value_chars: int = 65536  # a value of the run itself in /api/runs/{id}

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadLimits:
        """The limits a receiver or a CLI command was configured with."""
        return cls(
            statement_timeout_ms=settings.read_statement_timeout_ms,
            response_bytes=settings.api_response_bytes,
            list_value_chars=settings.api_list_value_chars,
            list_row_bytes=settings.api_list_row_bytes,
            detail_value_chars=settings.api_detail_value_chars,
        )

    def timeout_message(self, exc: BaseException) -> str:
        """What a read cancelled by its statement timeout tells the user."""
        return (
            f"the query did not finish within the read timeout of {self.statement_timeout_ms / 1000:g} s"
            f" (GLIA_READ_STATEMENT_TIMEOUT_MS) and was cancelled: narrow it (a since/until range, a program) or"
            f" retry later (PostgreSQL: {exc})"
        )


@contextlib.asynccontextmanager
async def read_transaction(conn: asyncpg.Connection, limits: ReadLimits) -> AsyncIterator[asyncpg.Connection]:
    """A read-only transaction whose statements each stop after the read timeout (shorter than ingest's, so reads
    cannot hold the connections ingest needs). A timed-out statement raises `asyncpg.QueryCanceledError`."""
    sql = queries.load("api.sql")
    check_client = conn.get_server_version() >= (14, 0)
    async with conn.transaction(readonly=True):
        await conn.execute(
            sql["read_settings_check_client" if check_client else "read_settings"], str(limits.statement_timeout_ms)
        )
        yield conn


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


async def list_runs(
    conn: asyncpg.Connection,
    flt: RunFilter,
    sort: Sort = Sort.NEWEST,
    limit: int = 50,
    cursor: str | None = None,
    limits: ReadLimits = ReadLimits(),
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs and the cursor of the next page (None on the last page); inside `read_transaction`.

    The page ends early, with its cursor, after the run that takes it past `limits.response_bytes`."""
    flt.check()
    after: tuple[Any, str | None, str | None] = (None, None, None)
    if cursor:
        after = decode_cursor(cursor, sort)
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
    )
    rows, more = await _fetch_within(
        conn,
        _list_runs_sql(sort),
        args,
        rows=limit,
        budget=limits.response_bytes,
        shape=lambda r: elide(_row(r), limits.list_value_chars),
    )
    next_cursor = encode_cursor(sort, rows[-1]) if more else None
    for row in rows:
        del row["sort_value"]
    return rows, next_cursor


async def get_run(
    conn: asyncpg.Connection,
    run_id: str,
    limits: ReadLimits = ReadLimits(),
) -> dict[str, Any] | None:
    """The run with this id (its span id), or None; inside `read_transaction`."""
    record = await conn.fetchrow(
        queries.load("api.sql")["get_run"], run_id.lower(), limits.detail_value_chars, limits.response_bytes
    )
    return elide(_row(record), limits.detail_value_chars) if record else None


async def run_children(
    conn: asyncpg.Connection,
    run: dict[str, Any],
    limits: ReadLimits = ReadLimits(),
) -> tuple[list[dict[str, Any]], bool]:
    """The spans below the run in its trace (each once, depth first, with their depth), at most MAX_CHILDREN and
    up to the span that takes them past `limits.response_bytes`; and whether there were more."""
    args = (run["trace_id"], run["run_id"], MAX_CHILDREN + 1, limits.list_value_chars, limits.list_row_bytes)
    return await _fetch_within(
        conn,
        queries.load("api.sql")["run_children"],
        args,
        rows=MAX_CHILDREN,
        budget=limits.response_bytes,
        shape=lambda r: elide(_row(r), limits.list_value_chars),
    )


async def run_metrics(
    conn: asyncpg.Connection,
    run: dict[str, Any],
    limits: ReadLimits = ReadLimits(),
) -> tuple[list[dict[str, Any]], bool]:
    """The run's metric points as series, one per metric name and attribute set, at most MAX_POINTS points; and
    whether some were left out. Series stop after the one whose name, unit and attributes take them past
    `limits.response_bytes` (the points, bounded by their number, do not count)."""
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
    async for r in conn.cursor(queries.load("api.sql")["run_metrics"], *args, prefetch=1000):
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


# --- HTTP ---------------------------------------------------------------------------------------------------------


class RunSummary(BaseModel):
    """A row of /api/runs."""

    run_id: str = Field(description="the span id: 16 hex digits")
    trace_id: str
    parent_run_id: str | None
    run_name: str
    program_name: str | None = Field(description="service.name")
    run_kind: str | None = Field(description="block, function or command; null for a plain root span")
    user_name: str | None
    host_name: str | None
    status: str = Field(description="ok, error or unset")
    status_message: str | None
    exit_code: int | None
    started_at: datetime
    ended_at: datetime
    wall_seconds: float
    cpu_seconds: float | None
    cpu_percent: float | None
    peak_rss_bytes: int | None
    peak_rss_method: str | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    script_path: str | None
    script_sha256: str | None
    attributes: dict[str, Any] = Field(description="the run's custom values and other span attributes")
    elided: list[str] = Field(
        description="what was cut short (`run_name`, `attributes.key`; the value ends in '…[cut at N characters]') or"
        " left out (`attributes.*`) to keep the answer bounded; empty when nothing was"
    )


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page. A page can hold fewer than `limit`"
        " runs and still have a next page: it ends early at a byte budget"
    )


class ChildSpan(BaseModel):
    span_id: str
    parent_span_id: str | None
    depth: int = Field(description="1 for a direct child of the run")
    name: str
    kind: int
    run_kind: str | None
    status: str
    status_message: str | None
    started_at: datetime
    ended_at: datetime
    wall_seconds: float
    peak_rss_bytes: int | None
    attributes: dict[str, Any]
    elided: list[str] = Field(description="what was cut short (`name`, `attributes.key`) or left out (`attributes.*`)")


class RunDetail(RunSummary):
    """A run with every column of the runs view and the spans below it."""

    runtime: str | None
    os_type: str | None
    command_args: list[str] | None
    working_directory: str | None
    cpu_user_seconds: float | None
    cpu_system_seconds: float | None
    max_rss_kb: int | None
    service_instance_id: str | None
    resource: dict[str, Any]
    children: list[ChildSpan]
    children_truncated: bool = Field(
        description=f"more spans are below the run than shown: past {MAX_CHILDREN}, or past the byte budget"
    )


class Point(BaseModel):
    time: datetime
    value: float | None


class MetricSeries(BaseModel):
    name: str = Field(description="e.g. process.memory.usage, process.cpu.time")
    unit: str | None
    type: str
    attributes: dict[str, Any]
    elided: list[str] = Field(description="what was cut short (`name`, `attributes.key`) or left out (`attributes.*`)")
    points: list[Point]


class RunMetrics(BaseModel):
    run_id: str
    series: list[MetricSeries]
    truncated: bool = Field(
        description=f"some points are not shown: past {MAX_POINTS}, or their series past the byte budget"
    )


class ErrorDetail(BaseModel):
    detail: Any


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _invalid(exc: InvalidQuery) -> HTTPException:
    return HTTPException(422, [{"loc": ["query", exc.param], "msg": exc.message, "type": "value_error"}])


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready; its query was cancelled."""


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away (the body of a GET is empty: the next message is the disconnect)."""
    with contextlib.suppress(Exception):  # a receive that fails has lost its client too
        while (await request.receive())["type"] != "http.disconnect":
            pass


async def _read(request: Request, work: Callable[[asyncpg.Connection, ReadLimits], Awaitable[T]]) -> T:
    """Run `work` on a pooled connection inside `read_transaction`, cancelling it if the client goes away.

    Starlette does not cancel a handler whose client disconnected; cancelling the task makes asyncpg send
    PostgreSQL a cancel request, so the query stops there too. A database that is away or busy, or a query past
    the read timeout, raises `Unavailable` (503 + Retry-After, as on ingest); a data exception (SQLSTATE class 22) is
    left to the app's handler, which answers 422.
    """
    settings: Settings = request.app.state.settings
    limits = ReadLimits.from_settings(settings)

    async def go() -> T:
        async with store.connection(
            request.app.state.pool, settings.pool_acquire_timeout, passthrough=(DATA_EXCEPTION,)
        ) as conn:
            try:
                async with read_transaction(conn, limits):
                    return await work(conn, limits)
            except asyncpg.QueryCanceledError as exc:
                raise Unavailable(limits.timeout_message(exc)) from None

    task = asyncio.ensure_future(go())
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        log.debug("%s: the client went away; its query was cancelled", request.url.path)
        raise ClientGone
    return task.result()


async def _answer(request: Request, work: Callable[[asyncpg.Connection, ReadLimits], Awaitable[Any]]) -> Response:
    """`work`'s result as JSON, or, when the client went away meanwhile, an answer nobody will read."""
    try:
        return _json(await _read(request, work))
    except ClientGone:
        # uvicorn drops what is sent to a closed connection; 499 is the status proxies log for this case
        return Response(status_code=499)


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "no API key, or an unknown or revoked one (when keys exist)"},
    403: {"model": ErrorDetail, "description": "an API key without the read scope"},
    503: {
        "model": ErrorDetail,
        "description": "the database is unreachable or busy; retry after Retry-After",
    },
}

router = APIRouter()
api = APIRouter(prefix="/api", tags=["runs"], dependencies=[Depends(auth.require("read"))])

Text = Annotated[str | None, Query(max_length=1000)]


@api.get(
    "/runs",
    summary="runs, newest first, filtered and paged",
    response_model=RunPage,
    responses=_AUTH_RESPONSES,
)
async def runs_endpoint(
    request: Request,
    program: Annotated[str | None, Query(max_length=1000, description="service.name of the runs")] = None,
    service: Annotated[str | None, Query(max_length=1000, description="the same as program")] = None,
    user: Annotated[str | None, Query(max_length=1000, description="process.owner")] = None,
    host: Annotated[str | None, Query(max_length=1000, description="host.name")] = None,
    status: Annotated[str | None, Query(pattern="^(ok|error|unset)$", description="ok, error or unset")] = None,
    exit_code: Annotated[int | None, Query(ge=-(2**31), le=2**31 - 1)] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="started at or after: ISO 8601 time or an age (7d, 12h)")
    ] = None,
    until: Annotated[str | None, Query(max_length=64, description="started before: ISO 8601 time or an age")] = None,
    attr: Annotated[
        list[str],
        Query(
            max_length=50,
            description="custom value, key=value, repeatable; the value is matched with its JSON type when it "
            'reads as JSON (1000, true, "1000"), else as a string',
        ),
    ] = [],  # noqa: B006 - FastAPI copies defaults
    script_sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    sort: Annotated[Sort, Query(description="sort key; a leading '-' means descending")] = Sort.NEWEST,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")] = None,
) -> Response:
    """Runs matching every given filter, in `sort` order, `limit` at a time (keyset pagination)."""
    if program and service and program != service:
        raise _invalid(InvalidQuery("service", "program and service name the same filter; give one"))
    try:
        flt = RunFilter(
            program=program or service,
            user=user,
            host=host,
            status=status,
            exit_code=exit_code,
            since=parse_when(since, "since") if since else None,
            until=parse_when(until, "until") if until else None,
            attrs=parse_attrs(attr),
            script_sha256=script_sha256,
        )

        async def work(conn: asyncpg.Connection, limits: ReadLimits) -> dict[str, Any]:
            rows, next_cursor = await list_runs(conn, flt, sort, limit, cursor, limits)
            return {"runs": rows, "next_cursor": next_cursor}

        return await _answer(request, work)
    except InvalidQuery as exc:
        raise _invalid(exc) from None


async def _run_or_404(conn: asyncpg.Connection, run_id: str, limits: ReadLimits) -> dict[str, Any]:
    run = await get_run(conn, run_id, limits)
    if run is None:
        raise HTTPException(404, f"no run with id {run_id}")
    return run


RunId = Annotated[str, PathParam(pattern=RUN_ID_PATTERN, description="the run's span id: 16 hex digits")]


@api.get(
    "/runs/{run_id}",
    summary="one run with every attribute and the spans below it",
    response_model=RunDetail,
    responses={404: {"model": ErrorDetail, "description": "no run with this id"}, **_AUTH_RESPONSES},
)
async def run_endpoint(request: Request, run_id: RunId) -> Response:
    """The run and its child spans (each once, depth first, at most 1000), within the byte budgets."""

    async def work(conn: asyncpg.Connection, limits: ReadLimits) -> dict[str, Any]:
        run = await _run_or_404(conn, run_id, limits)
        run["children"], run["children_truncated"] = await run_children(conn, run, limits)
        return run

    return await _answer(request, work)


@api.get(
    "/runs/{run_id}/metrics",
    summary="the run's metric points over time (memory, CPU, ...)",
    response_model=RunMetrics,
    responses={404: {"model": ErrorDetail, "description": "no run with this id"}, **_AUTH_RESPONSES},
)
async def run_metrics_endpoint(request: Request, run_id: RunId) -> Response:
    """The points its process reported while the run was going, one series per metric and attribute set."""

    async def work(conn: asyncpg.Connection, limits: ReadLimits) -> dict[str, Any]:
        run = await _run_or_404(conn, run_id, limits)
        series, truncated = await run_metrics(conn, run, limits)
        return {"run_id": run["run_id"], "series": series, "truncated": truncated}

    return await _answer(request, work)


router.include_router(api)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The read-only page; it holds no data itself (the data comes from /api, which checks the key)."""
    return FileResponse(PAGE_DIR / "index.html", media_type="text/html")


@router.get("/page/{name}", include_in_schema=False)
async def page_asset(name: str) -> FileResponse:
    media_type = PAGE_ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no page asset {name!r}")
    return FileResponse(PAGE_DIR / name, media_type=media_type)
