"""Live runs on the wire (docs/attributes.md, "Live runs"): start records and heartbeats posted as raw OTLP to a real
receiver, merged with the final span into one row however they arrive, and the sweep that marks runs lost.

Every check reads the row in PostgreSQL (and the query API where it says what a running row is)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from receiver import maintenance
from receiver.database import Database, create_pool
from tests.conftest import ReceiverServer
from tests.helpers import PB, holding

Sql = Callable[..., list[dict[str, Any]]]
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
RUN = bytes.fromhex("00f067aa0ba902b7")
S = 10**9


def record(
    state: str | None,
    start: int,
    *,
    end: int = 0,
    heartbeat: int | None = None,
    span_id: bytes = RUN,
    attrs: dict[str, Any] | None = None,
) -> Span:
    """One span of the run: a start record or heartbeat (`state` started/running, end 0), or its final (`state`
    None)."""
    span = Span(trace_id=TRACE, span_id=span_id, name="align", kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start)
    span.end_time_unix_nano = end
    values: dict[str, Any] = {"glia.run.kind": "command", **(attrs or {})}
    if state is not None:
        values["glia.run.state"] = state
        values["glia.run.heartbeat_unix_nano"] = heartbeat if heartbeat is not None else time.time_ns()
    for key, value in values.items():
        kv = span.attributes.add()
        kv.key = key
        if isinstance(value, str):
            kv.value.string_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.int_value = value
    return span


def final(start: int, seconds: float = 3.0, code: int = 0, attrs: dict[str, Any] | None = None) -> Span:
    span = record(None, start, end=start + int(seconds * S), attrs={"process.exit.code": code, **(attrs or {})})
    if code:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = f"exit code {code}"
    return span


def post(receiver: ReceiverServer, *spans: Span) -> None:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("service.name", "aligner"), ("host.name", "node7"), ("process.owner", "ada")):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    rs.scope_spans.add().spans.extend(spans)
    response = httpx.post(f"{receiver.url}/v1/traces", content=request.SerializeToString(), headers=PB, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == b"", "partial success: a record was refused"


def rows(sql: Sql) -> list[dict[str, Any]]:
    return sql(
        "SELECT run_id, status, ended_at, wall_seconds, elapsed_seconds, last_heartbeat_at, lost_at, last_rss_bytes,"
        " cpu_seconds, exit_code, program_name, host_name, user_name FROM runs"
    )


def test_a_start_record_is_a_running_row_that_its_final_span_replaces(receiver: ReceiverServer, sql: Sql) -> None:
    start = time.time_ns() - 2 * S
    post(receiver, record("started", start))
    (row,) = rows(sql)
    assert row["status"] == "running" and row["ended_at"] is None and row["wall_seconds"] is None
    # what is known at start is there: program, host, user
    assert (row["program_name"], row["host_name"], row["user_name"]) == ("aligner", "node7", "ada")
    assert 1.5 < row["elapsed_seconds"] < 30
    (raw,) = sql("SELECT end_time, duration_ns, attributes FROM spans")
    assert raw["end_time"] is None and raw["duration_ns"] is None
    assert "glia.run.state" not in raw["attributes"] and "glia.run.heartbeat_unix_nano" not in raw["attributes"]

    # the API says so: listed under status=running, with no end
    page = httpx.get(f"{receiver.url}/api/runs", params={"status": "running"}, timeout=30).json()
    assert [r["run_id"] for r in page["runs"]] == [RUN.hex()]
    assert page["runs"][0]["ended_at"] is None and page["runs"][0]["wall_seconds"] is None
    assert httpx.get(f"{receiver.url}/api/runs", params={"status": "ok"}, timeout=30).json()["runs"] == []
    detail = httpx.get(f"{receiver.url}/api/runs/{RUN.hex()}", timeout=30).json()
    assert detail["status"] == "running" and detail["ended_at"] is None and detail["last_heartbeat_at"]

    post(receiver, final(start, 3.0, attrs={"glia.cpu.user_seconds": 2.5, "glia.cpu.system_seconds": 0.25}))
    (row,) = rows(sql)
    assert row["status"] == "ok" and row["wall_seconds"] == 3.0 and row["cpu_seconds"] == 2.75
    assert row["last_heartbeat_at"] is None and row["lost_at"] is None
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 1}]


def test_one_row_however_the_records_arrive(receiver: ReceiverServer, sql: Sql) -> None:
    start = time.time_ns() - 5 * S
    # the final first, then its start record late (a collector's retry): the start changes nothing
    post(receiver, final(start, 4.0, 3))
    post(receiver, record("started", start))
    post(receiver, record("running", start, attrs={"glia.memory.rss_bytes": 1 << 20}))
    (row,) = rows(sql)
    assert (row["status"], row["exit_code"], row["wall_seconds"], row["last_rss_bytes"]) == ("error", 3, 4.0, None)
    # twice over, and the final twice
    post(receiver, final(start, 4.0, 3), record("started", start))
    post(receiver, record("started", start), final(start, 4.0, 3))
    assert len(rows(sql)) == 1 and rows(sql)[0]["status"] == "error"
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 1}]


def test_in_one_batch_the_final_record_wins_whatever_its_place(receiver: ReceiverServer, sql: Sql) -> None:
    now = time.time_ns()
    first, second = bytes.fromhex("1111111111111111"), bytes.fromhex("2222222222222222")
    post(
        receiver,
        record("started", now - 9 * S, span_id=first),
        record(None, now - 9 * S, end=now - S, span_id=first),
        record("running", now - 9 * S, span_id=first, heartbeat=now),
        record(None, now - 8 * S, end=now - S, span_id=second),
        record("started", now - 8 * S, span_id=second),
    )
    got = {r["run_id"]: r for r in rows(sql)}
    assert set(got) == {first.hex(), second.hex()}
    assert got[first.hex()]["status"] == "ok" and got[first.hex()]["wall_seconds"] == 8.0
    assert got[second.hex()]["status"] == "ok" and got[second.hex()]["wall_seconds"] == 7.0


def test_a_newer_heartbeat_replaces_the_figures_an_older_one_does_not(receiver: ReceiverServer, sql: Sql) -> None:
    now = time.time_ns()
    start = now - 60 * S
    post(receiver, record("started", start, heartbeat=start + S))
    post(
        receiver,
        record(
            "running",
            start,
            heartbeat=now - 5 * S,
            attrs={"glia.memory.rss_bytes": 300 << 20, "glia.cpu.user_seconds": 40.0, "glia.cpu.system_seconds": 0.0},
        ),
    )
    # an older heartbeat arriving late (out of order through a collector) leaves the newer figures
    post(
        receiver,
        record(
            "running",
            start,
            heartbeat=now - 30 * S,
            attrs={"glia.memory.rss_bytes": 100 << 20, "glia.cpu.user_seconds": 20.0, "glia.cpu.system_seconds": 0.0},
        ),
    )
    (row,) = rows(sql)
    assert row["status"] == "running" and row["last_rss_bytes"] == 300 << 20 and row["cpu_seconds"] == 40.0
    assert abs(row["last_heartbeat_at"].timestamp() - (now - 5 * S) / S) < 0.01
    # a client clock ahead of the receiver's is taken as the receiver's now: it cannot keep a dead run alive
    post(receiver, record("running", start, heartbeat=now + 3600 * S))
    (row,) = rows(sql)
    assert row["last_heartbeat_at"].timestamp() < time.time() + 1


def sweep(url: str, lost_after: float) -> list[tuple[str, str]] | None:
    async def go() -> list[tuple[str, str]] | None:
        pool = await create_pool(url, max_size=2, statement_timeout_ms=10_000)
        try:
            return await maintenance.sweep_lost(Database(pool, acquire_timeout=5), lost_after)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_a_run_whose_heartbeats_stopped_is_lost_and_comes_back_when_its_end_arrives(
    receiver: ReceiverServer, sql: Sql, database_url: str
) -> None:
    now = time.time_ns()
    start = now - 120 * S
    post(
        receiver,
        record(
            "running",
            start,
            heartbeat=now - 20 * S,
            attrs={"glia.memory.rss_bytes": 512 << 20, "glia.cpu.user_seconds": 90.0, "glia.cpu.system_seconds": 0.0},
        ),
    )
    fresh = bytes.fromhex("3333333333333333")
    post(receiver, record("started", now - 2 * S, heartbeat=now, span_id=fresh))

    assert sweep(database_url, 10.0) == [(TRACE.hex(), RUN.hex())]
    got = {r["run_id"]: r for r in rows(sql)}
    lost = got[RUN.hex()]
    assert lost["status"] == "lost" and lost["lost_at"] is not None
    # the last known memory and CPU stay, and the time it was seen running
    assert lost["last_rss_bytes"] == 512 << 20 and lost["cpu_seconds"] == 90.0
    assert abs(lost["elapsed_seconds"] - 100.0) < 0.1
    assert got[fresh.hex()]["status"] == "running"
    assert sweep(database_url, 10.0) == []  # nothing twice
    page = httpx.get(f"{receiver.url}/api/runs", params={"status": "lost"}, timeout=30).json()
    assert [r["run_id"] for r in page["runs"]] == [RUN.hex()]

    # a heartbeat sent before it was found lost (late through a collector) does not bring it back ...
    post(receiver, record("running", start, heartbeat=now - 15 * S))
    assert {r["run_id"]: r for r in rows(sql)}[RUN.hex()]["status"] == "lost"
    # ... its end does, as after a collector outage
    post(receiver, final(start, 110.0, 0))
    got = {r["run_id"]: r for r in rows(sql)}
    assert got[RUN.hex()]["status"] == "ok" and got[RUN.hex()]["lost_at"] is None
    assert got[RUN.hex()]["wall_seconds"] == 110.0


def test_a_heartbeat_made_after_the_run_was_found_lost_brings_it_back(
    receiver: ReceiverServer, sql: Sql, database_url: str
) -> None:
    now = time.time_ns()
    post(receiver, record("running", now - 60 * S, heartbeat=now - 30 * S))
    assert sweep(database_url, 10.0) == [(TRACE.hex(), RUN.hex())]
    time.sleep(0.05)
    post(receiver, record("running", now - 60 * S, heartbeat=time.time_ns()))
    (row,) = rows(sql)
    assert row["status"] == "running" and row["lost_at"] is None


def test_one_receiver_at_a_time_sweeps(receiver: ReceiverServer, sql: Sql, database_url: str) -> None:
    now = time.time_ns()
    ids = [bytes([0x40 + i]) * 8 for i in range(20)]
    post(receiver, *(record("running", now - 100 * S, heartbeat=now - 50 * S, span_id=i) for i in ids))
    # another receiver holds the sweep's lock: this one skips its round and marks nothing
    with holding(database_url, "SELECT pg_advisory_xact_lock(hashtext('glia_lost_sweep'))"):
        assert sweep(database_url, 10.0) is None
    assert {r["status"] for r in rows(sql)} == {"running"}

    # two sweeping at once: every run is marked by exactly one of them, once
    async def both() -> list[list[tuple[str, str]] | None]:
        pools = [await create_pool(database_url, max_size=2, statement_timeout_ms=10_000) for _ in range(2)]
        try:
            return await asyncio.gather(*(maintenance.sweep_lost(Database(p, acquire_timeout=5), 10.0) for p in pools))
        finally:
            for p in pools:
                await p.close()

    results = asyncio.run(both())
    marked = [run for result in results if result for run in result]
    assert sorted(marked) == sorted((TRACE.hex(), i.hex()) for i in ids)
    assert {r["status"] for r in rows(sql)} == {"lost"}
    assert sql("SELECT count(DISTINCT lost_at) AS n FROM spans") == [{"n": 1}]


def test_the_receiver_sweeps_on_its_own_with_its_settings(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(lost_after_seconds=1.0, lost_sweep_seconds=0.2)
    post(receiver, record("started", time.time_ns() - 2 * S))
    assert rows(sql)[0]["status"] == "running"
    deadline = time.monotonic() + 10
    while rows(sql)[0]["status"] != "lost":
        assert time.monotonic() < deadline, "not marked lost by the receiver's own sweep"
        time.sleep(0.1)
