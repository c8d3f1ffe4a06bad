"""Pure functions of the receiver: media types, decompression limits, OTLP/JSON decoding, flattening, queries."""

from __future__ import annotations

import gzip
import time
import zlib

import orjson
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import decode, flatten, queries
from receiver.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

NOW = time.time_ns()


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("application/x-protobuf", decode.PROTOBUF),
        ("application/json; charset=utf-8", decode.JSON),
        ("Application/JSON", decode.JSON),
    ],
)
def test_media_type_accepts_otlp_types(header: str, kind: str) -> None:
    assert decode.media_type(header) == kind


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/protobuf", "application/grpc"])
def test_media_type_rejects_others(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="send application/x-protobuf or application/json"):
        decode.media_type(header)


def test_decompress_round_trips_and_limits() -> None:
    data = b"x" * 10_000
    assert decode.decompress(gzip.compress(data), "gzip", 10_000) == data
    assert decode.decompress(zlib.compress(data), "deflate", 10_000) == data
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode.decompress(raw.compress(data) + raw.flush(), "deflate", 10_000) == data
    assert decode.decompress(data, None, 1) == data  # identity: the body limit is checked elsewhere
    with pytest.raises(PayloadTooLarge, match="after decompression"):
        decode.decompress(gzip.compress(data), "gzip", 9_999)
    with pytest.raises(BadRequest, match="not valid gzip"):
        decode.decompress(gzip.compress(data)[:-20], "gzip", 10_000)
    with pytest.raises(UnsupportedMediaType, match="content encoding 'zstd'"):
        decode.decompress(data, "zstd", 10_000)


def _json(spans: list[object]) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})


def test_json_ids_are_hex_and_become_bytes() -> None:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "x"}
    decoded = decode.decode_traces(_json([span]), decode.JSON)
    (got,) = decoded.items[0].scopes[0].items
    assert got.trace_id.hex() == span["traceId"] and got.span_id.hex() == span["spanId"]
    assert decoded.rejected == 0


def test_json_base64_id_is_named_in_the_rejection() -> None:
    decoded = decode.decode_traces(_json([{"traceId": "CvdlGRbNQ92ESOshHIAxnA==", "spanId": "b7ad6b7169203331"}]),
                                   decode.JSON)
    assert decoded.rejected == 1
    assert "hex, not base64" in decoded.errors[0]
    assert decoded.errors[0].startswith("resourceSpans[0].scopeSpans[0].spans[0]: traceId")


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"resourceSpans": {}}', b'{"resourceSpans": [1]}', b'{"resourceSpans": [{"scopeSpans": "x"}]}'],
)
def test_json_structure_errors_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        decode.decode_traces(body, decode.JSON)


def test_bag_converts_every_value_type() -> None:
    bag = flatten._Bag(flatten.Limits(max_value_bytes=256))
    values = [
        (AnyValue(string_value="s"), "s"),
        (AnyValue(int_value=-(2**63)), -(2**63)),
        (AnyValue(bool_value=True), True),
        (AnyValue(double_value=float("nan")), "nan"),
        (AnyValue(double_value=2.5), 2.5),
        (AnyValue(bytes_value=b"\x00\x01"), "AAE="),
        (AnyValue(), None),
    ]
    for value, expected in values:
        assert bag.value(value, "k") == expected
    array = AnyValue()
    array.array_value.values.add(int_value=1)
    array.array_value.values.add(string_value="two")
    assert bag.value(array, "k") == [1, "two"]
    kvlist = AnyValue()
    kv = kvlist.kvlist_value.values.add()
    kv.key, kv.value.string_value = "inner", "v"
    assert bag.value(kvlist, "k") == {"inner": "v"}
    long = bag.value(AnyValue(string_value="é" * 200), "long")
    assert len(long.encode()) <= 256 and bag.truncated_keys == ["long"]


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("12", "int", 12),
        (12.0, "int", 12),
        (12.5, "int", None),
        (True, "int", None),
        (2**40, "int32", None),
        (3, "float", 3.0),
        ("1e3", "float", 1000.0),
        (float("inf"), "float", None),
        (5, "str", None),
        (["a", "b"], "strlist", ["a", "b"]),
        (["a", 1], "strlist", None),
        ({"a": 1}, "str", None),
    ],
)
def test_coerce(value: object, kind: str, expected: object) -> None:
    assert flatten._coerce(value, kind) == expected


def _span(**fields: object) -> Span:
    span = Span(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s", start_time_unix_nano=NOW, end_time_unix_nano=NOW + 5
    )
    for key, value in fields.items():
        setattr(span, key, value)
    return span


def _rows(*spans: Span) -> flatten.Rows:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    batch = decode.ResourceItems(Resource(), [decode.ScopeItems(InstrumentationScope(), list(spans))])
    return flatten.span_rows([batch], flatten.Limits(), NOW)


def test_row_matches_the_column_list() -> None:
    rows = _rows(_span())
    (row,) = rows.rows
    assert len(row) == len(flatten.SPAN_COLUMNS)
    named = dict(zip(flatten.SPAN_COLUMNS, row, strict=True))
    assert named["trace_id"] == "01" * 16 and named["duration_ns"] == 5 and named["parent_span_id"] is None
    assert rows.months == {flatten.month_of(NOW)}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"trace_id": b"\x00" * 16}, "trace_id must be 16 bytes and not all zero"),
        ({"span_id": b"\x01" * 4}, "span_id must be 8 bytes"),
        ({"parent_span_id": b"\x01" * 3}, "parent_span_id must be empty or 8 bytes"),
        ({"start_time_unix_nano": 0, "end_time_unix_nano": 0}, "outside the accepted window"),
        ({"end_time_unix_nano": NOW - 1}, "before start_time_unix_nano"),
    ],
)
def test_unstorable_spans_are_rejected_with_the_reason(fields: dict[str, object], problem: str) -> None:
    rows = _rows(_span(**fields), _span(span_id=b"\x03" * 8))
    assert rows.rejected == 1 and len(rows.rows) == 1
    assert problem in rows.errors[0]


def test_contract_attributes_leave_the_bag_and_wrong_types_stay() -> None:
    span = _span()
    for key, value in (("process.exit.code", 3), ("glia.memory.peak_rss_bytes", "lots"), ("custom", "c")):
        kv = span.attributes.add()
        if isinstance(value, int):
            kv.key, kv.value.int_value = key, value
        else:
            kv.key, kv.value.string_value = key, value
    named = dict(zip(flatten.SPAN_COLUMNS, _rows(span).rows[0], strict=True))
    assert named["exit_code"] == 3
    assert named["peak_rss_bytes"] is None
    assert orjson.loads(named["attributes"]) == {"glia.memory.peak_rss_bytes": "lots", "custom": "c"}


def test_span_columns_cover_the_contract_once() -> None:
    columns = {**flatten.RESOURCE_COLUMNS, **flatten.SPAN_ATTRIBUTE_COLUMNS}.values()
    contract = [column for column, _ in columns]
    assert len(set(flatten.SPAN_COLUMNS)) == len(flatten.SPAN_COLUMNS)
    assert set(contract) <= set(flatten.SPAN_COLUMNS)


def test_queries_file_parses_into_named_queries() -> None:
    parsed = queries.parse("-- name: a\n-- a comment\nSELECT 1;\n\n-- name: b\nSELECT 2;\n")
    assert parsed == {"a": "SELECT 1;", "b": "SELECT 2;"}
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    assert {"insert_spans", "ensure_partition", "schema_revision"} <= set(queries.load())
