"""Decoded OTLP messages -> rows: known attributes into typed columns, the rest into JSONB.

The attribute contract is docs/attributes.md; the workflow, task, scheduler and requested-resource attributes
(`SPAN_OR_RESOURCE`) are read from the span, else from its resource. A known attribute whose value has the wrong
type (and cannot be read as the right one) stays in the JSONB bag instead of its column, so nothing a client sent
is lost. Spans start from `earliest_span_date` (old history is stored) to a few days ahead. Limits protect
PostgreSQL from hostile spans: strings over `max_attribute_value_bytes` are cut, attribute values and free text alike
(span and event names, status messages, scope fields, metric units; the keys and fields are listed in the span's or
point's `glia.receiver.truncated` attribute and in partial_success), attributes past `max_attributes_per_span` and
events past `max_events_per_span` are dropped and counted in `dropped_attributes_count`.

What cannot be stored is rejected here, item by item, with the field named: a number that does not fit its column
(`NUMERIC_LIMITS`), and an identifying value too long for its index (`INDEXED_TEXT`). Rows come out in chunks
(`span_chunks`, `metric_chunks`) so a large request never holds all its rows at once.
"""

from __future__ import annotations

import base64
import hashlib
import math
import operator
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .decode import Report, ResourceMetrics, ResourceSpans

if TYPE_CHECKING:
    from .settings import Settings

NS_PER_DAY = 86_400 * 10**9

# Resource attribute -> (column, type). Order is the order of the columns in SPAN_COLUMNS.
RESOURCE_COLUMNS: dict[str, tuple[str, str]] = {
    "service.name": ("service_name", "str"),
    "service.instance.id": ("service_instance_id", "str"),
    "host.name": ("host_name", "str"),
    "host.arch": ("host_arch", "str"),
    "os.type": ("os_type", "str"),
    "os.description": ("os_description", "str"),
    "process.pid": ("process_pid", "int"),
    "process.parent_pid": ("process_parent_pid", "int"),
    "process.executable.name": ("process_executable_name", "str"),
    "process.executable.path": ("process_executable_path", "str"),
    "process.command_args": ("process_command_args", "strlist"),
    "process.owner": ("process_owner", "str"),
    "process.working_directory": ("process_working_directory", "str"),
    "process.runtime.name": ("process_runtime_name", "str"),
    "process.runtime.version": ("process_runtime_version", "str"),
    "glia.script.path": ("script_path", "str"),
    "glia.script.sha256": ("script_sha256", "str"),
}

# Span attribute -> (column, type).
SPAN_ATTRIBUTE_COLUMNS: dict[str, tuple[str, str]] = {
    "glia.run.kind": ("run_kind", "str"),
    "process.exit.code": ("exit_code", "int32"),
    "glia.cpu.user_seconds": ("cpu_user_seconds", "float"),
    "glia.cpu.system_seconds": ("cpu_system_seconds", "float"),
    "glia.cpu.percent": ("cpu_percent", "float"),
    "glia.memory.peak_rss_bytes": ("peak_rss_bytes", "int"),
    "glia.memory.peak_rss_method": ("peak_rss_method", "str"),
    "glia.memory.tree_peak_bytes": ("tree_peak_bytes", "int"),
    "glia.memory.tree_peak_method": ("tree_peak_method", "str"),
    "glia.memory.oom_kills": ("oom_kills", "int32"),
    "glia.io.read_bytes": ("io_read_bytes", "int"),
    "glia.io.write_bytes": ("io_write_bytes", "int"),
    # workflow engines and batch schedulers (revision 0004): these may come on the resource too (SPAN_OR_RESOURCE)
    "glia.workflow.engine": ("workflow_engine", "str"),
    "glia.workflow.run_id": ("workflow_run_id", "str"),
    "glia.workflow.name": ("workflow_name", "str"),
    "glia.task.name": ("task_name", "str"),
    "glia.task.attempt": ("task_attempt", "int32"),
    "glia.scheduler.name": ("scheduler", "str"),
    "glia.scheduler.job_id": ("scheduler_job_id", "str"),
    "glia.requested.memory_bytes": ("requested_memory_bytes", "int"),
    "glia.requested.cpus": ("requested_cpus", "float"),
    "glia.requested.seconds": ("requested_seconds", "float"),
    # live runs (revision 0006): the memory a start record's heartbeat reported
    "glia.memory.rss_bytes": ("last_rss_bytes", "int"),
}

# Live runs (docs/attributes.md, "Live runs"): a span whose glia.run.state is one of these is a record of a run
# still going (its start record, or a heartbeat), with no end (its end_time_unix_nano is 0 on the wire and means
# nothing); its row has no end time until the final span, with the same trace id, span id and start time, replaces
# it. Any other span is final, as every stock OpenTelemetry span is.
RUN_STATE = "glia.run.state"
UNFINISHED_STATES = frozenset({"started", "running"})
HEARTBEAT_TIME = "glia.run.heartbeat_unix_nano"  # when the client made the record (its clock, ns since the epoch)

# Span attributes that may be resource attributes instead: a scheduler's context is the process's (every client puts
# it on the resource), a task's request or workflow may be either (a `glia run` task told by OTEL_RESOURCE_ATTRIBUTES,
# an application whose resource is its own). The span's value wins; a resource's value stays in the resource bag as
# well, since the resource is shared by spans that may carry their own.
SPAN_OR_RESOURCE: tuple[str, ...] = (
    "glia.workflow.engine",
    "glia.workflow.run_id",
    "glia.workflow.name",
    "glia.task.name",
    "glia.task.attempt",
    "glia.scheduler.name",
    "glia.scheduler.job_id",
    "glia.requested.memory_bytes",
    "glia.requested.cpus",
    "glia.requested.seconds",
)

SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "start_time",
    "parent_span_id",
    "trace_state",
    "name",
    "kind",
    "status_code",
    "status_message",
    "end_time",
    "start_time_unix_nano",
    "duration_ns",
    "scope_name",
    "scope_version",
    *(col for col, _ in RESOURCE_COLUMNS.values()),
    *(col for col, _ in SPAN_ATTRIBUTE_COLUMNS.values()),
    "attributes",
    "resource",
    "events",
    "links",
    "dropped_attributes_count",
    "heartbeat_at",
)

METRIC_COLUMNS: tuple[str, ...] = (
    "point_id",
    "time",
    "time_unix_nano",
    "start_time_unix_nano",
    "metric_name",
    "unit",
    "metric_type",
    "value",
    "count",
    "data",
    "is_monotonic",
    "service_name",
    "service_instance_id",
    "trace_id",
    "span_id",
    "attributes",
    "resource",
    "scope_name",
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
SMALLINT_MIN, SMALLINT_MAX = -(2**15), 2**15 - 1

# The numeric columns a request's numbers land in, and their PostgreSQL types: a number outside its type's range
# rejects its item by name (asyncpg would raise OverflowError inside COPY and fail the whole batch).
NUMERIC_LIMITS: dict[str, tuple[str, int, int]] = {
    "kind": ("smallint", SMALLINT_MIN, SMALLINT_MAX),
    "status.code": ("smallint", SMALLINT_MIN, SMALLINT_MAX),
    "dropped_attributes_count": ("integer", INT32_MIN, INT32_MAX),
    "duration_ns": ("bigint", INT64_MIN, INT64_MAX),
    "start_time_unix_nano": ("bigint", INT64_MIN, INT64_MAX),
    "count": ("bigint", INT64_MIN, INT64_MAX),
}

# Identifying values in btree-indexed text columns. PostgreSQL refuses an index entry over 2,704 bytes (8 KiB pages),
# and a refused row used to cost its whole batch; a value over MAX_INDEXED_BYTES rejects its item (every span of the
# resource, every point of the metric) instead of being cut, since cutting would merge distinct hosts or programs into
# one. Table -> column -> what the client calls it. Every btree index over a text column of receiver/sql/schema.sql
# must have its columns here or in FIXED_TEXT (tests/unit/test_receiver_pure.py reads the schema to check), and one
# index's columns must fit together: at most two unbounded ones per index at this limit.
MAX_INDEXED_BYTES = 1024
INDEXED_TEXT: dict[str, dict[str, str]] = {
    "spans": {
        "service_name": "service.name",
        "host_name": "host.name",
        "process_owner": "process.owner",
        "script_sha256": "glia.script.sha256",
        "workflow_run_id": "glia.workflow.run_id",
    },
    "metric_points": {
        "metric_name": "metric name",
        "service_instance_id": "service.instance.id",
        "trace_id": "glia.trace_id",
        "span_id": "glia.span_id",
    },
    "log_records": {},  # flatten_logs.py: only the ids are indexed
}
# Indexed text columns whose values are bounded by construction: hex of ids whose length flatten checks.
FIXED_TEXT: dict[str, set[str]] = {
    "spans": {"trace_id", "span_id", "parent_span_id"},
    "metric_points": set(),
    "log_records": {"trace_id", "span_id"},
}

TRUNCATED = "glia.receiver.truncated"  # the attribute listing what was cut


@dataclass(frozen=True)
class Limits:
    """What one span may carry; see Settings for the defaults."""

    max_attributes: int = 2048
    max_value_bytes: int = 64 * 1024
    max_events: int = 1024
    max_age_days: int | None = None  # besides earliest: refuse spans older than this many days
    max_future_days: int = 31
    earliest: date = date(2000, 1, 1)  # the first UTC day a span may start on

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits a receiver was configured with (the GLIA_MAX_* settings)."""
        return cls(
            max_attributes=settings.max_attributes_per_span,
            max_value_bytes=settings.max_attribute_value_bytes,
            max_events=settings.max_events_per_span,
            max_age_days=settings.max_span_age_days,
            max_future_days=settings.max_span_future_days,
            earliest=settings.earliest_span_date,
        )


@dataclass
class Rows:
    """Rows ready for the database, the partition months they touch, and what was rejected or cut and why."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    months: set[datetime] = field(default_factory=set)
    report: Report = field(default_factory=Report)

    @property
    def rejected(self) -> int:
        return self.report.rejected

    @property
    def errors(self) -> list[str]:
        return self.report.errors


class _Unfit(Exception):
    """An item that cannot be stored; the message names the field and its value."""


class _Bag:
    """Converts OTLP key-values into a JSON-ready dict, applying the limits."""

    __slots__ = ("dropped", "limits", "truncated_keys")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.dropped = 0
        self.truncated_keys: list[str] = []

    def convert(self, kvs: Sequence[KeyValue], max_items: int) -> dict[str, Any]:
        if len(kvs) > max_items:
            self.dropped += len(kvs) - max_items
            kvs = kvs[:max_items]
        out: dict[str, Any] = {}
        short = self.limits.max_value_bytes // 4  # a string this long cannot be over the limit in UTF-8
        # the hot path of ingest: plain strings and ints inline, everything else through value()
        for kv in kvs:
            key = kv.key
            if "\x00" in key:
                key = _clean(key)
            v = kv.value
            which = v.WhichOneof("value")
            if which == "string_value":
                text = v.string_value
                if len(text) <= short and "\x00" not in text:
                    out[key] = text
                    continue
            elif which == "int_value":
                out[key] = v.int_value
                continue
            out[key] = self.value(v, key)
        return out

    def value(self, v: AnyValue, key: str) -> Any:
        which = v.WhichOneof("value")
        if which == "string_value":
            return self.text(v.string_value, key)
        if which == "int_value" or which == "bool_value":
            return getattr(v, which)
        if which == "double_value":
            d = v.double_value
            return d if math.isfinite(d) else str(d)  # JSON has no NaN or infinity
        if which == "array_value":
            return [self.value(item, key) for item in v.array_value.values]
        if which == "kvlist_value":
            return {_clean(kv.key): self.value(kv.value, key) for kv in v.kvlist_value.values}
        if which == "bytes_value":
            return base64.b64encode(v.bytes_value).decode()
        return None

    def text(self, s: str, marker: str) -> str:
        """`s` without NUL and cut to the value limit on a character boundary; a cut is recorded as `marker`."""
        s = _clean(s)
        limit = self.limits.max_value_bytes
        if len(s) * 4 > limit:
            encoded = s.encode()
            if len(encoded) > limit:
                s = encoded[:limit].decode(errors="ignore")
                self.truncated_keys.append(marker)
        return s


def _clean(s: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


def _check(field_name: str, value: int, shown: str | None = None) -> None:
    """Raise _Unfit unless `value` fits the column type of `field_name`."""
    kind, low, high = NUMERIC_LIMITS[field_name]
    if not low <= value <= high:
        raise _Unfit(f"{shown or f'{field_name} {value}'} does not fit its column ({kind}, {low}..{high})")


def _overlong(value: str | None) -> int | None:
    """The UTF-8 size of an identifying value over MAX_INDEXED_BYTES, or None when it fits."""
    if value is None or len(value) * 4 <= MAX_INDEXED_BYTES:
        return None
    size = len(value.encode())
    return size if size > MAX_INDEXED_BYTES else None


def _over_index_limit(name: str, size: int) -> str:
    return f"{name} is {size} bytes, over the {MAX_INDEXED_BYTES}-byte limit for indexed values"


def _coerce(value: Any, kind: str) -> Any:
    """`value` as the column type `kind`, or None when it cannot be read as one."""
    if value is None or isinstance(value, dict):
        return None
    if kind == "str":
        return value if isinstance(value, str) else None
    if kind in ("int", "int32"):
        if isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                return None
        if not isinstance(value, int):
            return None
        low, high = (INT32_MIN, INT32_MAX) if kind == "int32" else (INT64_MIN, INT64_MAX)
        return value if low <= value <= high else None
    if kind == "float":
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return None
            return f if math.isfinite(f) else None
        return None
    if kind == "strlist":
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return value
        return None
    raise ValueError(f"unknown column kind {kind!r}")


def _split(bag: dict[str, Any], columns: dict[str, tuple[str, str]]) -> list[Any]:
    """Pop the contract's attributes out of `bag` into column values (in contract order)."""
    if bag.keys().isdisjoint(columns):
        return [None] * len(columns)  # a span from an application that glia does not track
    values = []
    for key, (_, kind) in columns.items():
        raw = bag.get(key)
        value = _coerce(raw, kind) if raw is not None else None
        if value is not None:
            del bag[key]
        values.append(value)
    return values


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def month_of(ns: int) -> datetime:
    """The first instant of the UTC month holding `ns`: the partition a row goes to."""
    day = ns // NS_PER_DAY
    month = _MONTHS.get(day)
    if month is None:
        t = _time(ns)
        month = _MONTHS[day] = datetime(t.year, t.month, 1, tzinfo=UTC)
        if len(_MONTHS) > 4096:
            _MONTHS.clear()
    return month


_MONTHS: dict[int, datetime] = {}


def months(times: Iterable[int], limits: Limits, now_ns: int) -> set[datetime]:
    """The partition months of the times inside the accepted window (the others are rejected)."""
    earliest, latest = _window(limits, now_ns)
    out: set[datetime] = set()
    last_day = None
    for ns in times:
        if earliest <= ns <= latest:
            day = ns // NS_PER_DAY
            if day != last_day:  # a batch's times are mostly one day
                out.add(month_of(ns))
                last_day = day
    return out


def _window(limits: Limits, now_ns: int) -> tuple[int, int]:
    """The first and last start time accepted (nanoseconds): from the earliest day, or the age limit when that is
    later, to the days ahead allowed."""
    earliest = (limits.earliest.toordinal() - _EPOCH_ORDINAL) * NS_PER_DAY
    if limits.max_age_days is not None:
        earliest = max(earliest, now_ns - limits.max_age_days * NS_PER_DAY)
    return earliest, now_ns + limits.max_future_days * NS_PER_DAY


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _cut_message(where: str, keys: list[str], limits: Limits) -> str:
    fields = ", ".join(sorted(set(keys)))
    return f"{where}: cut {fields} to {limits.max_value_bytes} bytes (stored, listed in {TRUNCATED})"


@dataclass
class _ResourcePart:
    columns: list[Any]
    json: str
    cut: list[str]
    problem: str | None
    # (position in the span attribute columns, value) of the resource's SPAN_OR_RESOURCE attributes
    fallback: list[tuple[int, Any]]


_SPAN_IDENTIFYING = [
    (i, key) for i, (key, (column, _)) in enumerate(RESOURCE_COLUMNS.items()) if column in INDEXED_TEXT["spans"]
]
_SPAN_ATTRIBUTE_INDEX = {key: i for i, key in enumerate(SPAN_ATTRIBUTE_COLUMNS)}
_FALLBACK = [(_SPAN_ATTRIBUTE_INDEX[key], key, SPAN_ATTRIBUTE_COLUMNS[key][1]) for key in SPAN_OR_RESOURCE]
# Span attribute columns whose values are indexed: checked on each span, since the value may be the resource's.
_ATTRIBUTE_IDENTIFYING = [
    (i, key) for i, (key, (column, _)) in enumerate(SPAN_ATTRIBUTE_COLUMNS.items()) if column in INDEXED_TEXT["spans"]
]


def _resource_part(resource: Resource, limits: Limits) -> _ResourcePart:
    bag = _Bag(limits)
    attributes = bag.convert(resource.attributes, limits.max_attributes)
    columns = _split(attributes, RESOURCE_COLUMNS)
    problem = None
    for i, key in _SPAN_IDENTIFYING:
        size = _overlong(columns[i])
        if size is not None:
            problem = "resource attribute " + _over_index_limit(key, size)
            break
    fallback = []
    for i, key, kind in _FALLBACK:
        raw = attributes.get(key)
        value = _coerce(raw, kind) if raw is not None else None
        if value is not None:
            fallback.append((i, value))
    return _ResourcePart(columns, _dumps(attributes), [f"resource.{k}" for k in bag.truncated_keys], problem, fallback)


def _scope_part(scope: Any, limits: Limits) -> tuple[str | None, str | None, list[str]]:
    bag = _Bag(limits)
    name = bag.text(scope.name, "scope.name") or None
    version = bag.text(scope.version, "scope.version") or None
    return name, version, bag.truncated_keys


def _chunk_size(chunk_rows: int, total: int) -> int:
    # Each chunk is written under its own savepoint, and a transaction with more than 64 subtransactions makes every
    # other session's snapshot check pg_subtrans: a request is cut into at most about 48 chunks.
    return max(chunk_rows, -(-total // 48))


def span_months(batches: list[ResourceSpans], limits: Limits, now_ns: int) -> set[datetime]:
    """The partition months a request's spans need; call before span_chunks, which consumes JSON items."""
    from .decode import span_start_times

    return months(span_start_times(batches), limits, now_ns)


def span_chunks(
    batches: list[ResourceSpans], limits: Limits, now_ns: int, report: Report, chunk_rows: int = 4096
) -> Iterator[list[tuple[Any, ...]]]:
    """Flatten decoded spans into lists of rows in SPAN_COLUMNS order; spans that cannot be stored are rejected into
    `report`, values cut to the limits are reported there as warnings."""
    earliest, latest = _window(limits, now_ns)
    size = _chunk_size(chunk_rows, sum(len(ss.items) for rs in batches for ss in rs.scopes))
    chunk: list[tuple[Any, ...]] = []
    for r, rs in enumerate(batches):
        resource = _resource_part(rs.resource, limits)
        if resource.problem:
            total = sum(len(ss.items) for ss in rs.scopes)
            report.reject(total, f"resourceSpans[{r}]: {resource.problem} ({total} spans rejected)")
            continue
        for s, ss in enumerate(rs.scopes):
            scope_name, scope_version, scope_cut = _scope_part(ss.scope, limits)
            for n, span in ss.each(report):
                try:
                    problem = _span_problem(span, earliest, latest)
                    if problem:
                        raise _Unfit(problem)
                    row, cut = _span_row(span, scope_name, scope_version, resource, limits, scope_cut, now_ns)
                except _Unfit as exc:
                    where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                    report.reject(1, f"{where} (name {span.name[:60]!r}): {exc}")
                    continue
                if cut:
                    report.warn(_cut_message(f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]", cut, limits))
                chunk.append(row)
                if len(chunk) >= size:
                    yield in_key_order(chunk)
                    chunk = []
    if chunk:
        yield in_key_order(chunk)


_KEY = operator.itemgetter(0, 1, 2)  # trace_id, span_id, start_time: the primary key (start_time in µs)
_END_TIME = SPAN_COLUMNS.index("end_time")
_HEARTBEAT_AT = SPAN_COLUMNS.index("heartbeat_at")


def in_key_order(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Span rows sorted by their primary key with one row per key, as one statement must write them: a key written
    twice by one `INSERT ... ON CONFLICT DO UPDATE` is an error, and receivers that write overlapping rows in the
    same order never deadlock on each other. Of a key's rows the final one wins, else the latest heartbeat (the
    merge store.sql's insert_spans does with rows already stored)."""
    rows.sort(key=_KEY)
    out: list[tuple[Any, ...]] = []
    last = None
    for row in rows:
        key = _KEY(row)
        if key != last:
            out.append(row)
            last = key
        elif _supersedes(row, out[-1]):
            out[-1] = row
    return out


def _supersedes(new: tuple[Any, ...], old: tuple[Any, ...]) -> bool:
    if old[_END_TIME] is not None:
        return False  # a final row is never replaced (a resent final is the same span)
    if new[_END_TIME] is not None:
        return True
    return bool(new[_HEARTBEAT_AT] > old[_HEARTBEAT_AT])


def span_rows(batches: list[ResourceSpans], limits: Limits, now_ns: int) -> Rows:
    """All of a request's span rows at once (span_chunks is what the receiver uses)."""
    out = Rows(months=span_months(batches, limits, now_ns))
    for chunk in span_chunks(batches, limits, now_ns, out.report):
        out.rows += chunk
    return out


_NO_TRACE_ID, _NO_SPAN_ID = bytes(16), bytes(8)


def _span_problem(span: Span, earliest: int, latest: int) -> str | None:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _NO_TRACE_ID:
        return f"trace_id must be 16 bytes and not all zero (got {len(trace_id)} bytes)"
    if len(span_id) != 8 or span_id == _NO_SPAN_ID:
        return f"span_id must be 8 bytes and not all zero (got {len(span_id)} bytes)"
    if parent and len(parent) != 8:
        return f"parent_span_id must be empty or 8 bytes (got {len(parent)} bytes)"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not earliest <= start <= latest:
        return (
            f"start_time_unix_nano {start} ({_time(start).isoformat() if start else 'unset'}) is outside "
            f"the accepted window {_time(earliest).date()} .. {_time(latest).date()} (the receiver's"
            " GLIA_EARLIEST_SPAN_DATE, GLIA_MAX_SPAN_AGE_DAYS and GLIA_MAX_SPAN_FUTURE_DAYS)"
        )
    # a live run's record (its start or a heartbeat) has no end: what it sends there means nothing
    if (end < start or end - start > INT64_MAX) and not _is_unfinished(span):
        if end < start:
            return f"end_time_unix_nano {end} is before start_time_unix_nano {start}"
        _check("duration_ns", end - start, f"end_time_unix_nano {end}: the duration {end - start} ns")
    kind, code = span.kind, span.status.code
    if not SMALLINT_MIN <= kind <= SMALLINT_MAX or not SMALLINT_MIN <= code <= SMALLINT_MAX:  # both smallint
        _check("kind", kind)
        _check("status.code", code)
    return None


def _is_unfinished(span: Span) -> bool:
    """Whether the span is a live run's start record or heartbeat (read from the wire: before its bag exists)."""
    for kv in span.attributes:
        if kv.key == RUN_STATE:
            return kv.value.WhichOneof("value") == "string_value" and kv.value.string_value in UNFINISHED_STATES
    return False


def _heartbeat_at(bag: dict[str, Any], start: int, now_ns: int) -> datetime:
    """When a live run's record says it was made, within [its start, the receiver's now]: a clock ahead of the
    receiver's must not keep a dead run from being found lost. Without one, the receiver's now."""
    raw = bag.pop(HEARTBEAT_TIME, None)
    made = _coerce(raw, "int") if raw is not None else None
    if made is None:
        return _time(now_ns)
    return _time(min(max(made, start), now_ns))


def _span_row(
    span: Span,
    scope_name: str | None,
    scope_version: str | None,
    resource: _ResourcePart,
    limits: Limits,
    scope_cut: list[str],
    now_ns: int,
) -> tuple[tuple[Any, ...], list[str]]:
    converter = _Bag(limits)
    bag = converter.convert(span.attributes, limits.max_attributes)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    end_time: datetime | None = None
    duration: int | None = None
    heartbeat_at: datetime | None = None
    if bag.get(RUN_STATE) in UNFINISHED_STATES:
        del bag[RUN_STATE]  # the row says it: no end time
        heartbeat_at = _heartbeat_at(bag, start, now_ns)
    else:
        end_time, duration = _time(end), end - start
    attribute_columns = _split(bag, SPAN_ATTRIBUTE_COLUMNS)
    for i, value in resource.fallback:
        if attribute_columns[i] is None:
            attribute_columns[i] = value
    for i, key in _ATTRIBUTE_IDENTIFYING:
        value = attribute_columns[i]
        if value is not None and len(value) * 4 > MAX_INDEXED_BYTES:  # _overlong's test, inline: once a column a span
            size = _overlong(value)
            if size is not None:
                raise _Unfit(_over_index_limit(key, size))
    events: list[dict[str, Any]] = []
    for event in span.events or ():
        if len(events) >= limits.max_events:
            converter.dropped += 1
            continue
        events.append(
            {
                "name": converter.text(event.name, "span.events.name"),
                "time_unix_nano": event.time_unix_nano,
                "attributes": converter.convert(event.attributes, limits.max_attributes),
            }
        )
    links = [
        {
            "trace_id": converter.text(link.trace_id.hex(), "span.links.trace_id"),
            "span_id": converter.text(link.span_id.hex(), "span.links.span_id"),
            "attributes": converter.convert(link.attributes, limits.max_attributes),
        }
        for link in span.links
    ]
    dropped = span.dropped_attributes_count + converter.dropped
    if dropped > INT32_MAX:
        shown = f"dropped_attributes_count {span.dropped_attributes_count}"
        if converter.dropped:
            shown += f" + {converter.dropped} dropped here"
        _check("dropped_attributes_count", dropped, shown)
    status = span.status
    name, status_message, trace_state = span.name, status.message, span.trace_state
    short = limits.max_value_bytes // 4  # as in _Bag.convert: text() would give these back unchanged
    if len(name) > short or "\x00" in name:
        name = converter.text(name, "span.name")
    if status_message and (len(status_message) > short or "\x00" in status_message):
        status_message = converter.text(status_message, "span.status.message")
    if trace_state and (len(trace_state) > short or "\x00" in trace_state):
        trace_state = converter.text(trace_state, "span.trace_state")
    cut = converter.truncated_keys
    if scope_cut or resource.cut:
        cut = [*cut, *scope_cut, *resource.cut]
    if cut:
        bag[TRUNCATED] = sorted(set(cut))
    row = (
        span.trace_id.hex(),
        span.span_id.hex(),
        _time(start),
        span.parent_span_id.hex() or None,
        trace_state or None,
        name,
        span.kind,
        status.code,
        status_message or None,
        end_time,
        start,
        duration,
        scope_name,
        scope_version,
        *resource.columns,
        *attribute_columns,
        _dumps(bag),
        resource.json,
        _dumps(events) if events else "[]",
        _dumps(links) if links else "[]",
        dropped,
        heartbeat_at,
    )
    return row, cut


# --- metrics ------------------------------------------------------------------------------------------------


def metric_months(batches: list[ResourceMetrics], limits: Limits, now_ns: int) -> set[datetime]:
    """The partition months a request's points need; call before metric_chunks, which consumes JSON items."""
    from .decode import point_times

    return months(point_times(batches), limits, now_ns)


def metric_chunks(
    batches: list[ResourceMetrics], limits: Limits, now_ns: int, report: Report, chunk_rows: int = 4096
) -> Iterator[list[tuple[Any, ...]]]:
    """Flatten decoded metrics into lists of rows, one per data point, in METRIC_COLUMNS order."""
    earliest, latest = _window(limits, now_ns)
    size = _chunk_size(chunk_rows, sum(ss.total() for rm in batches for ss in rm.scopes))
    chunk: list[tuple[Any, ...]] = []
    for r, rm in enumerate(batches):
        # metric points keep the whole resource; the service name and instance id are columns too
        resource_bag = _Bag(limits)
        full_resource = resource_bag.convert(rm.resource.attributes, limits.max_attributes)
        resource_cut = [f"resource.{k}" for k in resource_bag.truncated_keys]
        service_name = _coerce(full_resource.get("service.name"), "str")
        instance_id = _coerce(full_resource.get("service.instance.id"), "str")
        size_over = _overlong(instance_id)
        if size_over is not None:
            total = sum(ss.total() for ss in rm.scopes)
            problem = _over_index_limit("service.instance.id", size_over)
            report.reject(total, f"resourceMetrics[{r}]: resource attribute {problem} ({total} points rejected)")
            continue
        resource_all = _dumps(full_resource)
        for sm in rm.scopes:
            scope_bag = _Bag(limits)
            scope_name = scope_bag.text(sm.scope.name, "scope.name") or None
            for _, metric in sm.each(report):
                name = _clean(metric.name)
                size_over = _overlong(name)
                if size_over is not None:
                    points = _points_in(metric)
                    report.reject(points, f"metric {name[:60]!r}: {_over_index_limit('metric name', size_over)}")
                    continue
                metric_bag = _Bag(limits)
                unit = metric_bag.text(metric.unit, "metric.unit") or None
                shared_cut = [*resource_cut, *scope_bag.truncated_keys, *metric_bag.truncated_keys]
                for point_row in _metric_points(metric, limits):
                    time_ns = point_row["time_unix_nano"]
                    if not earliest <= time_ns <= latest:
                        report.reject(
                            1, f"metric {name[:60]!r}: time_unix_nano {time_ns} is outside the accepted window"
                        )
                        continue
                    try:
                        _check_point(point_row)
                    except _Unfit as exc:
                        report.reject(1, f"metric {name[:60]!r}: {exc}")
                        continue
                    attributes = point_row["attributes"]
                    cut = point_row["cut"]
                    if shared_cut:
                        cut = [*cut, *shared_cut]
                    if cut:
                        attributes[TRUNCATED] = sorted(set(cut))
                        report.warn(_cut_message(f"metric {name[:60]!r}", cut, limits))
                    identity = orjson.dumps(
                        [resource_all, scope_name, name, attributes, time_ns],
                        option=orjson.OPT_SORT_KEYS,
                    )
                    chunk.append(
                        (
                            uuid.UUID(bytes=hashlib.md5(identity, usedforsecurity=False).digest()),
                            _time(time_ns),
                            time_ns,
                            point_row["start_time_unix_nano"] or None,
                            name,
                            unit,
                            point_row["type"],
                            point_row["value"],
                            point_row["count"],
                            _dumps(point_row["data"]) if point_row["data"] is not None else None,
                            point_row["is_monotonic"],
                            service_name,
                            instance_id,
                            point_row["trace_id"],
                            point_row["span_id"],
                            _dumps(attributes),
                            resource_all,
                            scope_name,
                        )
                    )
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
    if chunk:
        yield chunk


def _points_in(metric: Metric) -> int:
    which = metric.WhichOneof("data")
    return max(1, len(getattr(metric, which).data_points)) if which else 1


def _check_point(row: dict[str, Any]) -> None:
    _check("start_time_unix_nano", row["start_time_unix_nano"])
    if row["count"] is not None:
        _check("count", row["count"])
    for column in ("trace_id", "span_id"):
        size = _overlong(row[column])
        if size is not None:
            raise _Unfit("point attribute " + _over_index_limit(f"glia.{column}", size))


def _metric_points(metric: Metric, limits: Limits) -> Iterable[dict[str, Any]]:
    which = metric.WhichOneof("data")
    if which is None:
        return
    data = getattr(metric, which)
    is_monotonic = data.is_monotonic if which == "sum" else None
    for point in data.data_points:
        bag = _Bag(limits)
        attributes = bag.convert(point.attributes, limits.max_attributes)
        trace_id = _coerce(attributes.pop("glia.trace_id", None), "str")
        span_id = _coerce(attributes.pop("glia.span_id", None), "str")
        exemplars = getattr(point, "exemplars", ())
        for ex in exemplars:
            if not trace_id and len(ex.trace_id) == 16:
                trace_id, span_id = ex.trace_id.hex(), ex.span_id.hex() or None
        row: dict[str, Any] = {
            "type": which,
            "time_unix_nano": point.time_unix_nano,
            "start_time_unix_nano": getattr(point, "start_time_unix_nano", 0),
            "attributes": attributes,
            "cut": bag.truncated_keys,
            "trace_id": trace_id,
            "span_id": span_id,
            "is_monotonic": is_monotonic,
            "value": None,
            "count": None,
            "data": None,
        }
        _POINT_READERS[which](point, row)
        yield row


def _number(point: Any, row: dict[str, Any]) -> None:
    v = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
    row["value"] = v if math.isfinite(v) else None


def _histogram(point: Any, row: dict[str, Any]) -> None:
    row["value"] = point.sum if point.HasField("sum") else None
    row["count"] = point.count
    row["data"] = {
        "bucket_counts": list(point.bucket_counts),
        "explicit_bounds": list(point.explicit_bounds),
        "min": point.min if point.HasField("min") else None,
        "max": point.max if point.HasField("max") else None,
    }


def _exponential_histogram(point: Any, row: dict[str, Any]) -> None:
    row["value"] = point.sum if point.HasField("sum") else None
    row["count"] = point.count
    row["data"] = {
        "scale": point.scale,
        "zero_count": point.zero_count,
        "positive": {"offset": point.positive.offset, "bucket_counts": list(point.positive.bucket_counts)},
        "negative": {"offset": point.negative.offset, "bucket_counts": list(point.negative.bucket_counts)},
        "min": point.min if point.HasField("min") else None,
        "max": point.max if point.HasField("max") else None,
    }


def _summary(point: Any, row: dict[str, Any]) -> None:
    row["value"] = point.sum
    row["count"] = point.count
    row["data"] = {"quantiles": [{"quantile": q.quantile, "value": q.value} for q in point.quantile_values]}


_POINT_READERS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "gauge": _number,
    "sum": _number,
    "histogram": _histogram,
    "exponential_histogram": _exponential_histogram,
    "summary": _summary,
}
