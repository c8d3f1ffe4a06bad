"""OTLP request bodies -> protobuf messages, per the OTLP/HTTP specification.

Protobuf bodies parse as a whole. JSON bodies parse resource by resource and span by span, so one malformed span is
rejected on its own (reported in `partial_success`) while the rest of the batch is stored. OTLP/JSON differs from
the protobuf JSON mapping in its ids, which are hex rather than base64; enums are integers; int64 may be strings or
numbers. Both lowerCamelCase and the proto field names are accepted as keys, as the Collector does, and unknown
fields are ignored.
"""

from __future__ import annotations

import binascii
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def media_type(content_type: str | None) -> str:
    """The request's media type, or UnsupportedMediaType for anything but OTLP's two."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    shown = content_type or "none"
    raise UnsupportedMediaType(f"unsupported content type {shown!r}: send {PROTOBUF} or {JSON}")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
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


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes after decompression")
    if not inflater.eof:
        raise zlib.error("truncated stream")
    return out


# --- the decoded shapes -------------------------------------------------------------------------------------


@dataclass
class ScopeItems(Generic[T]):
    """The spans (or metrics) of one instrumentation scope."""

    scope: InstrumentationScope
    items: list[T]


@dataclass
class ResourceItems(Generic[T]):
    """The scopes of one resource."""

    resource: Resource
    scopes: list[ScopeItems[T]]


ResourceSpans = ResourceItems[Span]
ResourceMetrics = ResourceItems[Metric]


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
    """What a body decoded to, plus the items that could not be decoded and why."""

    items: list[T] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, count: int, message: str) -> None:
        self.rejected += count
        self.errors.append(message)


# --- traces -------------------------------------------------------------------------------------------------


def decode_traces(body: bytes, kind: str) -> Decoded[ResourceSpans]:
    """Decode an ExportTraceServiceRequest body of media type `kind`."""
    if kind == PROTOBUF:
        request = _parse_protobuf(ExportTraceServiceRequest, body)
        return Decoded(
            items=[
                ResourceItems(rs.resource, [ScopeItems(ss.scope, list(ss.spans)) for ss in rs.scope_spans])
                for rs in request.resource_spans
            ]
        )
    return _decode_json(body, _TRACES)


def _decode_json(body: bytes, shape: _Shape) -> Decoded[Any]:
    """Walk resources -> scopes -> items; a bad item is rejected alone, a bad structure fails the request."""
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
            items = []
            for k, item in enumerate(_json_list(scope, *shape.items, swhere)):
                try:
                    items.append(shape.decode_item(item))
                except BadRequest as exc:
                    out.reject(shape.count_item(item), f"{swhere}.{shape.items[0]}[{k}]: {exc.message}")
            scopes.append(ScopeItems(scope_message, items))
        out.items.append(ResourceItems(message, scopes))
    return out


def _json_span(span: Any) -> Span:
    if not isinstance(span, dict):
        raise BadRequest("not an object")
    fixed = dict(span)
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


def decode_metrics(body: bytes, kind: str) -> Decoded[ResourceMetrics]:
    """Decode an ExportMetricsServiceRequest body of media type `kind`; `rejected` counts data points."""
    if kind == PROTOBUF:
        request = _parse_protobuf(ExportMetricsServiceRequest, body)
        return Decoded(
            items=[
                ResourceItems(rm.resource, [ScopeItems(sm.scope, list(sm.metrics)) for sm in rm.scope_metrics])
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


def _count_points(metric: Any) -> int:
    if isinstance(metric, dict):
        for camel, snake in _METRIC_KINDS:
            data = _field(metric, camel, snake)
            if isinstance(data, dict):
                points = _field(data, "dataPoints", "data_points")
                if isinstance(points, list):
                    return max(1, len(points))
    return 1


# --- helpers ------------------------------------------------------------------------------------------------


def _parse_protobuf(cls: Callable[[], M], body: bytes) -> M:
    message = cls()
    try:
        message.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        name = type(message).__name__
        raise BadRequest(f"body is not a valid protobuf {name}: {exc}") from None
    return message


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
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
    except binascii.Error:
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
