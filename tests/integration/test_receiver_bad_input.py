"""Malformed, oversized, wrongly typed and hostile requests: the status, the message, and what PostgreSQL holds."""

from __future__ import annotations

import gzip
import os
import threading
import time
import zlib
from collections.abc import Callable

import httpx
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.conftest import PgServer, ReceiverServer, run_sql, with_database
from tests.helpers import JS, PB, Sql, json_body, json_span, now_ns, pb_request, post


def pb_status(response: httpx.Response) -> status_pb2.Status:
    assert response.headers["content-type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(response.content)


def count(sql: Sql) -> int:
    return int(sql("SELECT count(*) AS n FROM spans")[0]["n"])


# --- undecodable bodies: 400 with a google.rpc.Status, nothing stored ------------------------------------------


def test_truncated_protobuf_is_400(receiver: ReceiverServer, sql: Sql) -> None:
    body = pb_request(spans=3).SerializeToString()
    response = post(receiver, body[: len(body) // 2], PB)
    assert response.status_code == 400
    status = pb_status(response)
    assert status.code == 3  # INVALID_ARGUMENT
    assert "not a valid protobuf ExportTraceServiceRequest" in status.message
    assert count(sql) == 0


def test_random_bytes_are_400_and_the_service_carries_on(receiver: ReceiverServer, sql: Sql) -> None:
    response = post(receiver, os.urandom(4096), PB)
    assert response.status_code == 400
    assert "protobuf" in pb_status(response).message
    assert post(receiver, pb_request().SerializeToString(), PB).status_code == 200
    assert count(sql) == 1


def test_invalid_json_is_400_with_a_json_status(receiver: ReceiverServer, sql: Sql) -> None:
    response = post(receiver, b'{"resourceSpans": [', JS)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 3 and "not valid JSON" in body["message"]
    assert count(sql) == 0


def test_invalid_utf8_is_400(receiver: ReceiverServer, sql: Sql) -> None:
    good = pb_request(name="MARKER").SerializeToString()
    bad = good.replace(b"MARKER", b"MA\xff\xfeER")
    response = post(receiver, bad, PB)
    assert response.status_code == 400
    assert "protobuf" in pb_status(response).message
    response = post(receiver, json_body(json_span(name="x")).replace(b'"x"', b'"\xff\xfe"'), JS)
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]
    assert count(sql) == 0


# --- per-span problems: that span rejected in partial_success, the rest stored --------------------------------


def test_base64_and_wrong_length_ids_reject_only_those_spans(receiver: ReceiverServer, sql: Sql) -> None:
    body = json_body(
        json_span(trace_id="AAAAAAAAAAAAAAAAAAAAAQ==", span_id="0" * 15 + "2"),  # base64 of a 16-byte id
        json_span(trace_id="abc", span_id="0" * 15 + "3"),
        json_span(span_id="0" * 14 + "4"),  # 15 hex digits
        json_span(span_id="0" * 15 + "5"),  # the good one
    )
    response = post(receiver, body, JS)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "3"
    assert "hex, not base64" in partial["errorMessage"]
    assert "spans[1]: traceId 'abc' must be 32 hex digits" in partial["errorMessage"]
    assert "spans[2]: spanId" in partial["errorMessage"]
    assert sql("SELECT span_id FROM spans") == [{"span_id": "0" * 15 + "5"}]


def test_wrong_value_types_reject_only_those_spans(receiver: ReceiverServer, sql: Sql) -> None:
    body = json_body(
        json_span(span_id="0" * 15 + "1", attributes=[{"key": "n", "value": {"intValue": "not a number"}}]),
        json_span(span_id="0" * 15 + "2", name=5),
        json_span(span_id="0" * 15 + "3", startTimeUnixNano="yesterday"),
        json_span(span_id="0" * 15 + "4", attributes=[{"key": "n", "value": {"intValue": "42"}}]),
    )
    response = post(receiver, body, JS)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "3"
    assert "spans[0]" in partial["errorMessage"] and "intValue" in partial["errorMessage"]
    assert "spans[2]" in partial["errorMessage"] and "startTimeUnixNano" in partial["errorMessage"]
    (row,) = sql("SELECT span_id, attributes->'n' AS n FROM spans")
    assert row == {"span_id": "0" * 15 + "4", "n": "42"}  # int64 as a string decodes to a number


def test_json_accepts_int_enums_int64_numbers_snake_case_and_ignores_unknown_fields(
    receiver: ReceiverServer, sql: Sql
) -> None:
    start = now_ns()
    body = orjson.dumps(
        {
            "resource_spans": [
                {
                    "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "h1"}}]},
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": "ab" * 16,
                                    "span_id": "cd" * 8,
                                    "parent_span_id": "ef" * 8,
                                    "name": "snake",
                                    "kind": 3,
                                    "start_time_unix_nano": start,
                                    "end_time_unix_nano": str(start + 10),
                                    "status": {"code": 2, "message": "bad"},
                                    "someFutureField": {"x": 1},
                                }
                            ]
                        }
                    ],
                }
            ],
            "unknownTopLevel": True,
        }
    )
    response = post(receiver, body, JS)
    assert response.status_code == 200 and response.json() == {}
    (row,) = sql("SELECT trace_id, parent_span_id, kind, status_code, duration_ns, host_name FROM spans")
    assert row == {
        "trace_id": "ab" * 16,
        "parent_span_id": "ef" * 8,
        "kind": 3,
        "status_code": 2,
        "duration_ns": 10,
        "host_name": "h1",
    }


def test_span_outside_the_time_window_is_rejected(receiver: ReceiverServer, sql: Sql) -> None:
    request = pb_request(spans=2)
    request.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 1  # 1970
    response = post(receiver, request.SerializeToString(), PB)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "outside the accepted window" in partial.error_message
    assert sql("SELECT name FROM spans") == [{"name": "span-1"}]


# --- empty, zero, duplicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [(b"", PB), (b"", JS), (b"{}", JS), (ExportTraceServiceRequest().SerializeToString(), PB)],
)
def test_empty_request_is_200(receiver: ReceiverServer, sql: Sql, body: bytes, headers: dict[str, str]) -> None:
    response = post(receiver, body, headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == headers["Content-Type"]
    if headers is PB:
        assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert count(sql) == 0


def test_zero_spans_is_200(receiver: ReceiverServer, sql: Sql) -> None:
    response = post(receiver, pb_request(spans=0).SerializeToString(), PB)
    assert response.status_code == 200 and response.content == b""
    assert count(sql) == 0


def test_duplicates_in_one_request_and_across_requests_are_stored_once(receiver: ReceiverServer, sql: Sql) -> None:
    request = pb_request(spans=3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans.add().CopyFrom(spans[0])  # the same span twice in one request
    body = request.SerializeToString()
    for _ in range(3):  # and the whole request resent
        assert post(receiver, body, PB).status_code == 200
    assert sql("SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name") == [
        {"name": "span-0", "n": 1},
        {"name": "span-1", "n": 1},
        {"name": "span-2", "n": 1},
    ]


# --- limits ----------------------------------------------------------------------------------------------------


def test_5000_attributes_are_cut_to_the_documented_limit(receiver: ReceiverServer, sql: Sql) -> None:
    response = post(receiver, pb_request(attrs=5000).SerializeToString(), PB)
    assert response.status_code == 200
    (row,) = sql(
        "SELECT (SELECT count(*) FROM jsonb_object_keys(attributes)) AS kept, dropped_attributes_count FROM spans"
    )
    assert row == {"kept": 2048, "dropped_attributes_count": 5000 - 2048}


def test_a_1_mib_string_is_truncated_and_marked(receiver: ReceiverServer, sql: Sql) -> None:
    request = pb_request()
    kv = request.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key, kv.value.string_value = "blob", "é" * (512 * 1024)  # 1 MiB of UTF-8
    response = post(receiver, request.SerializeToString(), PB)
    assert response.status_code == 200
    (row,) = sql(
        "SELECT octet_length(attributes->>'blob') AS size, attributes->'glia.receiver.truncated' AS marked FROM spans"
    )
    assert row["size"] == 64 * 1024
    assert row["marked"] == '["blob"]'


def test_nul_characters_are_replaced_not_fatal(receiver: ReceiverServer, sql: Sql) -> None:
    request = pb_request(name="a\x00b")
    kv = request.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key, kv.value.string_value = "k\x00", "v\x00"
    assert post(receiver, request.SerializeToString(), PB).status_code == 200
    (row,) = sql("SELECT name, attributes FROM spans")
    assert row == {"name": "a\ufffdb", "attributes": '{"k\ufffd": "v\ufffd"}'}


def test_body_over_the_limit_is_413(receiver_factory: Callable[..., ReceiverServer], sql: Sql) -> None:
    receiver = receiver_factory(max_body_bytes=64 * 1024)
    response = post(receiver, pb_request(spans=2000, attrs=3).SerializeToString(), PB)
    assert response.status_code == 413
    assert "over the limit of 65536 bytes" in pb_status(response).message
    assert count(sql) == 0


def test_gzip_bomb_is_413_after_decompression(receiver: ReceiverServer, sql: Sql) -> None:
    bomb = gzip.compress(b"\x00" * (256 * 1024 * 1024), compresslevel=9)  # 256 MiB inflated, ~250 KiB on the wire
    assert len(bomb) < 1024 * 1024
    response = post(receiver, bomb, {**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "after decompression" in pb_status(response).message
    assert post(receiver, pb_request().SerializeToString(), PB).status_code == 200
    assert count(sql) == 1


def test_gzip_and_deflate_bodies_are_accepted(receiver: ReceiverServer, sql: Sql) -> None:
    body = pb_request(spans=2, seed=7).SerializeToString()
    assert post(receiver, gzip.compress(body), {**PB, "Content-Encoding": "gzip"}).status_code == 200
    body = pb_request(spans=2, seed=8).SerializeToString()
    assert post(receiver, zlib.compress(body), {**PB, "Content-Encoding": "deflate"}).status_code == 200
    assert count(sql) == 4
    response = post(receiver, b"not gzip", {**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 400 and "not valid gzip" in pb_status(response).message
    response = post(receiver, body, {**PB, "Content-Encoding": "br"})
    assert response.status_code == 415 and "content encoding" in pb_status(response).message


def test_wrong_content_type_is_415(receiver: ReceiverServer, sql: Sql) -> None:
    response = post(receiver, b"hello", {"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "unsupported content type 'text/plain'" in response.json()["message"]
    assert count(sql) == 0


def test_get_on_the_export_path_is_405(receiver: ReceiverServer) -> None:
    response = httpx.get(receiver.url + "/v1/traces")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "POSTed" in response.json()["message"]


# --- PostgreSQL down ----------------------------------------------------------------------------------------


def test_postgres_down_is_503_and_the_sdk_retry_lands_the_row_once(
    private_pg: PgServer, receiver_factory: Callable[..., ReceiverServer]
) -> None:
    url = with_database(private_pg.admin_url, "glia")
    receiver = receiver_factory(database=url)
    private_pg.stop()

    response = post(receiver, pb_request(seed=42).SerializeToString(), PB)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "database" in pb_status(response).message
    assert httpx.get(receiver.url + "/readyz").status_code == 503

    # the stock SDK exporter retries a 503 with backoff; PostgreSQL comes back while it does
    provider = TracerProvider(resource=Resource.create({"service.name": "retry"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{receiver.url}/v1/traces", timeout=30)))
    exported = threading.Thread(target=lambda: provider.get_tracer("t").start_span("survivor").end())
    exported.start()
    time.sleep(1.5)
    private_pg.start()
    exported.join(timeout=40)
    assert not exported.is_alive()
    provider.shutdown()

    assert run_sql(url, "SELECT name FROM spans") == [{"name": "survivor"}]
    assert httpx.get(receiver.url + "/readyz").json() == {"status": "ready"}
