"""POST /v1/logs: OTLP log records into `log_records`, with the statuses, limits and idempotency of /v1/traces.

Every test posts to a real receiver and reads what PostgreSQL holds; the stock SDK's log exporter is one of the
clients (the collector path is tests/e2e/test_logs.py).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.conftest import PgServer, ReceiverServer, run_sql, with_database
from tests.helpers import JS, PB, Sql, now_ns, post

# The SDK's own handler, deprecated in favour of a package this project does not install: still what an application
# using the SDK has, and what the issue names.
STOCK_HANDLER = pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")


def logs_request(*records: LogRecord, service: str = "logs-svc") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    for key, value in (("service.name", service), ("service.instance.id", "inst-1")):
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "tests.logs", "1.0"
    sl.log_records.extend(records)
    return request


def record(body: str, t: int | None = None, **fields: Any) -> LogRecord:
    fields.setdefault("observed_time_unix_nano", now_ns())
    r = LogRecord(time_unix_nano=now_ns() if t is None else t, **fields)
    r.body.string_value = body
    return r


def post_logs(receiver: ReceiverServer, body: bytes, headers: dict[str, str] = PB) -> httpx.Response:
    return post(receiver, body, headers, path="/v1/logs")


def rows(sql: Sql) -> list[dict[str, Any]]:
    return sql("SELECT * FROM log_records ORDER BY time, body::text")


def pb_partial(response: httpx.Response) -> ExportLogsServiceResponse:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    return ExportLogsServiceResponse.FromString(response.content)


# --- stored, linked, once -------------------------------------------------------------------------------------


def test_protobuf_records_are_stored_with_their_run_ids_and_typed_fields(receiver: ReceiverServer, sql: Sql) -> None:
    inside = record("step 3 failed", severity_number=17, severity_text="ERROR", trace_id=TRACE, span_id=SPAN)
    kv = inside.attributes.add()
    kv.key, kv.value.int_value = "code.lineno", 42
    outside = record("", t=0)  # no time of its own: the observed time places it
    outside.body.kvlist_value.values.add(key="event", value=inside.body)
    response = post_logs(receiver, logs_request(inside, outside).SerializeToString())
    assert not pb_partial(response).HasField("partial_success")
    stored = {r["severity_number"]: r for r in rows(sql)}
    assert set(stored) == {17, 0}
    first = stored[17]
    assert (first["trace_id"], first["span_id"]) == (TRACE.hex(), SPAN.hex())
    assert json.loads(first["body"]) == "step 3 failed"
    assert first["severity_text"] == "ERROR"
    assert json.loads(first["attributes"]) == {"code.lineno": 42}
    assert (first["service_name"], first["service_instance_id"]) == ("logs-svc", "inst-1")
    assert (first["scope_name"], first["scope_version"]) == ("tests.logs", "1.0")
    assert json.loads(first["resource"]) == {"service.name": "logs-svc", "service.instance.id": "inst-1"}
    assert first["time_unix_nano"] == inside.time_unix_nano
    second = stored[0]
    assert (second["trace_id"], second["span_id"], second["time_unix_nano"]) == (None, None, None)
    assert second["observed_time_unix_nano"] == outside.observed_time_unix_nano
    assert abs(second["time"].timestamp() * 1e9 - outside.observed_time_unix_nano) < 2000
    assert json.loads(second["body"]) == {"event": "step 3 failed"}


def test_a_resent_batch_and_duplicates_inside_one_are_stored_once(receiver: ReceiverServer, sql: Sql) -> None:
    a, b = record("first"), record("second")
    body = logs_request(a, b, a).SerializeToString()
    for _ in range(3):
        assert post_logs(receiver, body).status_code == 200
    assert sorted(json.loads(r["body"]) for r in rows(sql)) == ["first", "second"]
    # the same text at another time is another record
    assert post_logs(receiver, logs_request(record("first")).SerializeToString()).status_code == 200
    assert len(rows(sql)) == 3


@STOCK_HANDLER
def test_the_stock_sdk_logging_handler_writes_rows(receiver: ReceiverServer, sql: Sql) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "sdk-logs"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(f"{receiver.url}/v1/logs")))
    logger = logging.getLogger("tests.sdk-logs")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=provider))
    try:
        logger.warning("disk %s is %d%% full", "/scratch", 97)
    finally:
        logger.handlers.clear()
        provider.shutdown()
    (row,) = rows(sql)
    assert json.loads(row["body"]) == "disk /scratch is 97% full"
    assert (row["severity_number"], row["severity_text"], row["service_name"]) == (13, "WARN", "sdk-logs")


# --- OTLP/JSON ------------------------------------------------------------------------------------------------


def json_logs(*records: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-logs"}}]},
                    "scopeLogs": [{"scope": {"name": "j"}, "logRecords": list(records)}],
                }
            ]
        }
    )


def test_json_records_with_hex_ids_are_stored_and_bad_ones_rejected_alone(receiver: ReceiverServer, sql: Sql) -> None:
    t = now_ns()
    good = {
        "timeUnixNano": str(t),
        "severityNumber": 9,
        "body": {"stringValue": "hello"},
        "traceId": TRACE.hex(),
        "spanId": SPAN.hex(),
    }
    snake = {"time_unix_nano": t + 1, "severity_number": 5, "body": {"intValue": "7"}, "unknownField": 1}
    base64_ids = {**good, "traceId": "S/kvNXezTaajzpKdDg5HNg==", "body": {"stringValue": "b64"}}
    no_time = {"body": {"stringValue": "when?"}}
    response = post_logs(receiver, json_logs(good, snake, base64_ids, no_time, {}, []), JS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "4"
    message = partial["errorMessage"]
    assert "hex, not base64" in message and "both unset" in message and "not an object" in message
    stored = {json.loads(r["body"]): r for r in rows(sql)}
    assert set(stored) == {"hello", 7}  # an intValue body stays a number
    assert (stored["hello"]["trace_id"], stored["hello"]["span_id"]) == (TRACE.hex(), SPAN.hex())
    assert stored[7]["severity_number"] == 5


def test_json_severity_out_of_int32_is_rejected_by_name(receiver: ReceiverServer, sql: Sql) -> None:
    bad = {"timeUnixNano": str(now_ns()), "severityNumber": 2**40, "body": {"stringValue": "x"}}
    response = post_logs(receiver, json_logs(bad), JS)
    assert response.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "severityNumber" in response.json()["partialSuccess"]["errorMessage"]
    assert rows(sql) == []


# --- hostile values: rejected or cut alone --------------------------------------------------------------------


def test_values_that_do_not_fit_reject_their_record_alone(receiver: ReceiverServer, sql: Sql) -> None:
    records = [
        record("ok"),
        record("short trace id", trace_id=b"\x01" * 5),
        record("severity", severity_number=40_000),
        record("dropped", dropped_attributes_count=2**32 - 1),
        record("ancient", t=10**9),
        record("observed overflow", observed_time_unix_nano=2**64 - 1),
    ]
    partial = pb_partial(post_logs(receiver, logs_request(*records).SerializeToString())).partial_success
    assert partial.rejected_log_records == 5
    for words in ("trace_id must be empty or 16 bytes", "severity_number 40000", "dropped_attributes_count",
                  "outside the accepted window", "observed_time_unix_nano"):  # fmt: skip
        assert words in partial.error_message, (words, partial.error_message)
    assert [json.loads(r["body"]) for r in rows(sql)] == ["ok"]


def test_a_huge_body_and_too_many_attributes_are_cut_and_marked(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(max_attribute_value_bytes=1024, max_attributes_per_span=8)
    big = record("é" * 100_000 + "\x00")
    for i in range(20):
        kv = big.attributes.add()
        kv.key, kv.value.int_value = f"a{i}", i
    partial = pb_partial(post_logs(receiver, logs_request(big).SerializeToString())).partial_success
    assert partial.rejected_log_records == 0 and "cut log.body" in partial.error_message
    (row,) = rows(sql)
    body = json.loads(row["body"])
    assert len(body.encode()) <= 1024 and set(body) == {"é"}
    attributes = json.loads(row["attributes"])
    assert attributes.pop("glia.receiver.truncated") == ["log.body"]
    assert len(attributes) == 8 and row["dropped_attributes_count"] == 12


# --- whole requests refused, in the request's content type -----------------------------------------------------


def test_undecodable_bodies_are_400_with_a_status(receiver: ReceiverServer, sql: Sql) -> None:
    response = post_logs(receiver, b"\xff\xff\xff")
    assert response.status_code == 400
    status = status_pb2.Status.FromString(response.content)
    assert status.code == 3 and "ExportLogsServiceRequest" in status.message
    response = post_logs(receiver, b'{"resourceLogs": [', JS)
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]
    response = post_logs(receiver, b'{"resourceLogs": [{"scopeLogs": {"x": 1}}]}', JS)
    assert response.status_code == 400 and "must be an array" in response.json()["message"]
    assert rows(sql) == []


def test_size_type_and_method_limits(receiver_factory: Callable[..., ReceiverServer], sql: Sql) -> None:
    receiver = receiver_factory(max_body_bytes=64 * 1024)
    many = logs_request(*[record(f"line {i} " + "x" * 100) for i in range(2000)]).SerializeToString()
    assert len(many) > 64 * 1024
    assert post_logs(receiver, many).status_code == 413
    bomb = gzip.compress(many)
    assert len(bomb) < 64 * 1024
    assert post_logs(receiver, bomb, {**PB, "Content-Encoding": "gzip"}).status_code == 413
    assert post_logs(receiver, b"hello", {"Content-Type": "text/plain"}).status_code == 415
    response = httpx.get(receiver.url + "/v1/logs")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    small = logs_request(record("gzipped")).SerializeToString()
    assert post_logs(receiver, gzip.compress(small), {**PB, "Content-Encoding": "gzip"}).status_code == 200
    assert [json.loads(r["body"]) for r in rows(sql)] == ["gzipped"]


@STOCK_HANDLER
def test_postgres_down_is_503_and_the_sdk_retry_lands_the_record_once(
    private_pg: PgServer, receiver_factory: Callable[..., ReceiverServer]
) -> None:
    url = with_database(private_pg.admin_url, "glia")
    receiver = receiver_factory(database=url)
    private_pg.stop()
    response = post_logs(receiver, logs_request(record("lost?")).SerializeToString())
    assert response.status_code == 503 and response.headers["retry-after"] == "2"

    provider = LoggerProvider(resource=Resource.create({"service.name": "retry"}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(f"{receiver.url}/v1/logs", timeout=30))
    )
    logger = logging.getLogger("tests.retry-logs")
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=provider))
    sent = threading.Thread(target=lambda: logger.error("survivor"))
    sent.start()
    time.sleep(1.5)
    private_pg.start()
    sent.join(timeout=40)
    logger.handlers.clear()
    provider.shutdown()
    assert not sent.is_alive()
    assert [json.loads(r["body"]) for r in run_sql(url, "SELECT body FROM log_records")] == ["survivor"]
