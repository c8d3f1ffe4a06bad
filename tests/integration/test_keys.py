"""API keys: `glia keys`, and what ingest, the query API and the page answer with and without them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from glia_otel._cli import main
from tests.conftest import ReceiverServer

Sql = Callable[..., list[dict[str, Any]]]

SPAN_JSON = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "keyed"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "keyed-run",
            "startTimeUnixNano": "{start}", "endTimeUnixNano": "{end}",
        }]}],
    }]
}  # fmt: skip


def span_body() -> bytes:
    import time

    now = time.time_ns()
    return orjson.dumps(SPAN_JSON).replace(b"{start}", str(now - 10**9).encode()).replace(b"{end}", str(now).encode())


def create_key(capsys: pytest.CaptureFixture[str], url: str, name: str, scope: str) -> str:
    assert main(["keys", "create", name, "--scope", scope, "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert f"created {scope} key '{name}'" in err
    return out.strip()


def test_open_without_keys(receiver: ReceiverServer, sql: Sql) -> None:
    post = httpx.post(f"{receiver.url}/v1/traces", content=span_body(), headers={"content-type": "application/json"})
    assert post.status_code == 200
    assert sql("SELECT name FROM spans") == [{"name": "keyed-run"}]
    assert httpx.get(f"{receiver.url}/api/runs").json()["runs"][0]["run_name"] == "keyed-run"


def test_keys_guard_ingest_and_reads(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql, capsys: pytest.CaptureFixture[str]
) -> None:
    ingest = create_key(capsys, database_url, "node-17", "ingest")
    read = create_key(capsys, database_url, "dashboard", "read")
    assert ingest.startswith("glia_") and len(ingest) > 40 and ingest != read
    # stored hashed: the secret is nowhere in the table
    stored = sql("SELECT * FROM api_keys ORDER BY key_id")
    assert [(r["name"], r["scope"]) for r in stored] == [("node-17", "ingest"), ("dashboard", "read")]
    assert all(ingest not in str(v) and read not in str(v) for r in stored for v in r.values())

    receiver = receiver_factory(key_cache_seconds=0)
    traces = f"{receiver.url}/v1/traces"

    def post(token: str | None, kind: str = "application/json", body: bytes | None = None) -> httpx.Response:
        headers = {"content-type": kind}
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.post(traces, content=span_body() if body is None else body, headers=headers)

    # ingest: the OTLP error shape, in the request's content type
    missing = post(None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["code"] == code_pb2.UNAUTHENTICATED and "API key" in missing.json()["message"]
    wrong = post("glia_not-a-key", "application/x-protobuf", b"")
    assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(wrong.content)
    assert status.code == code_pb2.UNAUTHENTICATED and "not valid" in status.message
    forbidden = post(read)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == code_pb2.PERMISSION_DENIED
    assert "scope 'read'" in forbidden.json()["message"]
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
    assert post(ingest).status_code == 200
    assert sql("SELECT name FROM spans") == [{"name": "keyed-run"}]

    # the query API and the page's data need a read key
    api = f"{receiver.url}/api/runs"
    assert httpx.get(api).status_code == 401
    assert "read key" in httpx.get(api).json()["detail"]
    assert httpx.get(api, headers={"authorization": f"Bearer {ingest}"}).status_code == 403
    ok = httpx.get(api, headers={"authorization": f"Bearer {read}"})
    assert ok.status_code == 200 and [r["run_name"] for r in ok.json()["runs"]] == ["keyed-run"]

    # revoked: refused again
    assert main(["keys", "revoke", "node-17", "--database-url", database_url]) == 0
    assert "revoked ingest key 'node-17'" in capsys.readouterr().out
    assert post(ingest).status_code == 401
    assert main(["keys", "list", "--database-url", database_url]) == 0
    listed = capsys.readouterr().out
    assert "dashboard" in listed and "node-17" not in listed
    assert main(["keys", "list", "--all", "--database-url", database_url]) == 0
    assert "node-17" in capsys.readouterr().out


def test_sdk_exporter_sends_the_key_from_otel_headers(
    receiver_factory: Callable[..., ReceiverServer],
    database_url: str,
    sql: Sql,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = create_key(capsys, database_url, "ci", "ingest")
    receiver = receiver_factory()
    # the value is URL-encoded in OTEL_EXPORTER_OTLP_HEADERS: the space is %20
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{key}")
    provider = TracerProvider(resource=Resource.create({"service.name": "with-key"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
    with provider.get_tracer("t").start_as_current_span("authorised"):
        pass
    provider.shutdown()
    assert sql("SELECT service_name, name FROM spans") == [{"service_name": "with-key", "name": "authorised"}]


def test_duplicate_active_name_is_refused(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    create_key(capsys, database_url, "twice", "read")
    assert main(["keys", "create", "twice", "--database-url", database_url]) == 2
    assert "exists already" in capsys.readouterr().err


def test_start_up_log_says_whether_keys_are_required(
    receiver_factory: Callable[..., ReceiverServer],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level("INFO", logger="glia.receiver"):
        receiver_factory()
    assert any("no API keys" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    caplog.clear()
    create_key(capsys, database_url, "ingest-1", "ingest")
    with caplog.at_level("INFO", logger="glia.receiver"):
        receiver_factory()
    assert any("API keys: 1 active" in r.getMessage() for r in caplog.records)
