"""The direct COPY (receiver/store.py): rows that are all new go straight into `spans` by COPY; a batch holding a key
already stored falls back to staging + upsert, stores each span once, and the next writes skip the direct COPY for a
while. A trigger on `spans` logs which statement stored each row (`current_query()`: COPY or INSERT); what a failed
COPY inserted is rolled back with it, log lines included."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import ReceiverServer
from tests.helpers import PB, Sql, pb_request

SPANS = 300  # over the one-statement size of a shared transaction: written by COPY


def log_statements(sql: Sql) -> None:
    sql("CREATE TABLE stored_by (name text, statement text)")
    sql(
        "CREATE FUNCTION log_statement() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO stored_by VALUES (NEW.name, split_part(ltrim(current_query()), ' ', 1)); RETURN NULL; END $$"
    )
    sql("CREATE TRIGGER log_statement AFTER INSERT ON spans FOR EACH ROW EXECUTE FUNCTION log_statement()")


def batch(tag: str, seed: int, spans: int = SPANS, attrs: int = 0) -> ExportTraceServiceRequest:
    request = pb_request(spans=spans, seed=seed, attrs=attrs)
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        span.name = f"{tag}-{i}"
    return request


def send(receiver: ReceiverServer, request: ExportTraceServiceRequest) -> None:
    answer = httpx.post(f"{receiver.url}/v1/traces", content=request.SerializeToString(), headers=PB, timeout=60)
    assert answer.status_code == 200, answer.content[:300]
    result = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert result.rejected_spans == 0 and result.error_message == "", result


def statements(sql: Sql, tag: str) -> dict[str, int]:
    rows = sql("SELECT statement, count(*) AS n FROM stored_by WHERE name LIKE $1 GROUP BY statement", f"{tag}-%")
    return {r["statement"]: int(r["n"]) for r in rows}


def test_new_rows_are_copied_and_a_stored_key_falls_back_to_the_upsert(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory()
    log_statements(sql)
    first = batch("a", seed=1)
    send(receiver, first)
    assert statements(sql, "a") == {"COPY": SPANS}

    # a batch holding one span already stored (as a resend would): the COPY fails whole, the upsert stores the rest
    resent = batch("b", seed=2)
    resent.resource_spans[0].scope_spans[0].spans[SPANS // 2].CopyFrom(first.resource_spans[0].scope_spans[0].spans[7])
    send(receiver, resent)
    assert statements(sql, "b") == {"INSERT": SPANS - 1}
    assert statements(sql, "a") == {"COPY": SPANS}  # the stored span was left as it was, not logged again

    # the next two writes skip the direct COPY; the one after tries it again, and it works
    for tag, seed in (("c", 3), ("d", 4)):
        send(receiver, batch(tag, seed))
        assert statements(sql, tag) == {"INSERT": SPANS}
    send(receiver, batch("e", seed=5))
    assert statements(sql, "e") == {"COPY": SPANS}

    counts = sql("SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS keys FROM spans")[0]
    assert int(counts["n"]) == int(counts["keys"]) == 5 * SPANS - 1


def test_a_large_request_falls_back_chunk_by_chunk(receiver_factory: Callable[..., ReceiverServer], sql: Sql) -> None:
    # over 256 KiB: written alone in chunks of 500 rows, each chunk under its own savepoint
    receiver = receiver_factory(write_chunk_rows=500)
    log_statements(sql)
    spans = 1500
    first = batch("x", seed=11, spans=spans, attrs=60)
    assert first.ByteSize() > 256 * 1024
    send(receiver, first)
    assert statements(sql, "x") == {"COPY": spans}

    # one span already stored, in the second chunk: the first chunk is copied, the second upserted, and the third
    # skips the direct COPY (the backoff)
    second = batch("y", seed=12, spans=spans, attrs=60)
    second.resource_spans[0].scope_spans[0].spans[700].CopyFrom(first.resource_spans[0].scope_spans[0].spans[3])
    send(receiver, second)
    assert statements(sql, "y") == {"COPY": 500, "INSERT": 999}
    counts = sql("SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS keys FROM spans")[0]
    assert int(counts["n"]) == int(counts["keys"]) == 2 * spans - 1
