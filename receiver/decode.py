"""OTLP request bodies -> protobuf messages, per the OTLP/HTTP specification.

Protobuf bodies parse as a whole. JSON bodies parse resource by resource and span by span, so one malformed span is
rejected on its own (reported in `partial_success`) while the rest of the batch is stored. A JSON body's resources
and scopes are checked at once (a bad structure fails the request), its spans, metrics and log records only as
flatten takes them (`ScopeItems.each`), so the protobuf messages of a large body never all exist beside the parsed
JSON. OTLP/JSON differs from the protobuf JSON mapping in its ids, which are hex rather than base64; enums are
integers; int64 may be strings or numbers. Both lowerCamelCase and the proto field names are accepted as keys, as
the Collector does, and unknown fields are ignored.
"""

from __future__ import annotations

import binascii
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_MESSAGES = 10  # per-item messages kept for partial_success; the rest are counted
MAX_MESSAGE_CHARS = 1000  # one message's length in partial_success (a nested parse error can run to pages)

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def media_type(content_type: str | None) -> str:
    """The request's media type, or UnsupportedMediaType for anything but OTLP's two."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    shown = content_type or "none"
    raise UnsupportedMediaType(f"unsupported content type {shown!r}: send {PROTOBUF} or {JSON}")


def decompress(body: bytes | bytearray, encoding: str | None, limit: int) -> bytes | bytearray:
    """Undo `Content-Encoding` (gzip, deflate or identity), refusing to inflate past `limit` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as HTTP's "deflate" means; raw deflate is tried below
    else:
        raise UnsupportedMediaType(f"unsupported content encoding {encoding!r}: send gzip, deflate or identity")
    try:
        return _inflate(body, wbits, limit)
    except zlib.error as exc:
        if enc == "deflate":
            try:
                return _inflate(body, -zlib.MAX_WBITS, limit)
            except zlib.error:
                pass
        raise BadRequest(f"body is not valid {enc} data: {exc}") from None


def _inflate(body: bytes | bytearray, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes after decompression")
    if not inflater.eof:
        raise zlib.error("truncated stream")
    return out


# --- the decoded shapes -------------------------------------------------------------------------------------


@dataclass
class Report:
    """What became of a request's items across the pipeline: rejections (with the reason) and warnings (values
    cut to a limit, stored all the same). Only the first MAX_MESSAGES messages are kept, the rest counted."""

    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    more_errors: int = 0
    more_warnings: int = 0

    def reject(self, count: int, message: str) -> None:
        self.rejected += count
        if len(self.errors) < MAX_MESSAGES:
            self.errors.append(_shorten(message))
        else:
            self.more_errors += 1

    def has_room(self) -> bool:
        """Whether another rejection's message would be kept (a huge batch of bad items need not format them)."""
        return len(self.errors) < MAX_MESSAGES

    def merge(self, rejected: int, messages: list[str]) -> None:
        """Add `rejected` items rejected further down the pipeline, with (some of) their messages."""
        for message in messages:
            self.reject(1, message)
        self.rejected += rejected - len(messages)

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_MESSAGES:
            self.warnings.append(_shorten(message))
        else:
            self.more_warnings += 1

    def message(self) -> str:
        """partial_success's error_message: the rejections first, then the warnings; empty when all is well."""
        parts = [*self.errors]
        if self.more_errors:
            parts.append(f"and {self.more_errors} more rejected")
        parts += self.warnings
        if self.more_warnings:
            parts.append(f"and {self.more_warnings} more cut")
        return "; ".join(parts)


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


@dataclass
class ScopeItems(Generic[T]):
    """The spans (or metrics) of one instrumentation scope.

    `items` holds protobuf messages, or, for JSON, the parsed objects that `convert` turns into messages one at a
    time in `each`."""

    scope: InstrumentationScope
    items: Sequence[Any]
    convert: Callable[[Any], T] | None = None
    count: Callable[[Any], int] = field(default=lambda _: 1)  # data points in an item, for rejections
    where: str = ""  # the JSON path of `items`, for messages

    def total(self) -> int:
        """How many spans (or data points) the scope holds, decoded or not."""
        return sum(self.count(item) for item in self.items)

    def each(self, report: Report) -> Iterator[tuple[int, T]]:
        """(index, message) for every item; a JSON item that does not decode is rejected into `report`.

        JSON objects are let go of once converted, so a scope can be walked once only."""
        if self.convert is None:
            yield from enumerate(self.items)
            return
        raw = self.items
        assert isinstance(raw, list)
        convert = self.convert
        for k, obj in enumerate(raw):
            raw[k] = None
            try:
                message = convert(obj)
            except BadRequest as exc:
                report.reject(self.count(obj), f"{self.where}[{k}]: {exc.message}" if report.has_room() else "")
                continue
            yield k, message


@dataclass
class ResourceItems(Generic[T]):
    """The scopes of one resource."""

    resource: Resource
    scopes: list[ScopeItems[T]]


ResourceSpans = ResourceItems[Span]
ResourceMetrics = ResourceItems[Metric]
ResourceLogs = ResourceItems[LogRecord]


@dataclass(frozen=True)
class _Shape:
    """The OTLP/JSON names of one signal's nesting, and how to decode one item."""

    resources: tuple[str, str]
    scopes: tuple[str, str]
    items: tuple[str, str]
    decode_item: Callable[[Any], Any]
    count_item: Callable[[Any], int]


@dataclass
class Decoded(Generic[T]):
    """What a body decoded to. JSON items are decoded later, as flatten walks them (`ScopeItems.each`)."""

    items: list[ResourceItems[T]] = field(default_factory=list)


# --- traces -------------------------------------------------------------------------------------------------


def decode_traces(body: bytes | bytearray, kind: str) -> Decoded[Span]:
    """Decode an ExportTraceServiceRequest body of media type `kind`."""
    if kind == PROTOBUF:
        request = _parse_protobuf(ExportTraceServiceRequest, body)
        return Decoded(
            items=[
                ResourceItems(rs.resource, [ScopeItems(ss.scope, ss.spans) for ss in rs.scope_spans])
                for rs in request.resource_spans
            ]
        )
    return _decode_json(body, _TRACES)


def _decode_json(body: bytes | bytearray, shape: _Shape) -> Decoded[Any]:
    """Walk resources -> scopes; a bad structure fails the request. Items are decoded later, each on its own."""
    out: Decoded[Any] = Decoded()
    for i, resource in enumerate(_json_list(_json_object(body), *shape.resources, "request")):
        where = f"{shape.resources[0]}[{i}]"
        if not isinstance(resource, dict):
            raise BadRequest(f"{where} is not an object")
        message = _json_message(Resource, _field(resource, "resource", "resource") or {}, f"{where}.resource")
        scopes = []
        for j, scope in enumerate(_json_list(resource, *shape.scopes, where)):
            swhere = f"{where}.{shape.scopes[0]}[{j}]"
            if not isinstance(scope, dict):
                raise BadRequest(f"{swhere} is not an object")
            scope_message = _json_message(
                InstrumentationScope, _field(scope, "scope", "scope") or {}, f"{swhere}.scope"
            )
            items = _json_list(scope, *shape.items, swhere)
            where = f"{swhere}.{shape.items[0]}"
            scopes.append(ScopeItems(scope_message, items, shape.decode_item, shape.count_item, where))
        out.items.append(ResourceItems(message, scopes))
    return out


def _json_span(span: Any) -> Span:
    if not isinstance(span, dict):
        raise BadRequest("not an object")
    if not span:
        raise BadRequest("traceId is missing")  # the cheap answer to a body of a million `{}`
    fixed = dict(span)
    _check_enum(fixed, "kind", "kind", "kind")
    status = fixed.get("status")
    if isinstance(status, dict):
        _check_enum(status, "code", "code", "status.code")
    _hex_to_b64(fixed, "traceId", "trace_id", 16, required=True)
    _hex_to_b64(fixed, "spanId", "span_id", 8, required=True)
    _hex_to_b64(fixed, "parentSpanId", "parent_span_id", 8, required=False)
    links = _field(fixed, "links", "links")
    if isinstance(links, list):
        fixed_links = []
        for n, link in enumerate(links):
            if not isinstance(link, dict):
                raise BadRequest(f"links[{n}] is not an object")
            link = dict(link)
            _hex_to_b64(link, "traceId", "trace_id", 16, required=True, where=f"links[{n}].")
            _hex_to_b64(link, "spanId", "span_id", 8, required=True, where=f"links[{n}].")
            fixed_links.append(link)
        fixed.pop("links", None)
        fixed["links"] = fixed_links
    return _json_message(Span, fixed, "")


# --- metrics ------------------------------------------------------------------------------------------------


def decode_metrics(body: bytes | bytearray, kind: str) -> Decoded[Metric]:
    """Decode an ExportMetricsServiceRequest body of media type `kind`; rejections count data points."""
    if kind == PROTOBUF:
        request = _parse_protobuf(ExportMetricsServiceRequest, body)
        return Decoded(
            items=[
                ResourceItems(
                    rm.resource, [ScopeItems(sm.scope, sm.metrics, count=_pb_points) for sm in rm.scope_metrics]
                )
                for rm in request.resource_metrics
            ]
        )
    return _decode_json(body, _METRICS)


_METRIC_KINDS = (
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
    ("summary", "summary"),
)


def _json_metric(metric: Any) -> Metric:
    if not isinstance(metric, dict):
        raise BadRequest("not an object")
    fixed = dict(metric)
    for camel, snake in _METRIC_KINDS:
        data = _field(fixed, camel, snake)
        if not isinstance(data, dict):
            continue
        data = dict(data)
        _check_enum(data, "aggregationTemporality", "aggregation_temporality", f"{camel}.aggregationTemporality")
        points = _field(data, "dataPoints", "data_points")
        if isinstance(points, list):
            new_points = []
            for p, point in enumerate(points):
                if isinstance(point, dict) and isinstance(point.get("exemplars"), list):
                    point = dict(point)
                    exemplars = []
                    for e, ex in enumerate(point["exemplars"]):
                        if not isinstance(ex, dict):
                            raise BadRequest(f"dataPoints[{p}].exemplars[{e}] is not an object")
                        ex = dict(ex)
                        _hex_to_b64(ex, "traceId", "trace_id", 16, required=False, where="exemplar.")
                        _hex_to_b64(ex, "spanId", "span_id", 8, required=False, where="exemplar.")
                        exemplars.append(ex)
                    point["exemplars"] = exemplars
                new_points.append(point)
            data.pop("data_points", None)
            data["dataPoints"] = new_points
        fixed.pop(snake, None)
        fixed[camel] = data
    return _json_message(Metric, fixed, "")


def _pb_points(metric: Metric) -> int:
    which = metric.WhichOneof("data")
    return max(1, len(getattr(metric, which).data_points)) if which else 1


def _count_points(metric: Any) -> int:
    if isinstance(metric, dict):
        for camel, snake in _METRIC_KINDS:
            data = _field(metric, camel, snake)
            if isinstance(data, dict):
                points = _field(data, "dataPoints", "data_points")
                if isinstance(points, list):
                    return max(1, len(points))
    return 1


# --- logs ---------------------------------------------------------------------------------------------------


def decode_logs(body: bytes | bytearray, kind: str) -> Decoded[LogRecord]:
    """Decode an ExportLogsServiceRequest body of media type `kind`."""
    if kind == PROTOBUF:
        request = _parse_protobuf(ExportLogsServiceRequest, body)
        return Decoded(
            items=[
                ResourceItems(rl.resource, [ScopeItems(sl.scope, sl.log_records) for sl in rl.scope_logs])
                for rl in request.resource_logs
            ]
        )
    return _decode_json(body, _LOGS)


def _json_log_record(record: Any) -> LogRecord:
    if not isinstance(record, dict):
        raise BadRequest("not an object")
    if not record:
        raise BadRequest("timeUnixNano and observedTimeUnixNano are missing")  # the cheap answer to a million `{}`
    fixed = dict(record)
    _check_enum(fixed, "severityNumber", "severity_number", "severityNumber")
    # a record outside any span has no ids: both are optional, unlike a span's
    _hex_to_b64(fixed, "traceId", "trace_id", 16, required=False)
    _hex_to_b64(fixed, "spanId", "span_id", 8, required=False)
    return _json_message(LogRecord, fixed, "")


# --- times, before flattening ------------------------------------------------------------------------------


def span_start_times(batches: list[ResourceSpans]) -> Iterator[int]:
    """Every span's start time, read without decoding JSON spans: the partitions a request needs are made before
    its transaction begins. Unreadable times are left out (those spans are rejected later)."""
    for resource in batches:
        for scope in resource.scopes:
            if scope.convert is None:
                for span in scope.items:
                    yield span.start_time_unix_nano
                continue
            for obj in scope.items:  # the hot loop of a huge body: inlined
                if type(obj) is dict:
                    value = obj.get("startTimeUnixNano")
                    if value is None:
                        value = obj.get("start_time_unix_nano")
                    if value is not None:
                        t = _json_int(value)
                        if t is not None:
                            yield t


def point_times(batches: list[ResourceMetrics]) -> Iterator[int]:
    """Every data point's time, as `span_start_times` does for spans."""
    for resource in batches:
        for scope in resource.scopes:
            if scope.convert is None:
                for metric in scope.items:
                    which = metric.WhichOneof("data")
                    if which is not None:
                        for point in getattr(metric, which).data_points:
                            yield point.time_unix_nano
                continue
            for obj in scope.items:
                if not isinstance(obj, dict):
                    continue
                for camel, snake in _METRIC_KINDS:
                    data = _field(obj, camel, snake)
                    points = _field(data, "dataPoints", "data_points") if isinstance(data, dict) else None
                    for point in points if isinstance(points, list) else ():
                        if isinstance(point, dict):
                            t = _json_int(_field(point, "timeUnixNano", "time_unix_nano"))
                            if t is not None:
                                yield t


def record_times(batches: list[ResourceLogs]) -> Iterator[int]:
    """Every log record's time (its time, else its observed time), as `span_start_times` does for spans."""
    for resource in batches:
        for scope in resource.scopes:
            if scope.convert is None:
                for record in scope.items:
                    yield record.time_unix_nano or record.observed_time_unix_nano
                continue
            for obj in scope.items:
                if isinstance(obj, dict):
                    t = _json_int(_field(obj, "timeUnixNano", "time_unix_nano"))
                    if not t:
                        t = _json_int(_field(obj, "observedTimeUnixNano", "observed_time_unix_nano"))
                    if t is not None:
                        yield t


def _json_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


# --- helpers ------------------------------------------------------------------------------------------------


def _parse_protobuf(cls: Callable[[], M], body: bytes | bytearray) -> M:
    message = cls()
    try:
        message.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        name = type(message).__name__
        raise BadRequest(f"body is not a valid protobuf {name}: {exc}") from None
    return message


def _json_object(body: bytes | bytearray) -> dict[str, Any]:
    if not body or body.isspace():  # (strip() would copy a large body)
        return {}  # an empty body is an empty request, as it is in protobuf
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"body must be a JSON object, not {type(value).__name__}")
    return value


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _json_list(obj: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = _field(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{where}.{camel} must be an array, not {type(value).__name__}")
    return value


def _check_enum(obj: dict[str, Any], camel: str, snake: str, name: str) -> None:
    """Refuse an enum number outside int32. protobuf's json_format looks a number up among the enum's values by its
    low 32 bits (upb's values_by_number map), so 2**40 would silently become value 0 and 2**32 + 3 value 3."""
    value = _field(obj, camel, snake)
    if isinstance(value, bool) or value is None:
        return
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            return  # an enum name, or nonsense that json_format reports
    if number is not None and not INT32_MIN <= number <= INT32_MAX:
        raise BadRequest(f"{name} {number} is out of range for an OTLP enum (int32)")


def _hex_to_b64(
    obj: dict[str, Any], camel: str, snake: str, size: int, *, required: bool, where: str = ""
) -> None:
    value = obj.pop(camel, None)
    if value is None:
        value = obj.pop(snake, None)
    else:
        obj.pop(snake, None)
    if value in (None, ""):
        if required:
            raise BadRequest(f"{where}{camel} is missing")
        return
    if not isinstance(value, str):
        raise BadRequest(f"{where}{camel} must be a string of {size * 2} hex digits")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size or len(value) != size * 2:
        hint = " (OTLP/JSON ids are hex, not base64)" if _looks_base64(value, size) else ""
        raise BadRequest(f"{where}{camel} {value[:80]!r} must be {size * 2} hex digits{hint}")
    obj[camel] = binascii.b2a_base64(raw, newline=False).decode()


def _looks_base64(value: str, size: int) -> bool:
    try:
        return len(binascii.a2b_base64(value)) == size
    except ValueError:  # binascii.Error, or a non-ASCII character
        return False


def _json_message(cls: Callable[[], M], value: Any, where: str) -> M:
    message = cls()
    if not isinstance(value, dict):
        raise BadRequest(f"{where or type(message).__name__} must be an object, not {type(value).__name__}")
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        prefix = f"{where}: " if where else ""
        raise BadRequest(f"{prefix}{exc}") from None
    return message


_TRACES = _Shape(
    ("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans"), _json_span, lambda _: 1
)
_METRICS = _Shape(
    ("resourceMetrics", "resource_metrics"),
    ("scopeMetrics", "scope_metrics"),
    ("metrics", "metrics"),
    _json_metric,
    _count_points,
)
_LOGS = _Shape(
    ("resourceLogs", "resource_logs"),
    ("scopeLogs", "scope_logs"),
    ("logRecords", "log_records"),
    _json_log_record,
    lambda _: 1,
)
