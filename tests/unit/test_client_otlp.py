"""The hand-written OTLP encoder produces what the generated protobuf classes read back."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from glia_otel._otlp import SpanData, encode_request


def _value(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def test_encoded_request_decodes_with_generated_classes() -> None:
    span = SpanData(
        trace_id=0x0123456789ABCDEF0123456789ABCDEF,
        span_id=0x1122334455667788,
        parent_span_id=0x99AABBCCDDEEFF00,
        name="align ✓",
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_001_500_000_000,
        attributes={
            "s": "x",
            "b": False,
            "i": -5,
            "big": 2**62,
            "f": 0.25,
            "l": ["a", "b"],
            "li": [1, 2],
            "m": {"k": 1},
            "raw": b"\x01",
        },
        events=[("exception", 1_700_000_001_000_000_000, {"exception.type": "KeyError"})],
        links=[(7, 8, {"why": "retry"})],
        status_code=2,
        status_message="exit code 3",
        flags=0x301,
    )
    body = encode_request([({"service.name": "svc", "process.pid": 42}, "glia_otel.run", "0.1.0", [span])])
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    (rs,) = req.resource_spans
    assert {kv.key: _value(kv.value) for kv in rs.resource.attributes} == {
        "service.name": "svc",
        "process.pid": 42,
    }
    (ss,) = rs.scope_spans
    assert (ss.scope.name, ss.scope.version) == ("glia_otel.run", "0.1.0")
    (s,) = ss.spans
    assert s.trace_id.hex() == "0123456789abcdef0123456789abcdef"
    assert s.span_id.hex() == "1122334455667788"
    assert s.parent_span_id.hex() == "99aabbccddeeff00"
    assert s.name == "align ✓"
    assert s.kind == 1
    assert s.start_time_unix_nano == 1_700_000_000_000_000_000
    assert s.end_time_unix_nano == 1_700_000_001_500_000_000
    assert {kv.key: _value(kv.value) for kv in s.attributes} == {
        "s": "x",
        "b": False,
        "i": -5,
        "big": 2**62,
        "f": 0.25,
        "l": ["a", "b"],
        "li": [1, 2],
        "m": {"k": 1},
        "raw": b"\x01",
    }
    (ev,) = s.events
    assert (ev.name, ev.time_unix_nano) == ("exception", 1_700_000_001_000_000_000)
    assert ev.attributes[0].key == "exception.type"
    (ln,) = s.links
    assert int.from_bytes(ln.trace_id, "big") == 7 and int.from_bytes(ln.span_id, "big") == 8
    assert (s.status.code, s.status.message) == (2, "exit code 3")
    assert s.flags == 0x301


def test_root_span_has_no_parent_and_unset_status() -> None:
    span = SpanData(trace_id=1, span_id=2, name="x", start_ns=1, end_ns=2)
    req = ExportTraceServiceRequest()
    req.ParseFromString(encode_request([({}, "s", "", [span])]))
    s = req.resource_spans[0].scope_spans[0].spans[0]
    assert s.parent_span_id == b"" and s.status.code == 0


def test_ints_beyond_int64_are_sent_as_strings() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from glia_otel._otlp import any_value

    for n in (2**63, 2**70, -(2**63) - 1, -(2**80)):
        v = AnyValue()
        v.ParseFromString(any_value(n))
        assert v.WhichOneof("value") == "string_value" and v.string_value == str(n)
    for n in (2**63 - 1, -(2**63), -1, 0):
        v = AnyValue()
        v.ParseFromString(any_value(n))
        assert v.int_value == n
