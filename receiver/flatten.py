"""Decoded OTLP messages -> rows: known attributes into typed columns, the rest into JSONB.

The attribute contract is docs/attributes.md. A known attribute whose value has the wrong type (and cannot be read
as the right one) stays in the JSONB bag instead of its column, so nothing a client sent is lost. Limits protect
PostgreSQL from hostile spans: strings over `max_attribute_value_bytes` are cut (the keys are listed in the span's
`glia.receiver.truncated` attribute), attributes past `max_attributes_per_span` and events past
`max_events_per_span` are dropped and counted in `dropped_attributes_count`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .decode import ResourceMetrics, ResourceSpans

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
    "glia.io.read_bytes": ("io_read_bytes", "int"),
    "glia.io.write_bytes": ("io_write_bytes", "int"),
}

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


@dataclass(frozen=True)
class Limits:
    """What one span may carry; see Settings for the defaults."""

    max_attributes: int = 2048
    max_value_bytes: int = 64 * 1024
    max_events: int = 1024
    max_age_days: int = 400
    max_future_days: int = 31


@dataclass
class Rows:
    """Rows ready for the database, the partition months they touch, and what was rejected and why."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    months: set[datetime] = field(default_factory=set)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    truncated: int = 0


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
            s: str = v.string_value
            if len(s) * 4 > self.limits.max_value_bytes and len(s.encode()) > self.limits.max_value_bytes:
                s = s.encode()[: self.limits.max_value_bytes].decode(errors="ignore")
                self.truncated_keys.append(key)
            return _clean(s)
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


def _clean(s: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


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


def _resource_part(resource: Resource, limits: Limits) -> tuple[list[Any], str]:
    bag = _Bag(limits).convert(resource.attributes, limits.max_attributes)
    columns = _split(bag, RESOURCE_COLUMNS)
    return columns, _dumps(bag)


def _window(limits: Limits, now_ns: int) -> tuple[int, int]:
    return now_ns - limits.max_age_days * NS_PER_DAY, now_ns + limits.max_future_days * NS_PER_DAY


def span_rows(batches: list[ResourceSpans], limits: Limits, now_ns: int) -> Rows:
    """Flatten decoded spans into rows in SPAN_COLUMNS order, rejecting spans that cannot be stored."""
    out = Rows()
    earliest, latest = _window(limits, now_ns)
    for r, rs in enumerate(batches):
        resource_columns, resource_json = _resource_part(rs.resource, limits)
        for s, ss in enumerate(rs.scopes):
            scope_name = _clean(ss.scope.name) or None
            scope_version = _clean(ss.scope.version) or None
            for n, span in enumerate(ss.items):
                problem = _span_problem(span, earliest, latest)
                if problem:
                    out.rejected += 1
                    out.errors.append(
                        f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}] (name {span.name[:60]!r}): {problem}"
                    )
                    continue
                row = _span_row(span, scope_name, scope_version, resource_columns, resource_json, limits, out)
                out.rows.append(row)
                out.months.add(month_of(span.start_time_unix_nano))
    return out


def _span_problem(span: Span, earliest: int, latest: int) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return f"trace_id must be 16 bytes and not all zero (got {len(span.trace_id)} bytes)"
    if len(span.span_id) != 8 or not any(span.span_id):
        return f"span_id must be 8 bytes and not all zero (got {len(span.span_id)} bytes)"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return f"parent_span_id must be empty or 8 bytes (got {len(span.parent_span_id)} bytes)"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not earliest <= start <= latest:
        return (
            f"start_time_unix_nano {start} ({_time(start).isoformat() if start else 'unset'}) is outside "
            f"the accepted window {_time(earliest).date()} .. {_time(latest).date()}"
        )
    if end < start:
        return f"end_time_unix_nano {end} is before start_time_unix_nano {start}"
    return None


def _span_row(
    span: Span,
    scope_name: str | None,
    scope_version: str | None,
    resource_columns: list[Any],
    resource_json: str,
    limits: Limits,
    out: Rows,
) -> tuple[Any, ...]:
    converter = _Bag(limits)
    bag = converter.convert(span.attributes, limits.max_attributes)
    attribute_columns = _split(bag, SPAN_ATTRIBUTE_COLUMNS)
    events: list[dict[str, Any]] = []
    for event in span.events or ():
        if len(events) >= limits.max_events:
            converter.dropped += 1
            continue
        events.append(
            {
                "name": _clean(event.name),
                "time_unix_nano": event.time_unix_nano,
                "attributes": converter.convert(event.attributes, limits.max_attributes),
            }
        )
    links = [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": converter.convert(link.attributes, limits.max_attributes),
        }
        for link in span.links
    ]
    if converter.truncated_keys:
        bag["glia.receiver.truncated"] = sorted(set(converter.truncated_keys))
        out.truncated += 1
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    return (
        span.trace_id.hex(),
        span.span_id.hex(),
        _time(start),
        span.parent_span_id.hex() or None,
        _clean(span.trace_state) or None,
        _clean(span.name),
        span.kind,
        span.status.code,
        _clean(span.status.message) or None,
        _time(end),
        start,
        end - start,
        scope_name,
        scope_version,
        *resource_columns,
        *attribute_columns,
        _dumps(bag),
        resource_json,
        _dumps(events) if events else "[]",
        _dumps(links) if links else "[]",
        span.dropped_attributes_count + converter.dropped,
    )


# --- metrics ------------------------------------------------------------------------------------------------


def metric_rows(batches: list[ResourceMetrics], limits: Limits, now_ns: int) -> Rows:
    """Flatten decoded metrics into one row per data point, in METRIC_COLUMNS order."""
    out = Rows()
    earliest, latest = _window(limits, now_ns)
    for rm in batches:
        # metric points keep the whole resource; the service name and instance id are columns too
        full_resource = _Bag(limits).convert(rm.resource.attributes, limits.max_attributes)
        service_name = _coerce(full_resource.get("service.name"), "str")
        instance_id = _coerce(full_resource.get("service.instance.id"), "str")
        resource_all = _dumps(full_resource)
        for sm in rm.scopes:
            scope_name = _clean(sm.scope.name) or None
            for metric in sm.items:
                for point_row in _metric_points(metric, limits):
                    time_ns = point_row["time_unix_nano"]
                    if not earliest <= time_ns <= latest:
                        out.rejected += 1
                        out.errors.append(
                            f"metric {metric.name[:60]!r}: time_unix_nano {time_ns} is outside the accepted window"
                        )
                        continue
                    identity = orjson.dumps(
                        [resource_all, scope_name, metric.name, point_row["attributes"], time_ns],
                        option=orjson.OPT_SORT_KEYS,
                    )
                    out.rows.append(
                        (
                            uuid.UUID(bytes=hashlib.md5(identity, usedforsecurity=False).digest()),
                            _time(time_ns),
                            time_ns,
                            point_row["start_time_unix_nano"] or None,
                            _clean(metric.name),
                            _clean(metric.unit) or None,
                            point_row["type"],
                            point_row["value"],
                            point_row["count"],
                            _dumps(point_row["data"]) if point_row["data"] is not None else None,
                            point_row["is_monotonic"],
                            service_name,
                            instance_id,
                            point_row["trace_id"],
                            point_row["span_id"],
                            _dumps(point_row["attributes"]),
                            resource_all,
                            scope_name,
                        )
                    )
                    out.months.add(month_of(time_ns))
    return out


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
