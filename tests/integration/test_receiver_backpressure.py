"""Backpressure under a burst, against a real receiver and PostgreSQL: while every pooled connection is held, a
burst of concurrent requests is answered 503 with `Retry-After` and a message saying why, the service stays
healthy, the answers are counted in /metrics, and once the clients resend after the delay every span is stored
exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ReceiverServer
from tests.helpers import PB, Sql, holding, pb_request, post

BURST = 24


def blocked_inserts(sql: Sql) -> int:
    rows = sql(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'glia-receiver'"
        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO spans%'"
    )
    return int(rows[0]["n"])


def answered_503(receiver: ReceiverServer) -> float:
    text = httpx.get(f"{receiver.url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "glia_receiver_requests_total" and sample.labels == {"signal": "traces", "status": "503"}
    )


def send_until_stored(receiver: ReceiverServer, body: bytes, answers: list[httpx.Response]) -> int:
    """A client as glia's: resend after Retry-After until the receiver takes it; returns the attempts."""
    for attempt in range(1, 60):
        response = post(receiver, body, PB)
        answers.append(response)
        if response.status_code == 200:
            return attempt
        assert response.status_code == 503, response.text
        time.sleep(float(response.headers["retry-after"]))
    raise AssertionError("never stored")


def test_a_burst_on_a_busy_database_is_pushed_back_and_then_stored_once(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql
) -> None:
    receiver = receiver_factory(pool_max_size=1, pool_acquire_timeout=0.2, retry_after_seconds=1)
    bodies = [pb_request(seed=seed).SerializeToString() for seed in range(1, BURST + 2)]
    answers: list[httpx.Response] = []
    with ThreadPoolExecutor(BURST + 1) as pool:
        with holding(database_url, "LOCK TABLE spans IN SHARE MODE"):
            # the first request takes the one pooled connection and waits on the lock
            first: Future[int] = pool.submit(send_until_stored, receiver, bodies[0], answers)
            deadline = time.monotonic() + 20
            while blocked_inserts(sql) < 1:
                assert time.monotonic() < deadline, "the first request's insert is not waiting for the lock"
                time.sleep(0.05)
            burst = [pool.submit(send_until_stored, receiver, body, answers) for body in bodies[1:]]
            deadline = time.monotonic() + 20
            while sum(a.status_code == 503 for a in list(answers)) < BURST:
                assert time.monotonic() < deadline, [a.status_code for a in answers]
                time.sleep(0.05)
            # pushed back, not down: health and the rows so far are untouched
            assert httpx.get(f"{receiver.url}/healthz", timeout=10).status_code == 200
            assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
        attempts = [first.result(60)] + [f.result(60) for f in burst]

    refused = [a for a in answers if a.status_code == 503]
    assert len(refused) >= BURST and max(attempts) >= 2
    for answer in refused:
        assert answer.headers["retry-after"] == "1"
        assert "busy" in answer.text or "did not answer" in answer.text, answer.text
    assert answered_503(receiver) == len(refused)
    rows = sql("SELECT count(*) AS n, count(DISTINCT trace_id) AS traces FROM spans")
    assert rows == [{"n": BURST + 1, "traces": BURST + 1}], "every span of the burst stored, each once"
