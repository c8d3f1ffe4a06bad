"""Fuzzing the decoders through the real receiver: protobuf and OTLP/JSON bodies for traces, metrics and logs.

Each example is one request to a real uvicorn receiver storing into a real PostgreSQL. The properties, whatever the
hostile part of a body holds (values at and past every integer field's range, wrong JSON types, control characters,
huge strings, broken ids, nested values, random and mutated bytes):

- the receiver never answers 500 and never drops the connection;
- a batch mixing good items with hostile ones is accepted (200), and every good item is in PostgreSQL once the
  answer is in; a 503 from backpressure is allowed (the client would retry);
- the receiver is still ready afterwards.

Under CI=true the examples are derandomized (the same inputs every run) and the whole module stays well inside 60 s.
Locally each run draws new inputs; `GLIA_FUZZ_EXAMPLES` sets how many per test (e.g. 2000 for a longer hunt).
"""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import IN_CI, ReceiverServer

Sql = Callable[..., list[dict[str, Any]]]
PB = "application/x-protobuf"
JSON = "application/json"
NOW = time.time_ns()
EXAMPLES = int(os.environ.get("GLIA_FUZZ_EXAMPLES", "60"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=IN_CI,
    database=None if IN_CI else settings.default.database,
    # one receiver and one database serve every example: ids are unique per example, so examples cannot collide
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

# --- values ----------------------------------------------------------------------------------------------------

# the edges of every integer type OTLP and PostgreSQL use, and a step past each
EDGES = [0, 1, -1, 2**7, 2**15 - 1, 2**15, 40_000, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**53 + 1]
EDGES += [2**63 - 1, 2**63, 2**64 - 1, -(2**15) - 1, -(2**31), -(2**31) - 1, -(2**63)]


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers of a protobuf field's range, biased to the edges inside it."""
    return st.one_of(st.sampled_from([e for e in EDGES if low <= e <= high]), st.integers(low, high))


UINT32 = ints(0, 2**32 - 1)
INT32 = ints(-(2**31), 2**31 - 1)
UINT64 = ints(0, 2**64 - 1)
INT64 = ints(-(2**63), 2**63 - 1)
# times: mostly around now (so items reach the database), sometimes anywhere fixed64 can go
TIMES = st.one_of(*[st.integers(-(10**13), 10**13).map(lambda d: NOW + d)] * 3, UINT64)
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.sampled_from(["\x00", "\x1b[31mred\x1b[0m", '=HYPERLINK("http://x")', "\u202e", "é" * 40_000]),
    st.integers(10_000, 300_000).map(lambda n: "x" * n),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def any_values() -> st.SearchStrategy[AnyValue]:
    base = st.one_of(
        TEXT.map(lambda s: AnyValue(string_value=s)),
        INT64.map(lambda i: AnyValue(int_value=i)),
        FLOATS.map(lambda f: AnyValue(double_value=f)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.binary(max_size=64).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )

    def nest(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
        arrays = st.lists(children, max_size=4).map(_array)
        kvlists = st.lists(st.tuples(TEXT, children), max_size=4).map(_kvlist)
        return st.one_of(arrays, kvlists)

    return st.recursive(base, nest, max_leaves=12)


def _array(values: list[AnyValue]) -> AnyValue:
    v = AnyValue()
    v.array_value.values.extend(values)
    return v


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    v = AnyValue()
    v.kvlist_value.values.extend(KeyValue(key=k, value=val) for k, val in pairs)
    return v


# the contract's keys, so hostile values land on typed columns too
KEYS = st.one_of(
    st.sampled_from(
        [
            "service.name", "host.name", "process.owner", "process.pid", "process.command_args", "glia.script.sha256",
            "process.exit.code", "glia.cpu.percent", "glia.memory.peak_rss_bytes", "glia.io.read_bytes",
            "glia.run.kind", "glia.trace_id", "glia.span_id",
        ]
    ),
    TEXT,
)  # fmt: skip
ATTRS = st.lists(st.tuples(KEYS, any_values()), max_size=6).map(
    lambda pairs: [KeyValue(key=k, value=v) for k, v in pairs]
)
# ids of the right length most of the time, so most hostile items get past the id checks to the deeper stages
IDS16 = st.one_of(*[st.integers(1, 2**128 - 1).map(lambda i: i.to_bytes(16, "big"))] * 3, st.binary(max_size=20))
IDS8 = st.one_of(*[st.integers(1, 2**64 - 1).map(lambda i: i.to_bytes(8, "big"))] * 3, st.binary(max_size=12))
# durations: mostly sane, sometimes overflowing the end time or going backwards
DURATIONS = st.one_of(st.integers(0, 10**10), st.integers(0, 10**10), UINT64, st.integers(-(10**9), -1))


# --- hostile items ---------------------------------------------------------------------------------------------


@st.composite
def hostile_spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=b"\xee" + draw(IDS16)[1:],  # never a good item's id (those start 0x11)
        span_id=draw(IDS8),
        parent_span_id=draw(st.one_of(st.just(b""), IDS8)),
        trace_state=draw(TEXT),
        name=draw(TEXT),
        kind=draw(INT32),  # an open enum: any int32 is on the wire
        dropped_attributes_count=draw(UINT32),
        dropped_events_count=draw(UINT32),
        dropped_links_count=draw(UINT32),
        flags=draw(UINT32),
    )
    span.start_time_unix_nano = start = draw(TIMES)
    span.end_time_unix_nano = max(0, min(start + draw(DURATIONS), 2**64 - 1))
    span.attributes.extend(draw(ATTRS))
    span.status.code = draw(INT32)
    span.status.message = draw(TEXT)
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(time_unix_nano=draw(TIMES), name=draw(TEXT), dropped_attributes_count=draw(UINT32))
        event.attributes.extend(draw(ATTRS))
    for _ in range(draw(st.integers(0, 2))):
        link = span.links.add(trace_id=draw(IDS16), span_id=draw(IDS8), trace_state=draw(TEXT))
        link.attributes.extend(draw(ATTRS))
    return span


@st.composite
def hostile_metrics(draw: st.DrawFn) -> Metric:
    metric = Metric(name=draw(TEXT), unit=draw(TEXT), description=draw(TEXT))
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary", "none"]))
    for _ in range(draw(st.integers(1, 3))):
        common = {"time_unix_nano": draw(TIMES), "start_time_unix_nano": draw(TIMES), "flags": draw(UINT32)}
        if kind in ("gauge", "sum"):
            data = metric.gauge if kind == "gauge" else metric.sum
            if kind == "sum":
                metric.sum.aggregation_temporality = draw(INT32)
                metric.sum.is_monotonic = draw(st.booleans())
            point = data.data_points.add(**common)
            if draw(st.booleans()):
                point.as_int = draw(INT64)
            else:
                point.as_double = draw(FLOATS)
        elif kind == "histogram":
            metric.histogram.aggregation_temporality = draw(INT32)
            point = metric.histogram.data_points.add(count=draw(UINT64), sum=draw(FLOATS), **common)
            point.bucket_counts.extend(draw(st.lists(UINT64, max_size=4)))
            point.explicit_bounds.extend(draw(st.lists(FLOATS, max_size=4)))
            if draw(st.booleans()):
                point.min, point.max = draw(FLOATS), draw(FLOATS)
        elif kind == "exponential_histogram":
            point = metric.exponential_histogram.data_points.add(
                count=draw(UINT64),
                scale=draw(INT32),
                zero_count=draw(UINT64),
                zero_threshold=draw(FLOATS),
                sum=draw(FLOATS),
                **common,
            )
            point.positive.offset = draw(INT32)
            point.positive.bucket_counts.extend(draw(st.lists(UINT64, max_size=4)))
            point.negative.offset = draw(INT32)
        elif kind == "summary":
            point = metric.summary.data_points.add(count=draw(UINT64), sum=draw(FLOATS), **common)
            for _ in range(draw(st.integers(0, 2))):
                point.quantile_values.add(quantile=draw(FLOATS), value=draw(FLOATS))
        else:
            break
        point.attributes.extend(draw(ATTRS))
        if kind != "summary" and draw(st.booleans()):
            exemplar = point.exemplars.add(time_unix_nano=draw(TIMES), trace_id=draw(IDS16), span_id=draw(IDS8))
            exemplar.filtered_attributes.extend(draw(ATTRS))
            exemplar.as_double = draw(FLOATS)
    return metric


@st.composite
def hostile_log_records(draw: st.DrawFn) -> LogRecord:
    record = LogRecord(
        time_unix_nano=draw(st.one_of(st.just(0), TIMES)),
        observed_time_unix_nano=draw(st.one_of(st.just(0), TIMES)),
        severity_number=draw(INT32),  # an open enum: any int32 is on the wire
        severity_text=draw(TEXT),
        event_name=draw(TEXT),
        dropped_attributes_count=draw(UINT32),
        flags=draw(UINT32),
        trace_id=draw(st.one_of(st.just(b""), IDS16)),
        span_id=draw(st.one_of(st.just(b""), IDS8)),
    )
    record.body.CopyFrom(draw(any_values()))
    record.attributes.extend(draw(ATTRS))
    return record


# --- good items ------------------------------------------------------------------------------------------------


def good_span(index: int) -> Span:
    span = Span(
        trace_id=b"\x11" + uuid.uuid4().bytes[1:],
        span_id=(index + 1).to_bytes(8, "big"),
        name=f"good-{index}",
        kind=1,
        start_time_unix_nano=NOW,
        end_time_unix_nano=NOW + 1_000_000,
    )
    span.attributes.add(key="glia.run.kind", value=AnyValue(string_value="block"))
    span.attributes.add(key="process.exit.code", value=AnyValue(int_value=0))
    return span


def good_metric(name: str) -> Metric:
    metric = Metric(name=name, unit="By")
    metric.gauge.data_points.add(time_unix_nano=time.time_ns(), as_int=1024)
    return metric


def good_record(body: str) -> LogRecord:
    record = LogRecord(time_unix_nano=time.time_ns(), severity_number=9, trace_id=b"\x11" + uuid.uuid4().bytes[1:])
    record.body.string_value = body
    return record


def log_request(good: list[LogRecord], hostile: list[LogRecord], hostile_resource: list[KeyValue]) -> Any:
    request = ExportLogsServiceRequest()
    clean = request.resource_logs.add()
    clean.resource.attributes.add(key="service.name", value=AnyValue(string_value="fuzz"))
    clean.scope_logs.add().log_records.extend([*good[:1], *hostile[:1], *good[1:], *hostile[1:2]])
    mixed = request.resource_logs.add()
    mixed.resource.attributes.extend(hostile_resource)
    mixed.scope_logs.add().log_records.extend(hostile[2:] or hostile[:1])
    return request


def trace_request(good: list[Span], hostile: list[Span], hostile_resource: list[KeyValue]) -> ExportTraceServiceRequest:
    """Good spans among hostile ones in a clean resource's scope, and more hostile spans under a hostile resource.

    A good span is one whose own fields and resource are fine: spans under a resource whose identifying values are
    refused (a 10 kB service.name) are rightly rejected with it, so no good span is put there.
    """
    request = ExportTraceServiceRequest()
    clean = request.resource_spans.add()
    clean.resource.attributes.add(key="service.name", value=AnyValue(string_value="fuzz"))
    half = len(good) // 2
    clean.scope_spans.add().spans.extend([*good[:half], *hostile[:1], *good[half:], *hostile[1:2]])
    mixed = request.resource_spans.add()
    mixed.resource.attributes.extend(hostile_resource)
    mixed.scope_spans.add().spans.extend(hostile[2:] or hostile[:1])
    return request


def metric_request(good: list[Metric], hostile: list[Metric], hostile_resource: list[KeyValue]) -> Any:
    request = ExportMetricsServiceRequest()
    clean = request.resource_metrics.add()
    clean.resource.attributes.add(key="service.name", value=AnyValue(string_value="fuzz"))
    clean.scope_metrics.add().metrics.extend([*good[:1], *hostile[:1], *good[1:], *hostile[1:2]])
    mixed = request.resource_metrics.add()
    mixed.resource.attributes.extend(hostile_resource)
    mixed.scope_metrics.add().metrics.extend(hostile[2:] or hostile[:1])
    return request


# --- OTLP/JSON ---------------------------------------------------------------------------------------------------


def to_otlp_json(message: Any) -> Any:
    """A protobuf message as OTLP/JSON: hex ids, int64 as strings, enums as integers."""
    from google.protobuf import json_format

    tree = json_format.MessageToDict(message, use_integers_for_enums=True)
    return _hex_ids(tree)


def _hex_ids(node: Any) -> Any:
    import base64

    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                out[key] = base64.b64decode(value).hex()
            else:
                out[key] = _hex_ids(value)
        return out
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(["NaN", "Infinity", "-0", "1e400", "0x10", "  12  ", "18446744073709551616", "00ff" * 9]),
)


@st.composite
def mutated(draw: st.DrawFn, tree: Any) -> Any:
    """`tree` with a few values (at any depth) replaced by junk of another type, or keys dropped."""
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in list(node):
                paths.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for i in range(len(node)):
                paths.append((node, i))
                walk(node[i])

    walk(tree)
    for _ in range(draw(st.integers(1, 4))):
        if not paths:
            break
        parent, key = draw(st.sampled_from(paths))
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(key, None)
        elif (isinstance(parent, dict) and key in parent) or (isinstance(parent, list) and key < len(parent)):
            parent[key] = draw(JUNK)
    return tree


def dumps(tree: Any) -> bytes:
    """JSON text of `tree`; the standard encoder, as orjson refuses integers past 64 bits (which JUNK has)."""
    return json.dumps(tree).encode()


# --- checks ------------------------------------------------------------------------------------------------------


def post(receiver: ReceiverServer, path: str, body: bytes, kind: str, gzipped: bool = False) -> httpx.Response:
    headers = {"Content-Type": kind}
    if gzipped:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    response = httpx.post(receiver.url + path, content=body, headers=headers, timeout=60)
    assert response.status_code != 500, f"500 from {path}: {response.content[:500]!r}"
    return response


def assert_stored(sql: Sql, response: httpx.Response, good: list[Span]) -> None:
    if response.status_code == 503:
        assert response.headers.get("retry-after"), "a 503 must say when to retry"
        return
    assert response.status_code == 200, f"mixed batch refused whole: {response.status_code} {response.content[:500]!r}"
    ids = [s.trace_id.hex() for s in good]
    rows = sql("SELECT trace_id, span_id, name FROM spans WHERE trace_id = ANY($1::text[])", ids)
    stored = {(r["trace_id"], r["span_id"]) for r in rows}
    missing = [s.name for s in good if (s.trace_id.hex(), s.span_id.hex()) not in stored]
    assert not missing, f"good spans lost beside hostile ones: {missing}; answer {response.content[:500]!r}"


def assert_points_stored(sql: Sql, response: httpx.Response, names: list[str]) -> None:
    if response.status_code == 503:
        assert response.headers.get("retry-after")
        return
    assert response.status_code == 200, f"mixed batch refused whole: {response.status_code} {response.content[:500]!r}"
    rows = sql("SELECT metric_name FROM metric_points WHERE metric_name = ANY($1::text[])", names)
    assert sorted(r["metric_name"] for r in rows) == sorted(names), response.content[:500]


def assert_records_stored(sql: Sql, response: httpx.Response, bodies: list[str]) -> None:
    if response.status_code == 503:
        assert response.headers.get("retry-after")
        return
    assert response.status_code == 200, f"mixed batch refused whole: {response.status_code} {response.content[:500]!r}"
    rows = sql("SELECT body #>> '{}' AS body FROM log_records WHERE body #>> '{}' = ANY($1::text[])", bodies)
    assert sorted(r["body"] for r in rows) == sorted(bodies), response.content[:500]


@pytest.fixture
def fuzz_receiver(receiver: ReceiverServer) -> ReceiverServer:
    yield receiver
    assert httpx.get(receiver.url + "/readyz", timeout=10).status_code == 200, "the receiver did not survive"


# --- the tests ---------------------------------------------------------------------------------------------------


@FUZZ
@given(
    hostile=st.lists(hostile_spans(), min_size=1, max_size=4),
    resource=ATTRS,
    gzipped=st.booleans(),
)
def test_protobuf_spans(fuzz_receiver: ReceiverServer, sql: Sql, hostile: list[Span], resource: list[KeyValue],
                        gzipped: bool) -> None:  # fmt: skip
    good = [good_span(i) for i in range(4)]
    body = trace_request(good, hostile, resource).SerializeToString()
    response = post(fuzz_receiver, "/v1/traces", body, PB, gzipped)
    assert_stored(sql, response, good)


@FUZZ
@given(hostile=st.lists(hostile_metrics(), min_size=1, max_size=3), resource=ATTRS)
def test_protobuf_metrics(fuzz_receiver: ReceiverServer, sql: Sql, hostile: list[Metric],
                          resource: list[KeyValue]) -> None:  # fmt: skip
    names = [f"fuzz.good.{uuid.uuid4().hex}" for _ in range(3)]
    body = metric_request([good_metric(n) for n in names], hostile, resource).SerializeToString()
    response = post(fuzz_receiver, "/v1/metrics", body, PB)
    assert_points_stored(sql, response, names)


@FUZZ
@given(data=st.data(), hostile=st.lists(hostile_spans(), min_size=1, max_size=3))
def test_json_spans(fuzz_receiver: ReceiverServer, sql: Sql, data: st.DataObject, hostile: list[Span]) -> None:
    good = [good_span(i) for i in range(4)]
    request = trace_request(good, [], [])
    tree = to_otlp_json(request)
    # hostile spans, each mutated on its own, among the good ones of the clean resource's scope
    spans = tree["resourceSpans"][0]["scopeSpans"][0]["spans"]
    for span in hostile:
        spans.insert(data.draw(st.integers(0, len(spans))), data.draw(mutated(to_otlp_json(span))))
    response = post(fuzz_receiver, "/v1/traces", dumps(tree), JSON)
    assert response.headers["content-type"].startswith(JSON)
    assert_stored(sql, response, good)


@FUZZ
@given(data=st.data(), hostile=st.lists(hostile_metrics(), min_size=1, max_size=3))
def test_json_metrics(fuzz_receiver: ReceiverServer, sql: Sql, data: st.DataObject, hostile: list[Metric]) -> None:
    names = [f"fuzz.good.{uuid.uuid4().hex}" for _ in range(3)]
    tree = to_otlp_json(metric_request([good_metric(n) for n in names], [], []))
    metrics = tree["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    for metric in hostile:
        metrics.insert(data.draw(st.integers(0, len(metrics))), data.draw(mutated(to_otlp_json(metric))))
    response = post(fuzz_receiver, "/v1/metrics", dumps(tree), JSON)
    assert_points_stored(sql, response, names)


@FUZZ
@given(hostile=st.lists(hostile_log_records(), min_size=1, max_size=4), resource=ATTRS, gzipped=st.booleans())
def test_protobuf_logs(fuzz_receiver: ReceiverServer, sql: Sql, hostile: list[LogRecord], resource: list[KeyValue],
                       gzipped: bool) -> None:  # fmt: skip
    bodies = [f"fuzz.good.{uuid.uuid4().hex}" for _ in range(3)]
    body = log_request([good_record(b) for b in bodies], hostile, resource).SerializeToString()
    response = post(fuzz_receiver, "/v1/logs", body, PB, gzipped)
    assert_records_stored(sql, response, bodies)


@FUZZ
@given(data=st.data(), hostile=st.lists(hostile_log_records(), min_size=1, max_size=3))
def test_json_logs(fuzz_receiver: ReceiverServer, sql: Sql, data: st.DataObject, hostile: list[LogRecord]) -> None:
    bodies = [f"fuzz.good.{uuid.uuid4().hex}" for _ in range(3)]
    tree = to_otlp_json(log_request([good_record(b) for b in bodies], [], []))
    records = tree["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    for record in hostile:
        records.insert(data.draw(st.integers(0, len(records))), data.draw(mutated(to_otlp_json(record))))
    response = post(fuzz_receiver, "/v1/logs", dumps(tree), JSON)
    assert response.headers["content-type"].startswith(JSON)
    assert_records_stored(sql, response, bodies)


@FUZZ
@given(
    data=st.data(),
    path=st.sampled_from(["/v1/traces", "/v1/metrics", "/v1/logs"]),
    kind=st.sampled_from([PB, JSON]),
    gzipped=st.booleans(),
)
def test_mutated_and_random_bodies(fuzz_receiver: ReceiverServer, data: st.DataObject, path: str, kind: str,
                                   gzipped: bool) -> None:  # fmt: skip
    """Whole bodies broken anywhere: a clear 4xx or a 200, never a 500, never a dropped connection."""
    good = trace_request([good_span(i) for i in range(3)], data.draw(st.lists(hostile_spans(), max_size=2)), [])
    valid = good.SerializeToString() if kind == PB else orjson.dumps(to_otlp_json(good))
    body = data.draw(
        st.one_of(
            st.binary(max_size=2048),
            st.lists(
                st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)), min_size=1, max_size=8
            ).map(lambda flips: _flip(valid, flips)),
            st.integers(0, len(valid)).map(lambda n: valid[:n]),
        )
    )
    response = post(fuzz_receiver, path, body, kind, gzipped)
    assert response.status_code in (200, 400, 413, 503), response.content[:300]
    if response.status_code == 400:
        assert response.headers["content-type"].startswith(kind)
        message = response.content if kind == PB else response.json()["message"]
        assert message, "a 400 must say what was wrong"


def _flip(body: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(body)
    for at, value in flips:
        out[at] = value
    return bytes(out)
