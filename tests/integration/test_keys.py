"""API keys: `glia keys`, and what ingest, the query API and the page answer with and without them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import asyncpg
import httpx
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from glia_otel._cli import main
from receiver import auth
from receiver.database import Database
from receiver.errors import Unavailable
from tests.conftest import PgServer, ReceiverServer, with_database
from tests.helpers import Sql, create_key, seed_runs, span_body


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


def test_a_revoked_read_key_is_locked_out_of_the_api_within_the_ttl(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_runs(database_url, n=3, months=1)
    revoked = create_key(capsys, database_url, "laptop", "read")
    kept = create_key(capsys, database_url, "dashboard", "read")
    ttl = 0.5
    receiver = receiver_factory(key_cache_seconds=ttl)
    api = f"{receiver.url}/api/runs"

    def get(key: str) -> httpx.Response:
        return httpx.get(api, headers={"authorization": f"Bearer {key}"})

    assert len(get(revoked).json()["runs"]) == 3
    assert main(["keys", "revoke", "laptop", "--database-url", database_url]) == 0
    revoked_at = time.monotonic()
    while (response := get(revoked)).status_code == 200:
        assert time.monotonic() - revoked_at < ttl + 1.0, "the revoked key still reads runs past the cache ttl"
        time.sleep(0.05)
    assert response.status_code == 401 and "runs" not in response.json()
    assert len(get(kept).json()["runs"]) == 3


class CountingPool:
    """The real pool, counting how often a connection is asked for."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self, *, timeout: float) -> Any:
        self.acquired += 1
        return self.pool.acquire(timeout=timeout)


def test_key_cache_retries_once_a_ttl_and_fails_closed_past_its_staleness_cap(
    private_pg: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = with_database(private_pg.admin_url, "glia")
    ttl = 0.25

    # stop() and start() run an event loop of their own (and need the main thread): one loop, run stage by stage
    with asyncio.Runner() as runner, caplog.at_level("INFO", logger="glia.auth"):

        async def create_pool() -> asyncpg.Pool:
            return await asyncpg.create_pool(url, min_size=0, max_size=2)

        pool = runner.run(create_pool())
        counting = CountingPool(pool)
        cache = auth.KeyCache(Database(cast(asyncpg.Pool, counting), acquire_timeout=1.0), ttl=ttl)
        try:

            async def first_load() -> dict[str, str]:
                async with pool.acquire() as conn:
                    await auth.create_key(conn, "ci", "ingest")
                return await cache.keys()

            loaded = runner.run(first_load())
            assert list(loaded.values()) == ["ingest"]
            private_pg.stop()
            time.sleep(ttl)
            # the refresh fails: the last set is still used, and the many requests waiting meanwhile do not each
            # try the database again
            before = counting.acquired

            async def many() -> list[dict[str, str]]:
                return await asyncio.gather(*(cache.keys() for _ in range(50)))

            assert all(a == loaded for a in runner.run(many()))
            assert counting.acquired - before == 1
            # past 12 x ttl without a refresh: every request is refused (503), logged once
            time.sleep(auth.STALE_TTLS * ttl)
            for _ in range(3):
                with pytest.raises(Unavailable, match="cannot read the API keys"):
                    runner.run(cache.keys())
                time.sleep(ttl)
            private_pg.start()
            time.sleep(ttl)
            assert list(runner.run(cache.keys()).values()) == ["ingest"]
        finally:
            runner.run(pool.close())
    messages = [r.getMessage() for r in caplog.records if r.name == "glia.auth"]
    assert sum("using the last known set" in m for m in messages) == 1
    assert sum("refusing every request" in m for m in messages) == 1
    assert any("read again" in m for m in messages)


def test_keys_that_cannot_be_read_are_503_in_each_endpoint_s_error_shape(
    private_pg: PgServer, receiver_factory: Callable[..., ReceiverServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url = with_database(private_pg.admin_url, "glia")
    ingest = create_key(capsys, url, "node-1", "ingest")
    read = create_key(capsys, url, "dashboard", "read")
    receiver = receiver_factory(database=url, key_cache_seconds=0)
    private_pg.stop()
    try:
        traces = httpx.post(
            f"{receiver.url}/v1/traces",
            content=b"",
            headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {ingest}"},
        )
        assert traces.status_code == 503 and traces.headers["retry-after"] == "2"
        status = status_pb2.Status.FromString(traces.content)
        assert status.code == code_pb2.UNAVAILABLE and "cannot read the API keys" in status.message
        runs = httpx.get(f"{receiver.url}/api/runs", headers={"authorization": f"Bearer {read}"})
        assert runs.status_code == 503 and runs.headers["retry-after"] == "2"
        assert "cannot read the API keys" in runs.json()["detail"]
    finally:
        private_pg.start()


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
