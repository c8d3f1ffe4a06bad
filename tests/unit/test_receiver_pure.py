"""Pure functions of the receiver: media types, decompression limits, OTLP/JSON decoding, flattening, queries."""

from __future__ import annotations

import gzip
import time
import zlib

import orjson
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver import decode, flatten, sqlfiles
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


def _json_items(body: bytes) -> tuple[list[object], decode.Report]:
    report = decode.Report()
    decoded = decode.decode_traces(body, decode.JSON)
    return [item for rs in decoded.items for ss in rs.scopes for _, item in ss.each(report)], report


def test_json_ids_are_hex_and_become_bytes() -> None:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "x"}
    (got,), report = _json_items(_json([span]))
    assert isinstance(got, Span)
    assert got.trace_id.hex() == span["traceId"] and got.span_id.hex() == span["spanId"]
    assert report.rejected == 0


def test_json_base64_id_is_named_in_the_rejection() -> None:
    items, report = _json_items(_json([{"traceId": "CvdlGRbNQ92ESOshHIAxnA==", "spanId": "b7ad6b7169203331"}]))
    assert items == [] and report.rejected == 1
    assert "hex, not base64" in report.errors[0]
    assert report.errors[0].startswith("resourceSpans[0].scopeSpans[0].spans[0]: traceId")


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(3, True), ("3", True), ("SPAN_KIND_SERVER", True), (40000, True), (2**31, False), (2**40, False),
     (str(2**40), False), (float(2**40), False), (-(2**31) - 1, False)],
)
def test_json_enum_numbers_outside_int32_are_refused_by_name(value: object, accepted: bool) -> None:
    # json_format would look 2**40 up by its low 32 bits and find kind 0
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "kind": value}
    items, report = _json_items(_json([span]))
    assert (len(items) == 1) is accepted, report.errors
    if not accepted:
        assert f"kind {int(value)} is out of range" in report.errors[0]  # type: ignore[call-overload]


def test_json_items_are_decoded_one_by_one_and_let_go() -> None:
    good = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
    decoded = decode.decode_traces(_json([good, {"traceId": "x"}, good]), decode.JSON)
    (scope,) = decoded.items[0].scopes
    assert scope.total() == 3
    times = list(decode.span_start_times(decoded.items))
    assert times == []  # no start times given
    report = decode.Report()
    assert [k for k, _ in scope.each(report)] == [0, 2]
    assert report.rejected == 1 and scope.items == [None, None, None]


def test_report_keeps_the_first_messages_and_counts_the_rest() -> None:
    report = decode.Report()
    for i in range(decode.MAX_MESSAGES + 5):
        report.reject(2, f"bad {i}")
    report.warn("cut one")
    report.merge(7, ["store refused x"])
    assert report.rejected == 2 * (decode.MAX_MESSAGES + 5) + 7
    message = report.message()
    assert message.startswith("bad 0; bad 1") and "and 6 more rejected" in message and message.endswith("cut one")
    assert decode.Report().message() == ""


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
    parsed = sqlfiles.parse("-- name: a\n-- a comment\nSELECT 1;\n\n-- name: b\nSELECT 2;\n")
    assert parsed == {"a": "SELECT 1;", "b": "SELECT 2;"}
    with pytest.raises(ValueError, match="defined twice"):
        sqlfiles.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    assert {"insert_spans", "ensure_partition"} <= set(sqlfiles.load("store.sql"))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kind": 40000}, "kind 40000 does not fit its column (smallint"),
        ({"kind": -40000}, "kind -40000 does not fit"),
        ({"dropped_attributes_count": 2**31}, "dropped_attributes_count 2147483648 does not fit its column (integer"),
        ({"end_time_unix_nano": 2**64 - 1}, f"end_time_unix_nano {2**64 - 1}: the duration"),
    ],
)
def test_numbers_that_do_not_fit_their_columns_reject_the_span(fields: dict[str, object], named: str) -> None:
    rows = _rows(_span(**fields), _span(span_id=b"\x03" * 8))
    assert rows.rejected == 1 and len(rows.rows) == 1
    assert named in rows.errors[0], rows.errors


def test_status_code_is_checked_too() -> None:
    span = _span()
    span.status.code = 40000  # type: ignore[assignment]
    rows = _rows(span)
    assert rows.rejected == 1 and "status.code 40000 does not fit" in rows.errors[0]


def test_free_text_is_cut_and_marked_and_reported() -> None:
    span = _span(name="n" * 70_000, trace_state="t" * 70_000)
    span.status.message = "é" * 40_000
    span.events.add(name="e" * 70_000)
    rows = _rows(span)
    (row,) = rows.rows
    named = dict(zip(flatten.SPAN_COLUMNS, row, strict=True))
    assert len(named["name"]) == 64 * 1024 and len(named["status_message"].encode()) <= 64 * 1024
    assert orjson.loads(named["attributes"])[flatten.TRUNCATED] == [
        "span.events.name", "span.name", "span.status.message", "span.trace_state"
    ]
    assert rows.rejected == 0 and "cut span.events.name, span.name" in rows.report.warnings[0]


def test_nul_is_replaced_before_cutting_so_the_limit_holds() -> None:
    bag = flatten._Bag(flatten.Limits(max_value_bytes=300))
    assert len(bag.text("\x00" * 300, "k").encode()) <= 300 and bag.truncated_keys == ["k"]


def test_rows_come_in_chunks_of_the_size_asked() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    spans = [_span(span_id=(i + 1).to_bytes(8, "big")) for i in range(250)]
    batch = decode.ResourceItems(Resource(), [decode.ScopeItems(InstrumentationScope(), spans)])
    report = decode.Report()
    sizes = [len(chunk) for chunk in flatten.span_chunks([batch], flatten.Limits(), NOW, report, chunk_rows=100)]
    assert sizes == [100, 100, 50]
    # a request is never cut into more than about 48 chunks (savepoints, each a subtransaction)
    assert flatten._chunk_size(100, 1_000_000) == 20834


def test_an_identifying_value_over_the_index_limit_rejects_the_resource_s_spans() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    resource = Resource()
    kv = resource.attributes.add()
    kv.key, kv.value.string_value = "host.name", "h" * (flatten.MAX_INDEXED_BYTES + 1)
    batch = decode.ResourceItems(resource, [decode.ScopeItems(InstrumentationScope(), [_span(), _span()])])
    rows = flatten.span_rows([batch], flatten.Limits(), NOW)
    assert rows.rows == [] and rows.rejected == 2
    assert "host.name is 1025 bytes, over the 1024-byte limit" in rows.errors[0]
    kv.value.string_value = "h" * flatten.MAX_INDEXED_BYTES  # at the limit: stored
    batch = decode.ResourceItems(resource, [decode.ScopeItems(InstrumentationScope(), [_span()])])
    assert len(flatten.span_rows([batch], flatten.Limits(), NOW).rows) == 1


def _schema() -> tuple[dict[str, dict[str, str]], list[tuple[str, list[str]]]]:
    """The column types of each table in schema.sql, and its btree indexes as (table, columns)."""
    import re

    text = (sqlfiles.SQL_DIR / "schema.sql").read_text()
    tables: dict[str, dict[str, str]] = {}
    indexes: list[tuple[str, list[str]]] = []
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\)", text, flags=re.S):
        tables[name] = dict(re.findall(r"^\s+(\w+)\s+(\w+)", body, flags=re.M))
        for key in re.findall(r"PRIMARY KEY \(([^)]*)\)", body):
            indexes.append((name, [c.strip() for c in key.split(",")]))
    index = r"CREATE (?:UNIQUE )?INDEX \w+ ON (\w+)(?: USING (\w+))? \(([^)]*)\)"
    for table, method, columns in re.findall(index, text):
        if method in ("", "btree"):
            indexes.append((table, [c.split()[0] for c in columns.split(",")]))
    return tables, indexes


def test_every_indexed_text_column_of_the_ingest_tables_has_a_rule() -> None:
    """An index added on a text column must come with its rule in flatten.INDEXED_TEXT (reject over the limit) or
    FIXED_TEXT (bounded by construction): PostgreSQL refuses index entries over 2,704 bytes."""
    tables, indexes = _schema()
    checked = 0
    for table, columns in indexes:
        if table not in flatten.INDEXED_TEXT:
            continue
        text = [c for c in columns if tables[table][c] == "text"]
        unbounded = [c for c in text if c not in flatten.FIXED_TEXT[table]]
        assert set(unbounded) <= set(flatten.INDEXED_TEXT[table]), (table, columns)
        # every column of one index at its limit, plus the fixed ones (32 hex digits at most) and their headers
        assert len(unbounded) * flatten.MAX_INDEXED_BYTES + 64 * len(columns) < 2704, (table, columns)
        checked += len(text)
    assert checked >= 8
    assert {c for cs in flatten.INDEXED_TEXT.values() for c in cs} <= {c for _, cs in indexes for c in cs}


def test_decode_budget_serves_in_order_and_refuses_after_the_wait() -> None:
    import asyncio

    from receiver.budget import DecodeBudget
    from receiver.errors import Unavailable

    async def scenario() -> list[str]:
        budget = DecodeBudget(100)
        order: list[str] = []

        async def take(name: str, size: int, wait: float, hold: float) -> None:
            try:
                async with budget.hold(size, wait):
                    order.append(f"{name} in")
                    await asyncio.sleep(hold)
            except Unavailable as exc:
                assert "GLIA_MAX_DECODING_BYTES" in exc.message
                order.append(f"{name} refused")

        first = asyncio.create_task(take("big", 1000, 1, 0.2))  # more than the budget: all of it, when free
        await asyncio.sleep(0.01)
        queued = [
            asyncio.create_task(take("second", 80, 5, 0.05)),
            asyncio.create_task(take("impatient", 1, 0.05, 0)),
        ]
        await asyncio.sleep(0.01)
        late = asyncio.create_task(take("small", 10, 5, 0))  # fits beside "second", but waits its turn
        await asyncio.gather(first, *queued, late)
        assert budget.used == 0
        return order

    assert asyncio.run(scenario()) == ["big in", "impatient refused", "second in", "small in"]
