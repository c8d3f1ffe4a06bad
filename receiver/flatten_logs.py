"""Decoded OTLP log records -> rows of `log_records`, one per record, under the limits spans have (flatten.py).

A record is linked to its run by its trace and span id (a record emitted inside a span carries both: the stock SDK's
LoggingHandler, glia's stored stderr tails). Its time is `time_unix_nano`, else `observed_time_unix_nano` (OTLP:
the time the collector or SDK saw it), inside the accepted window; a record with neither cannot be placed in a
partition and is rejected. The body keeps its AnyValue shape as JSON (a line of text is a JSON string). Records are
idempotent by content, as metric points are: `record_id` hashes the whole record with its resource and scope, so a
resent batch adds nothing (and two records equal in every field, to the nanosecond, are stored once).

What cannot be stored is rejected record by record, with the field named: ids of the wrong length, a severity
number outside smallint, counts outside integer. Text over `max_attribute_value_bytes` is cut and listed in the
record's `glia.receiver.truncated` attribute, as for spans.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from .decode import Report, ResourceLogs, record_times
from .flatten import (
    INT32_MAX,
    INT64_MAX,
    SMALLINT_MAX,
    SMALLINT_MIN,
    TRUNCATED,
    Limits,
    _Bag,
    _chunk_size,
    _coerce,
    _cut_message,
    _dumps,
    _time,
    _Unfit,
    _window,
    months,
)

LOG_COLUMNS: tuple[str, ...] = (
    "record_id",
    "time",
    "time_unix_nano",
    "observed_time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "event_name",
    "trace_id",
    "span_id",
    "flags",
    "service_name",
    "service_instance_id",
    "scope_name",
    "scope_version",
    "attributes",
    "resource",
    "dropped_attributes_count",
)


def log_months(batches: list[ResourceLogs], limits: Limits, now_ns: int) -> set[datetime]:
    """The partition months a request's records need; call before log_chunks, which consumes JSON items."""
    return months(record_times(batches), limits, now_ns)


def log_chunks(
    batches: list[ResourceLogs], limits: Limits, now_ns: int, report: Report, chunk_rows: int = 4096
) -> Iterator[list[tuple[Any, ...]]]:
    """Flatten decoded log records into lists of rows in LOG_COLUMNS order; records that cannot be stored are
    rejected into `report`, values cut to the limits reported there as warnings."""
    window = _window(limits, now_ns)
    size = _chunk_size(chunk_rows, sum(len(sl.items) for rl in batches for sl in rl.scopes))
    chunk: list[tuple[Any, ...]] = []
    for r, rl in enumerate(batches):
        resource_bag = _Bag(limits)
        resource = resource_bag.convert(rl.resource.attributes, limits.max_attributes)
        resource_cut = [f"resource.{k}" for k in resource_bag.truncated_keys]
        service_name = _coerce(resource.get("service.name"), "str")
        instance_id = _coerce(resource.get("service.instance.id"), "str")
        resource_json = _dumps(resource)
        for s, sl in enumerate(rl.scopes):
            scope_bag = _Bag(limits)
            scope = _Scope(
                resource_json,
                service_name,
                instance_id,
                scope_bag.text(sl.scope.name, "scope.name") or None,
                scope_bag.text(sl.scope.version, "scope.version") or None,
                [*resource_cut, *scope_bag.truncated_keys],
            )
            for n, record in sl.each(report):
                where = f"resourceLogs[{r}].scopeLogs[{s}].logRecords[{n}]"
                try:
                    row, cut = _record_row(record, scope, limits, window)
                except _Unfit as exc:
                    report.reject(1, f"{where}: {exc}")
                    continue
                if cut:
                    report.warn(_cut_message(where, cut, limits))
                chunk.append(row)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class _Scope:
    """What every record of one scope shares."""

    resource_json: str
    service_name: str | None
    instance_id: str | None
    name: str | None
    version: str | None
    cut: list[str]


def _fits(value: int, low: int, high: int, what: str, kind: str) -> None:
    if not low <= value <= high:
        raise _Unfit(f"{what} {value} does not fit its column ({kind}, {low}..{high})")


def _id(raw: bytes, size: int, what: str) -> str | None:
    """The hex of an id of `size` bytes; None when it is empty or all zero (OTLP: no id)."""
    if not raw or not any(raw):
        return None
    if len(raw) != size:
        raise _Unfit(f"{what} must be empty or {size} bytes (got {len(raw)} bytes)")
    return raw.hex()


def _record_row(
    record: LogRecord, scope: _Scope, limits: Limits, window: tuple[int, int]
) -> tuple[tuple[Any, ...], list[str]]:
    time_ns, observed_ns = record.time_unix_nano, record.observed_time_unix_nano
    at = time_ns or observed_ns
    if not at:
        raise _Unfit("time_unix_nano and observed_time_unix_nano are both unset: the record has no time to store it at")
    earliest, latest = window
    if not earliest <= at <= latest:
        raise _Unfit(
            f"{'time' if time_ns else 'observed_time'}_unix_nano {at} ({_time(at).isoformat()}) is outside the"
            f" accepted window {_time(earliest).date()} .. {_time(latest).date()} (the receiver's"
            " GLIA_EARLIEST_SPAN_DATE, GLIA_MAX_SPAN_AGE_DAYS and GLIA_MAX_SPAN_FUTURE_DAYS)"
        )
    _fits(observed_ns, 0, INT64_MAX, "observed_time_unix_nano", "bigint")
    _fits(record.severity_number, SMALLINT_MIN, SMALLINT_MAX, "severity_number", "smallint")
    trace_id = _id(record.trace_id, 16, "trace_id")
    span_id = _id(record.span_id, 8, "span_id")
    bag = _Bag(limits)
    attributes = bag.convert(record.attributes, limits.max_attributes)
    dropped = record.dropped_attributes_count + bag.dropped
    _fits(dropped, 0, INT32_MAX, "dropped_attributes_count", "integer")
    body = bag.value(record.body, "log.body") if record.HasField("body") else None
    severity_text = bag.text(record.severity_text, "log.severity_text") or None
    event_name = bag.text(record.event_name, "log.event_name") or None
    cut = bag.truncated_keys
    if scope.cut:
        cut = [*cut, *scope.cut]
    if cut:
        attributes[TRUNCATED] = sorted(set(cut))
    body_json = _dumps(body) if body is not None else None
    attributes_json = _dumps(attributes)
    identity = orjson.dumps(
        [
            scope.resource_json, scope.name, scope.version, time_ns, observed_ns, record.severity_number,
            severity_text, body_json, event_name, trace_id, span_id, record.flags, attributes_json,
        ]
    )  # fmt: skip
    row = (
        uuid.UUID(bytes=hashlib.md5(identity, usedforsecurity=False).digest()),
        _time(at),
        time_ns or None,
        observed_ns or None,
        record.severity_number,
        severity_text,
        body_json,
        event_name,
        trace_id,
        span_id,
        record.flags,
        scope.service_name,
        scope.instance_id,
        scope.name,
        scope.version,
        attributes_json,
        scope.resource_json,
        dropped,
    )
    return row, cut
