"""Hostile values against the real receiver and PostgreSQL: numbers that do not fit their columns, identifying
values over the index limit, unbounded text, decode backpressure, aborted uploads. One bad item never costs the
others in its request."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from receiver import decode, flatten
from receiver.database import Database, create_pool
from receiver.store import Store, prepare_connection
from tests.conftest import ReceiverServer
from tests.helpers import JS, PB, Sql, json_body, json_span, now_ns, pb_request, post

INT64_MAX = 2**63 - 1


def partial(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.content[:300]
    return ExportTraceServiceResponse.FromString(response.content).partial_success


def span_names(sql: Sql) -> list[str]:
    return [r["name"] for r in sql("SELECT name FROM spans ORDER BY name")]


# --- item 1: every number is checked against its column; the item that does not fit is rejected alone -------


@pytest.mark.parametrize(
    ("field", "set_bad", "named"),
    [
        ("kind", lambda s: setattr(s, "kind", 40000), "kind 40000"),
        ("status.code", lambda s: setattr(s.status, "code", 40000), "status.code 40000"),
        (
            "dropped_attributes_count",
            lambda s: setattr(s, "dropped_attributes_count", 2**32 - 1),
            f"dropped_attributes_count {2**32 - 1}",
        ),
        ("duration", lambda s: setattr(s, "end_time_unix_nano", 2**64 - 1), f"end_time_unix_nano {2**64 - 1}"),
    ],
)
def test_a_span_field_that_overflows_its_column_is_rejected_alone(
    receiver: ReceiverServer, sql: Sql, field: str, set_bad: Callable[[Any], None], named: str
) -> None:
    request = pb_request(spans=4)
    set_bad(request.resource_spans[0].scope_spans[0].spans[2])
    result = partial(post(receiver, request.SerializeToString(), PB))
    assert result.rejected_spans == 1
    assert "spans[2]" in result.error_message and named in result.error_message, result.error_message
    assert span_names(sql) == ["span-0", "span-1", "span-3"]


def test_dropped_attributes_past_int32_with_our_own_drops_is_rejected(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(max_attributes_per_span=1)
    request = pb_request(spans=2, attrs=3)  # we drop 2 attributes of each span ourselves
    request.resource_spans[0].scope_spans[0].spans[0].dropped_attributes_count = 2**31 - 2
    result = partial(post(receiver, request.SerializeToString(), PB))
    assert result.rejected_spans == 1 and "dropped_attributes_count" in result.error_message
    assert sql("SELECT name, dropped_attributes_count FROM spans") == [
        {"name": "span-1", "dropped_attributes_count": 2}
    ]


def metrics_request() -> tuple[ExportMetricsServiceRequest, list[Metric]]:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "hostile-metrics"
    metrics = rm.scope_metrics.add().metrics
    now = now_ns()
    good = metrics.add(name="good.sum")
    good.sum.data_points.add(time_unix_nano=now, start_time_unix_nano=now - 10, as_int=3)
    bad_start = metrics.add(name="bad.start")
    bad_start.sum.data_points.add(time_unix_nano=now, start_time_unix_nano=2**64 - 1, as_int=1)
    histogram = metrics.add(name="bad.histogram")
    histogram.histogram.data_points.add(time_unix_nano=now, count=2**63, sum=1.0)
    exponential = metrics.add(name="bad.exponential")
    exponential.exponential_histogram.data_points.add(time_unix_nano=now, count=2**64 - 1)
    summary = metrics.add(name="bad.summary")
    summary.summary.data_points.add(time_unix_nano=now, count=2**63, sum=2.0)
    fine = metrics.add(name="good.histogram")
    fine.histogram.data_points.add(time_unix_nano=now, count=INT64_MAX, sum=1.0, bucket_counts=[2**64 - 1])
    return request, list(metrics)


def test_metric_points_that_overflow_their_columns_are_rejected_alone(receiver: ReceiverServer, sql: Sql) -> None:
    request, _ = metrics_request()
    response = post(receiver, request.SerializeToString(), PB, path="/v1/metrics")
    assert response.status_code == 200, response.content[:300]
    result = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert result.rejected_data_points == 4, result.error_message
    for name, field in [
        ("bad.start", "start_time_unix_nano"),
        ("bad.histogram", "count"),
        ("bad.exponential", "count"),
        ("bad.summary", "count"),
    ]:
        assert f"metric {name!r}" in result.error_message and field in result.error_message, result.error_message
    rows = sql("SELECT metric_name, count, data->'bucket_counts' AS buckets FROM metric_points ORDER BY metric_name")
    assert rows == [
        {"metric_name": "good.histogram", "count": INT64_MAX, "buckets": f"[{2**64 - 1}]"},
        {"metric_name": "good.sum", "count": None, "buckets": None},
    ]


@pytest.mark.parametrize("kind", [40000, 2**40, str(2**40), 2**32 + 3])
def test_json_kind_out_of_range_is_rejected_by_name_not_stored_as_another_kind(
    receiver: ReceiverServer, sql: Sql, kind: object
) -> None:
    # protobuf's json_format looks enum numbers up by their low 32 bits: 2**40 would become kind 0, 2**32 + 3 kind 3
    body = json_body(
        json_span(span_id="0" * 15 + "1", name="good-1"),
        json_span(span_id="0" * 15 + "2", name="bad", kind=kind),
        json_span(span_id="0" * 15 + "3", name="bad-status", status={"code": 2**40}),
        json_span(span_id="0" * 15 + "4", name="good-2"),
    )
    response = post(receiver, body, JS)
    assert response.status_code == 200, response.content[:300]
    result = response.json()["partialSuccess"]
    assert result["rejectedSpans"] == "2"
    assert "spans[1]" in result["errorMessage"] and f"kind {kind}" in result["errorMessage"], result
    assert "spans[2]" in result["errorMessage"] and f"status.code {2**40}" in result["errorMessage"], result
    assert span_names(sql) == ["good-1", "good-2"]


# --- item 3: identifying values over the index limit reject their items; free text is cut ----------------------


def resource_spans(request: ExportTraceServiceRequest, attributes: dict[str, str], names: list[str]) -> None:
    rs = request.resource_spans.add()
    for key, value in attributes.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    ss = rs.scope_spans.add()
    start = now_ns()
    for name in names:
        span = ss.spans.add(name=name, start_time_unix_nano=start, end_time_unix_nano=start + 1)
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)


@pytest.mark.parametrize("key", ["host.name", "service.name", "process.owner", "glia.script.sha256"])
def test_an_identifying_value_over_the_index_limit_rejects_its_spans_alone(
    receiver: ReceiverServer, sql: Sql, key: str
) -> None:
    request = ExportTraceServiceRequest()
    resource_spans(request, {"service.name": "fine", "host.name": "h1"}, ["good-1", "good-2"])
    # random hex: PostgreSQL would compress a repeated character into an index entry that fits
    huge = os.urandom(750).hex()  # 1,500 bytes, under PostgreSQL's own limit of 2,704 but over ours
    resource_spans(request, {"service.name": "fine", key: huge}, ["bad-1", "bad-2"])
    resource_spans(request, {"service.name": "fine", "host.name": "h2"}, ["good-3"])
    result = partial(post(receiver, request.SerializeToString(), PB))
    assert result.rejected_spans == 2
    assert f"{key} is 1500 bytes" in result.error_message and "1024" in result.error_message, result.error_message
    assert "resourceSpans[1]" in result.error_message
    assert span_names(sql) == ["good-1", "good-2", "good-3"]


def test_a_metric_name_over_the_index_limit_rejects_that_metric(receiver: ReceiverServer, sql: Sql) -> None:
    request, _ = metrics_request()
    metrics = request.resource_metrics[0].scope_metrics[0].metrics
    del metrics[1:5]
    metrics.add(name="m" + os.urandom(1000).hex()).gauge.data_points.add(time_unix_nano=now_ns(), as_double=1.0)
    response = post(receiver, request.SerializeToString(), PB, path="/v1/metrics")
    result = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert result.rejected_data_points == 1 and "metric name is 2001 bytes" in result.error_message
    names = [r["metric_name"] for r in sql("SELECT metric_name FROM metric_points ORDER BY 1")]
    assert names == ["good.histogram", "good.sum"]


def test_a_1_mib_span_name_and_status_message_are_cut_and_marked(receiver: ReceiverServer, sql: Sql) -> None:
    request = pb_request(spans=2)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.name = "é" * (512 * 1024)  # 1 MiB of UTF-8
    span.status.code, span.status.message = 2, "x" * (1024 * 1024)
    span.events.add(name="e" * 100_000, time_unix_nano=span.start_time_unix_nano)
    result = partial(post(receiver, request.SerializeToString(), PB))
    assert result.rejected_spans == 0  # a warning, not a rejection (OTLP allows a message with nothing rejected)
    assert "cut" in result.error_message and "name" in result.error_message, result.error_message
    rows = sql(
        "SELECT octet_length(name) AS name, octet_length(status_message) AS message,"
        " octet_length(events->0->>'name') AS event, attributes->'glia.receiver.truncated' AS marked"
        " FROM spans ORDER BY start_time_unix_nano, name DESC"
    )
    cut = next(r for r in rows if r["name"] > 100)
    assert cut["name"] == 64 * 1024 and cut["message"] == 64 * 1024 and cut["event"] == 64 * 1024
    assert orjson.loads(cut["marked"]) == ["span.events.name", "span.name", "span.status.message"]
    assert len(rows) == 2


# --- the store: anything a row does wrong is isolated, in O(bad rows x log n) statements ------------------------


def test_a_value_asyncpg_cannot_encode_is_isolated_by_the_store(database_url: str, sql: Sql) -> None:
    """Flatten checks every number, but if a value still reaches the driver, it costs only its own row."""
    batches = decode.decode_traces(pb_request(spans=5).SerializeToString(), decode.PROTOBUF).items
    rows = flatten.span_rows(batches, flatten.Limits(), now_ns())
    kind = flatten.SPAN_COLUMNS.index("kind")
    bad = list(rows.rows[3])
    bad[kind] = 40000  # bypassing flatten's own check
    rows.rows[3] = tuple(bad)

    async def write() -> Any:
        pool = await create_pool(database_url, max_size=2, statement_timeout_ms=10_000, init=prepare_connection)
        try:
            return await Store(Database(pool, acquire_timeout=5)).write_spans([rows.rows], rows.months)
        finally:
            await pool.close()

    result = asyncio.run(write())
    assert result.rejected == 1 and result.inserted == 4
    assert result.errors and "out of" in result.errors[0], result.errors
    assert span_names(sql) == ["span-0", "span-1", "span-2", "span-4"]


def install_poison(sql: Sql) -> None:
    """A trigger refusing spans named 'poison*' (a row PostgreSQL refuses that flatten could not foresee), and a
    sequence counting INSERT statements into spans (sequences are not rolled back with a failed savepoint)."""
    sql("CREATE SEQUENCE insert_statements")
    sql(
        "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM nextval('insert_statements'); RETURN NULL; END $$"
    )
    sql("CREATE TRIGGER count_insert BEFORE INSERT ON spans FOR EACH STATEMENT EXECUTE FUNCTION count_insert()")
    sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.name LIKE 'poison%' THEN RAISE EXCEPTION 'refusing %', NEW.name; END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON spans FOR EACH ROW EXECUTE FUNCTION refuse_poison()")


def test_rows_the_database_refuses_are_found_by_bisection_not_one_by_one(receiver: ReceiverServer, sql: Sql) -> None:
    install_poison(sql)
    request = pb_request(spans=2000)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[700].name, spans[1500].name = "poison-a", "poison-b"
    result = partial(post(receiver, request.SerializeToString(), PB))
    assert result.rejected_spans == 2
    assert "refusing poison-a" in result.error_message and "refusing poison-b" in result.error_message
    assert int(sql("SELECT count(*) AS n FROM spans")[0]["n"]) == 1998
    statements = sql("SELECT last_value FROM insert_statements")[0]["last_value"]
    assert statements <= 80, f"{statements} INSERT statements for 2 bad rows in 2,000"  # one by one: 2,000+


def test_an_item_that_fails_alone_is_rejected_even_when_it_is_the_whole_request(
    receiver: ReceiverServer, sql: Sql
) -> None:
    install_poison(sql)
    result = partial(post(receiver, pb_request(spans=1, name="poison").SerializeToString(), PB))
    assert result.rejected_spans == 1 and "refusing poison" in result.error_message
    assert span_names(sql) == []


# --- item 5: decoding is bounded; a request that cannot get a turn is answered 503 + Retry-After ------------


def test_decode_budget_exhausted_is_503_with_retry_after(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql, database_url: str
) -> None:
    receiver = receiver_factory(max_decoding_bytes=1024, decode_wait_seconds=0.2)
    first = pb_request(spans=50, seed=1).SerializeToString()  # over the budget: it takes all of it
    # hold the first request inside its write: spans locked by a transaction of ours
    import asyncpg

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")
                first_done.clear()
                thread.start()
                for _ in range(200):  # until the receiver waits on our lock
                    waiting = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'glia-receiver'"
                        " AND wait_event_type = 'Lock'"
                    )
                    if waiting:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the first request never reached the database")
                second.append(post(receiver, pb_request(spans=1, seed=2).SerializeToString(), PB))
        finally:
            await conn.close()

    first_done = threading.Event()
    responses: list[httpx.Response] = []
    second: list[httpx.Response] = []

    def send_first() -> None:
        responses.append(post(receiver, first, PB))
        first_done.set()

    thread = threading.Thread(target=send_first)
    asyncio.run(hold())
    thread.join(timeout=30)
    (busy,) = second
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "2"
    assert "decod" in busy.text
    assert responses[0].status_code == 200
    assert int(sql("SELECT count(*) AS n FROM spans")[0]["n"]) == 50
    assert post(receiver, pb_request(spans=1, seed=2).SerializeToString(), PB).status_code == 200  # and after


def test_big_bodies_are_written_in_chunks_in_one_transaction(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(write_chunk_rows=100)
    install_poison(sql)
    sql("CREATE TABLE seen (xid xid8)")  # the top-level transaction of every INSERT that stayed
    sql(
        "CREATE FUNCTION log_xid() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO seen VALUES (pg_current_xact_id()); RETURN NULL; END $$"
    )
    sql("CREATE TRIGGER log_xid AFTER INSERT ON spans FOR EACH STATEMENT EXECUTE FUNCTION log_xid()")
    request = pb_request(spans=1000)
    request.resource_spans[0].scope_spans[0].spans[999].name = "poison-last"
    result = partial(post(receiver, request.SerializeToString(), PB))
    assert result.rejected_spans == 1
    assert int(sql("SELECT count(*) AS n FROM spans")[0]["n"]) == 999
    # chunks of 100 rows, each its own INSERT, all in one transaction
    (row,) = sql("SELECT count(*) AS statements, count(DISTINCT xid::text) AS transactions FROM seen")
    assert row["transactions"] == 1 and row["statements"] >= 10, row


# --- item 4 (the ingest part): a client that goes away mid-body is not an internal error -----------------


def test_a_client_disconnect_mid_body_is_logged_at_debug_not_error(
    receiver: ReceiverServer, sql: Sql, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="glia.receiver")
    body = pb_request(spans=200).SerializeToString()
    with socket.create_connection(("127.0.0.1", receiver.port)) as conn:
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn.sendall(head + body[: len(body) // 2])
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("went away" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert post(receiver, pb_request().SerializeToString(), PB).status_code == 200
    assert span_names(sql) == ["span-0"]
