"""A small hand-written encoder of OTLP `ExportTraceServiceRequest` protobuf bytes.

Importing the generated protobuf modules costs about 100 ms here, more than `glia run`'s whole budget, so
spans are encoded straight to the wire format (field numbers from opentelemetry-proto's trace.proto and
common.proto). A unit test decodes the output with the real generated classes.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field_no: int, wire: int) -> bytes:
    return _varint((field_no << 3) | wire)


def _len(field_no: int, payload: bytes) -> bytes:
    return _key(field_no, 2) + _varint(len(payload)) + payload


def _str(field_no: int, s: str) -> bytes:
    return _len(field_no, s.encode("utf-8", "replace")) if s else b""


def _fixed64(field_no: int, n: int) -> bytes:
    return _key(field_no, 1) + _U64.pack(n)


def _uint(field_no: int, n: int) -> bytes:
    return _key(field_no, 0) + _varint(n) if n else b""


def any_value(v: Any) -> bytes:
    """Encode an AnyValue (str, bool, int, float, bytes, sequence, mapping)."""
    if isinstance(v, str):
        return _len(1, v.encode("utf-8", "replace"))
    if isinstance(v, bool):
        return _key(2, 0) + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        if -(1 << 63) <= v < (1 << 63):
            return _key(3, 0) + _varint(v)
        # Beyond int64 a varint has 11 bytes or more, which protobuf rejects with the whole request.
        return _len(1, str(v).encode("ascii"))
    if isinstance(v, float):
        return _key(4, 1) + _F64.pack(v)
    if isinstance(v, bytes):
        return _len(7, v)
    if isinstance(v, dict):
        return _len(6, b"".join(_len(1, key_value(str(k), x)) for k, x in v.items()))
    if isinstance(v, list | tuple):
        return _len(5, b"".join(_len(1, any_value(x)) for x in v))
    return _len(1, str(v).encode("utf-8", "replace"))


def key_value(k: str, v: Any) -> bytes:
    """Encode a KeyValue."""
    return _str(1, k) + _len(2, any_value(v))


def _attributes(field_no: int, attrs: Mapping[str, Any] | None) -> bytes:
    if not attrs:
        return b""
    return b"".join(_len(field_no, key_value(k, v)) for k, v in attrs.items())


class SpanData:
    """The fields of one span, enough for what glia sends (a plain class: `dataclasses` is slow to import)."""

    __slots__ = (
        "attributes",
        "end_ns",
        "events",
        "flags",
        "kind",
        "links",
        "name",
        "parent_span_id",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        name: str,
        start_ns: int,
        end_ns: int,
        parent_span_id: int = 0,
        kind: int = 1,  # SPAN_KIND_INTERNAL
        attributes: Mapping[str, Any] | None = None,
        events: Sequence[tuple[str, int, Mapping[str, Any]]] = (),
        links: Sequence[tuple[int, int, Mapping[str, Any]]] = (),
        status_code: int = 0,
        status_message: str = "",
        trace_state: str = "",
        flags: int = 0x101,  # sampled, and bit 8: whether the parent is remote is known
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.name = name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.parent_span_id = parent_span_id
        self.kind = kind
        self.attributes = attributes or {}
        self.events = events
        self.links = links
        self.status_code = status_code
        self.status_message = status_message
        self.trace_state = trace_state
        self.flags = flags


def encode_span(s: SpanData) -> bytes:
    """Encode one Span message."""
    out = [
        _len(1, s.trace_id.to_bytes(16, "big")),
        _len(2, s.span_id.to_bytes(8, "big")),
        _str(3, s.trace_state),
    ]
    if s.parent_span_id:
        out.append(_len(4, s.parent_span_id.to_bytes(8, "big")))
    out += [
        _str(5, s.name),
        _uint(6, s.kind),
        _fixed64(7, s.start_ns),
        _fixed64(8, s.end_ns),
        _attributes(9, s.attributes),
    ]
    for name, ts, attrs in s.events:
        out.append(_len(11, _fixed64(1, ts) + _str(2, name) + _attributes(3, attrs)))
    for trace_id, span_id, attrs in s.links:
        out.append(
            _len(
                13,
                _len(1, trace_id.to_bytes(16, "big")) + _len(2, span_id.to_bytes(8, "big")) + _attributes(4, attrs),
            )
        )
    if s.status_code or s.status_message:
        out.append(_len(15, _str(2, s.status_message) + _uint(3, s.status_code)))
    out.append(_key(16, 5) + _U32.pack(s.flags))
    return b"".join(out)


def encode_request(groups: Iterable[tuple[Mapping[str, Any], str, str, Iterable[SpanData]]]) -> bytes:
    """Encode an ExportTraceServiceRequest from (resource attrs, scope name, scope version, spans) groups."""
    out = []
    for resource, scope_name, scope_version, spans in groups:
        scope = _str(1, scope_name) + _str(2, scope_version)
        scope_spans = _len(1, scope) + b"".join(_len(2, encode_span(s)) for s in spans)
        out.append(_len(1, _len(1, _attributes(1, resource)) + _len(2, scope_spans)))
    return b"".join(out)
