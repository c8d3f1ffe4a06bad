"""The receiver's own /metrics: a real receiver and PostgreSQL, real OTLP posts, the text parsed with
prometheus-client's own parser; waits made real by a PostgreSQL lock that holds the writes."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ReceiverServer
from tests.helpers import PB, Sql, create_key, holding, pb_request, post

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(receiver: ReceiverServer, token: str | None = None) -> Samples:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{receiver.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def metrics_request(points: int, seed: int = 0) -> bytes:
    """An ExportMetricsServiceRequest of one gauge with `points` data points."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    kv = resource_metrics.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "metrics-test"
    gauge = resource_metrics.scope_metrics.add().metrics.add(name="glia.test.gauge").gauge
    now = time.time_ns()
    for i in range(points):
        gauge.data_points.add(as_int=seed + i, time_unix_nano=now + i * 1_000_000)
    return bytes(request.SerializeToString())


def test_counters_move_after_real_otlp_posts(receiver: ReceiverServer, sql: Sql) -> None:
    before = scrape(receiver)
    assert value(before, "glia_receiver_requests_total", signal="traces", status="200") == 0
    assert value(before, "glia_receiver_items_stored_total", signal="traces") == 0

    spans = pb_request(spans=3, seed=7).SerializeToString()
    assert post(receiver, spans, PB).status_code == 200
    assert post(receiver, spans, PB).status_code == 200  # resent: stored once, not counted again
    assert post(receiver, metrics_request(2), PB, "/v1/metrics").status_code == 200
    assert post(receiver, b"\xff not protobuf", PB).status_code == 400
    assert post(receiver, b"x", {"Content-Type": "text/plain"}).status_code == 415

    after = scrape(receiver)
    assert value(after, "glia_receiver_requests_total", signal="traces", status="200") == 2
    assert value(after, "glia_receiver_requests_total", signal="traces", status="400") == 1
    assert value(after, "glia_receiver_requests_total", signal="traces", status="415") == 1
    assert value(after, "glia_receiver_requests_total", signal="metrics", status="200") == 1
    assert value(after, "glia_receiver_items_stored_total", signal="traces") == 3
    assert value(after, "glia_receiver_items_stored_total", signal="metrics") == 2
    assert value(after, "glia_receiver_items_rejected_total", signal="traces") == 0
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 3}]
    assert sql("SELECT count(*) AS n FROM metric_points") == [{"n": 2}]
    # one transaction per stored request, each timed from its start to its commit
    assert value(after, "glia_receiver_commit_seconds_count", table="spans") == 2
    assert value(after, "glia_receiver_commit_seconds_count", table="metric_points") == 1
    assert 0 < value(after, "glia_receiver_commit_seconds_sum", table="spans") < 30
    assert value(after, "glia_receiver_commit_seconds_bucket", table="spans", le="+Inf") == 2
    # the live figures: the pool's bound, nothing waiting now, the budget, the partitions made at start-up
    assert value(after, "glia_receiver_pool_max_connections") == 8
    assert value(after, "glia_receiver_pool_waiting") == 0
    assert value(after, "glia_receiver_decode_bytes") == 0
    assert value(after, "glia_receiver_decode_capacity_bytes") == 64 * 1024 * 1024
    assert value(after, "glia_receiver_partitions_ahead", table="spans") == 2
    assert value(after, "glia_receiver_partitions_ahead", table="metric_points") == 2
    assert value(after, "process_resident_memory_bytes") > 0


def test_a_rejected_item_counts(receiver: ReceiverServer, sql: Sql) -> None:
    request = pb_request(spans=2)
    request.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 1  # 1970: outside the window
    assert post(receiver, request.SerializeToString(), PB).status_code == 200
    samples = scrape(receiver)
    assert value(samples, "glia_receiver_items_rejected_total", signal="traces") == 1
    assert value(samples, "glia_receiver_items_stored_total", signal="traces") == 1
    assert value(samples, "glia_receiver_requests_total", signal="traces", status="200") == 1
    assert sql("SELECT name FROM spans") == [{"name": "span-1"}]


def test_partitions_ahead_are_read_from_the_catalog_when_scraped(receiver: ReceiverServer, sql: Sql) -> None:
    assert value(scrape(receiver), "glia_receiver_partitions_ahead", table="spans") == 2
    (last,) = sql("SELECT partition FROM glia_partitions() WHERE parent = 'spans' ORDER BY range_start DESC LIMIT 1")
    sql("SELECT glia_drop_partition($1::regclass)", last["partition"])
    samples = scrape(receiver)
    assert value(samples, "glia_receiver_partitions_ahead", table="spans") == 1
    assert value(samples, "glia_receiver_partitions_ahead", table="metric_points") == 2
    assert value(samples, "glia_receiver_partitions_read_errors_total") == 0


def test_metrics_need_a_read_key_and_an_accepted_host(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ingest = create_key(capsys, database_url, "collector", "ingest")
    read = create_key(capsys, database_url, "prometheus", "read")
    receiver = receiver_factory(key_cache_seconds=0)
    url = f"{receiver.url}/metrics"
    missing = httpx.get(url)
    assert missing.status_code == 401 and "read key" in missing.json()["detail"]
    assert "glia_receiver" not in missing.text
    assert httpx.get(url, headers={"authorization": f"Bearer {ingest}"}).status_code == 403
    assert httpx.get(url, headers={"authorization": "Bearer glia_not-a-key"}).status_code == 401
    refused = httpx.get(url, headers={"authorization": f"Bearer {read}", "host": "rebind.example"})
    assert refused.status_code == 403 and "glia_receiver" not in refused.text
    # the refused OTLP requests are counted with their status
    assert post(receiver, pb_request().SerializeToString(), PB).status_code == 401
    rebound = httpx.post(
        f"{receiver.url}/v1/traces", content=b"", headers={**PB, "host": "rebind.example", "authorization": "x"}
    )
    assert rebound.status_code == 403
    samples = scrape(receiver, read)
    assert value(samples, "glia_receiver_requests_total", signal="traces", status="401") == 1
    assert value(samples, "glia_receiver_requests_total", signal="traces", status="403") == 1


def test_each_application_keeps_its_own_registry(receiver_factory: Callable[..., ReceiverServer]) -> None:
    first, second = receiver_factory(), receiver_factory()
    assert post(first, pb_request(spans=2).SerializeToString(), PB).status_code == 200
    assert value(scrape(first), "glia_receiver_items_stored_total", signal="traces") == 2
    assert value(scrape(second), "glia_receiver_items_stored_total", signal="traces") == 0
    assert value(scrape(second), "glia_receiver_requests_total", signal="traces", status="200") == 0


# --- waits: writes held by a lock on spans (reads pass) ------------------------------------------------------


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"after {timeout:g} s: {what}"
        time.sleep(0.05)
    return result


def scrape_until(receiver: ReceiverServer, name: str, expected: float, timeout: float = 15.0) -> Samples:
    """Scrape until sample `name` (no labels) is `expected`; the samples of that scrape."""
    seen: list[float] = []

    def check() -> Samples | None:
        samples = scrape(receiver)
        seen.append(value(samples, name))
        return samples if seen[-1] == expected else None

    result: Samples = wait_for(check, f"{name} is not {expected:g} (seen {sorted(set(seen))})", timeout)
    return result


def blocked_inserts(sql: Sql) -> int:
    rows = sql(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'glia-receiver'"
        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO spans%'"
    )
    return int(rows[0]["n"])


def test_pool_in_use_and_waiting(receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql) -> None:
    receiver = receiver_factory(pool_max_size=1, pool_acquire_timeout=30, key_cache_seconds=3600)
    assert post(receiver, pb_request(seed=1).SerializeToString(), PB).status_code == 200  # the one connection
    assert value(scrape(receiver), "glia_receiver_pool_connections", state="idle") == 1
    with ThreadPoolExecutor(2) as pool, holding(database_url, "LOCK TABLE spans IN SHARE MODE"):
        first: Future[httpx.Response] = pool.submit(post, receiver, pb_request(seed=2).SerializeToString(), PB)
        wait_for(lambda: blocked_inserts(sql) == 1, "the first request's insert is not waiting for the lock")
        second: Future[httpx.Response] = pool.submit(post, receiver, pb_request(seed=3).SerializeToString(), PB)
        started = time.monotonic()
        samples = scrape_until(receiver, "glia_receiver_pool_waiting", 1)
        # the pool is saturated: the scrape does not queue behind the writes, and serves the last partitions read
        assert time.monotonic() - started < 10
        assert value(samples, "glia_receiver_pool_connections", state="in_use") == 1
        assert value(samples, "glia_receiver_pool_connections", state="idle") == 0
        assert value(samples, "glia_receiver_pool_max_connections") == 1
        assert value(samples, "glia_receiver_partitions_ahead", table="spans") == 2
        assert not first.done() and not second.done()
    assert first.result(30).status_code == 200 and second.result(30).status_code == 200
    samples = scrape(receiver)
    assert value(samples, "glia_receiver_pool_waiting") == 0
    assert value(samples, "glia_receiver_pool_connections", state="in_use") == 0
    assert value(samples, "glia_receiver_items_stored_total", signal="traces") == 3
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 3}]


def test_decode_budget_in_use_and_waiting(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql
) -> None:
    # a budget of one byte: a request holds all of it from decode to commit, the next one waits its turn
    receiver = receiver_factory(max_decoding_bytes=1, decode_wait_seconds=30, key_cache_seconds=3600)
    with ThreadPoolExecutor(2) as pool, holding(database_url, "LOCK TABLE spans IN SHARE MODE"):
        first: Future[httpx.Response] = pool.submit(post, receiver, pb_request(seed=2).SerializeToString(), PB)
        wait_for(lambda: blocked_inserts(sql) == 1, "the first request's insert is not waiting for the lock")
        second: Future[httpx.Response] = pool.submit(post, receiver, pb_request(seed=3).SerializeToString(), PB)
        samples = scrape_until(receiver, "glia_receiver_decode_waiting", 1)
        assert value(samples, "glia_receiver_decode_bytes") == 1
        assert value(samples, "glia_receiver_decode_capacity_bytes") == 1
        assert value(samples, "glia_receiver_pool_connections", state="in_use") == 1
        assert value(samples, "glia_receiver_pool_waiting") == 0
        assert not first.done() and not second.done()
    assert first.result(30).status_code == 200 and second.result(30).status_code == 200
    samples = scrape(receiver)
    assert value(samples, "glia_receiver_decode_waiting") == 0
    assert value(samples, "glia_receiver_decode_bytes") == 0
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 2}]
