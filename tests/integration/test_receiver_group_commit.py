"""Small requests share transactions (group commit, receiver/store.py) against the real receiver and PostgreSQL: each
is still answered only after the commit that holds its rows, with its own partial_success, and a bad row in one
request never costs another its rows."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.conftest import ReceiverServer
from tests.helpers import JS, PB, Sql, holding, json_body, json_span, pb_request

REQUESTS = 30


def log_transactions(sql: Sql) -> None:
    """Every stored span's name with the top-level transaction that inserted it, in `seen`."""
    sql("CREATE TABLE seen (xid xid8, name text)")
    sql(
        "CREATE FUNCTION log_xid() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO seen VALUES (pg_current_xact_id(), NEW.name); RETURN NULL; END $$"
    )
    sql("CREATE TRIGGER log_xid AFTER INSERT ON spans FOR EACH ROW EXECUTE FUNCTION log_xid()")


def refuse_poison(sql: Sql) -> None:
    """Spans named 'poison*' are refused by PostgreSQL (a row flatten could not foresee)."""
    sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.name LIKE 'poison%' THEN RAISE EXCEPTION 'refusing %', NEW.name; END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON spans FOR EACH ROW EXECUTE FUNCTION refuse_poison()")


def metric(receiver: ReceiverServer, name: str) -> float:
    text = httpx.get(f"{receiver.url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def post_held(
    receiver: ReceiverServer, database_url: str, bodies: list[tuple[bytes, dict[str, str]]], decoded_bytes: int
) -> list[httpx.Response]:
    """POST every body at once while inserts into spans wait on a lock, and release it only once every request has
    been decoded and is waiting for its commit (the decode budget in use says so)."""
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(i: int) -> None:
        body, headers = bodies[i]
        answers[i] = httpx.post(f"{receiver.url}/v1/traces", content=body, headers=headers, timeout=60)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    with holding(database_url, "LOCK TABLE spans IN SHARE MODE"):
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while metric(receiver, "glia_receiver_decode_bytes") < decoded_bytes:
            assert time.monotonic() < deadline, "the requests never all reached the store"
            time.sleep(0.05)
        assert all(answer is None for answer in answers), "a request was answered before its rows could commit"
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def partial(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.content[:300]
    return ExportTraceServiceResponse.FromString(response.content).partial_success


def test_concurrent_small_requests_share_transactions(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql, database_url: str
) -> None:
    receiver = receiver_factory()
    log_transactions(sql)
    requests = [pb_request(spans=1, seed=i + 1, name=f"run-{i}").SerializeToString() for i in range(REQUESTS)]
    for body in requests[:2]:  # already stored: sent again, they add nothing and are not counted again
        assert partial(httpx.post(f"{receiver.url}/v1/traces", content=body, headers=PB)).rejected_spans == 0
    answers = post_held(receiver, database_url, [(b, PB) for b in requests], sum(len(b) for b in requests))
    for answer in answers:
        result = partial(answer)
        assert result.rejected_spans == 0 and result.error_message == ""
    assert int(sql("SELECT count(*) AS n FROM spans")[0]["n"]) == REQUESTS
    transactions = sql("SELECT xid::text, count(*) AS spans FROM seen GROUP BY xid ORDER BY spans DESC")
    # two alone before the lock, then at most one transaction per writer while the lock was held, then the rest
    assert len(transactions) <= 6, transactions
    assert transactions[0]["spans"] >= 10, transactions
    assert metric(receiver, 'glia_receiver_items_stored_total{signal="traces"}') == REQUESTS


def test_a_refused_row_costs_only_its_own_request_in_a_shared_transaction(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql, database_url: str
) -> None:
    receiver = receiver_factory()
    log_transactions(sql)
    refuse_poison(sql)
    bodies = [(pb_request(spans=1, seed=i + 1, name=f"run-{i}").SerializeToString(), PB) for i in range(REQUESTS)]
    # one request with a good and a bad span, in OTLP/JSON: its answer is its own, in its own content type
    mixed = json_body(
        json_span(trace_id=f"{99:032x}", span_id=f"{1:016x}", name="good-neighbour"),
        json_span(trace_id=f"{99:032x}", span_id=f"{2:016x}", name="poison-json"),
    )
    bodies[REQUESTS // 2] = (mixed, JS)
    bodies[REQUESTS // 3] = (pb_request(spans=1, seed=7777, name="poison-pb").SerializeToString(), PB)
    answers = post_held(receiver, database_url, bodies, sum(len(b) for b, _ in bodies))
    for i, answer in enumerate(answers):
        if i == REQUESTS // 2:
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
            success = orjson.loads(answer.content)["partialSuccess"]
            assert success["rejectedSpans"] == "1" and "refusing poison-json" in success["errorMessage"], success
        elif i == REQUESTS // 3:
            result = partial(answer)
            assert result.rejected_spans == 1 and "refusing poison-pb" in result.error_message, result
        else:
            result = partial(answer)
            assert result.rejected_spans == 0 and result.error_message == "", (i, result)
    names = {r["name"] for r in sql("SELECT name FROM spans")}
    expected = {f"run-{i}" for i in range(REQUESTS) if i not in (REQUESTS // 2, REQUESTS // 3)} | {"good-neighbour"}
    assert names == expected
    # the requests still shared transactions: the refused one was written again request by request, in one
    transactions = sql("SELECT count(*) AS spans FROM seen GROUP BY xid ORDER BY spans DESC")
    assert len(transactions) <= 6 and transactions[0]["spans"] >= 10, transactions
