"""Read paths that must stay cheap whatever is stored: a span tree with duplicate ids and cycles, a read timeout of
their own, server-side work cancelled when the HTTP client or the CLI goes away, and bounded response bytes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import REPO, ReceiverServer
from tests.helpers import MS, RUN, SPAN_A, TRACE, Sql, otlp_span, post_spans


@contextmanager
def holding(url: str, statement: str) -> Iterator[int]:
    """Run `statement` (a LOCK TABLE) in a transaction on a connection of its own and keep it open; yields its pid."""
    ready = threading.Event()
    release = threading.Event()
    pid: list[int] = []

    async def hold() -> None:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute(statement)
                pid.append(conn.get_server_pid())
                ready.set()
                await asyncio.to_thread(release.wait)
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    thread.start()
    assert ready.wait(10), "could not take the lock"
    try:
        yield pid[0]
    finally:
        release.set()
        thread.join(10)


def waiting_on_a_lock(sql: Sql) -> list[dict[str, Any]]:
    """Backends of this test's database that are waiting for a lock (the blocked reads)."""
    return sql(
        "SELECT pid, application_name, query FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def still_running(sql: Sql, pid: int) -> bool:
    return bool(sql("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid))


# --- item 2: the tree query ----------------------------------------------------------------------------------------


def test_duplicate_span_ids_and_a_cycle_give_each_span_once(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    # the five spans: a run R, two copies of span A (different start times, so both are stored) under R,
    # and two copies of A whose parent is A. The old UNION ALL recursion doubled at every level down to depth 50.
    receiver = receiver_factory(statement_timeout_ms=5000)
    t0 = time.time_ns()
    post_spans(
        receiver,
        otlp_span(RUN, None, "R", t0),
        otlp_span(SPAN_A, RUN, "A-first", t0 + 1 * MS),
        otlp_span(SPAN_A, RUN, "A-second", t0 + 2 * MS),
        otlp_span(SPAN_A, SPAN_A, "A-under-A-1", t0 + 3 * MS),
        otlp_span(SPAN_A, SPAN_A, "A-under-A-2", t0 + 4 * MS),
    )
    assert sql("SELECT count(*) AS n FROM spans WHERE trace_id = $1", TRACE)[0]["n"] == 5
    started = time.monotonic()
    response = httpx.get(f"{receiver.url}/api/runs/{RUN}", timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    children = response.json()["children"]
    # each span id once, its earliest copy under the run, at depth 1
    assert [(c["span_id"], c["name"], c["depth"], c["parent_span_id"]) for c in children] == [
        (SPAN_A, "A-first", 1, RUN)
    ]
    assert elapsed < 5, f"the tree of five spans took {elapsed:.1f} s"


def test_a_lattice_of_duplicates_is_not_exponential(receiver_factory: Callable[..., ReceiverServer]) -> None:
    # 25 levels of two spans, each stored twice: once under each span of the level above. There are 2**25 paths
    # from the run to the bottom, but 50 spans; the answer is each of them once, at its level, depth first.
    receiver = receiver_factory(statement_timeout_ms=5000)
    t0 = time.time_ns()
    spans = [otlp_span(RUN, None, "R", t0)]
    levels = [[f"{level:02x}{side}{'0' * 13}" for side in "ab"] for level in range(1, 26)]
    parents = [RUN]
    for level, pair in enumerate(levels):
        for side, span_id in enumerate(pair):
            for copy, parent in enumerate(parents):
                start = t0 + (level * 4 + side * 2 + copy + 1) * MS
                spans.append(otlp_span(span_id, parent, f"L{level}{'ab'[side]}", start))
        parents = pair
    post_spans(receiver, *spans)
    response = httpx.get(f"{receiver.url}/api/runs/{RUN}", timeout=30)
    assert response.status_code == 200, response.text
    children = response.json()["children"]
    assert sorted(c["span_id"] for c in children) == sorted(s for pair in levels for s in pair)
    depth = {c["span_id"]: c["depth"] for c in children}
    assert all(depth[s] == level + 1 for level, pair in enumerate(levels) for s in pair)
    # depth first: every span comes after its parent
    seen: set[str] = {RUN}
    for child in children:
        assert child["parent_span_id"] in seen, child
        seen.add(child["span_id"])


def test_children_are_depth_first_and_a_span_pointing_back_at_the_run_is_left_out(
    receiver: ReceiverServer,
) -> None:
    t0 = time.time_ns()
    b, c, d = "b" * 16, "c" * 16, "d" * 16
    post_spans(
        receiver,
        otlp_span(RUN, None, "R", t0),
        otlp_span(b, RUN, "B", t0 + 1 * MS),
        otlp_span(c, RUN, "C", t0 + 2 * MS),
        otlp_span(d, b, "D under B", t0 + 3 * MS),  # starts after C: chronological order would put it after C
        otlp_span(RUN, d, "R again, under D", t0 + 4 * MS),
    )
    children = httpx.get(f"{receiver.url}/api/runs/{RUN}", timeout=30).json()["children"]
    assert [(x["name"], x["depth"]) for x in children] == [("B", 1), ("D under B", 2), ("C", 1)]


# --- item 2: a read timeout of its own, and cancelled work ---------------------------------------------------------


def test_a_blocked_read_times_out_with_503_and_a_clear_message(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql
) -> None:
    receiver = receiver_factory(read_statement_timeout_ms=1000)
    with holding(database_url, "LOCK TABLE spans IN ACCESS EXCLUSIVE MODE"):
        started = time.monotonic()
        response = httpx.get(f"{receiver.url}/api/runs", timeout=15)
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        message = response.json()["detail"]
        assert "1 s" in message and "GLIA_READ_STATEMENT_TIMEOUT_MS" in message, message
        assert elapsed < 10
        assert not waiting_on_a_lock(sql)  # nothing left waiting behind the lock
    # ingest's connections are not affected: the pool still serves reads once the lock is gone
    assert httpx.get(f"{receiver.url}/api/runs", timeout=15).status_code == 200


@pytest.mark.parametrize("path", ["/api/runs", f"/api/runs/{RUN}"])
def test_the_query_is_cancelled_when_the_http_client_goes_away(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql, path: str
) -> None:
    receiver = receiver_factory(read_statement_timeout_ms=60_000)
    t0 = time.time_ns()
    post_spans(receiver, otlp_span(RUN, None, "R", t0), otlp_span(SPAN_A, RUN, "A", t0 + 1 * MS))
    with holding(database_url, "LOCK TABLE spans IN ACCESS EXCLUSIVE MODE"):
        client = socket.create_connection(("127.0.0.1", receiver.port))
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{receiver.port}\r\n\r\n".encode())
        (blocked,) = wait_for(lambda: waiting_on_a_lock(sql), 10, "the read to block on the lock")
        client.close()
        # the lock is still held: only a cancel can end the query this soon
        wait_for(lambda: not still_running(sql, blocked["pid"]), 5, "the read to be cancelled")
    assert httpx.get(f"{receiver.url}{path}", timeout=15).status_code == 200


def glia_process(database_url: str, *argv: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "glia_otel._cli", *argv, "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()  # reaps it and closes its pipes


@pytest.mark.parametrize(
    ("argv", "signum"),
    [(["runs"], signal.SIGINT), (["show", RUN], signal.SIGINT), (["runs", "--format", "csv"], signal.SIGTERM)],
)
def test_the_cli_cancels_its_query_on_a_signal(
    receiver: ReceiverServer, database_url: str, sql: Sql, argv: list[str], signum: signal.Signals
) -> None:
    t0 = time.time_ns()
    post_spans(receiver, otlp_span(RUN, None, "R", t0), otlp_span(SPAN_A, RUN, "A", t0 + 1 * MS))
    with holding(database_url, "LOCK TABLE spans IN ACCESS EXCLUSIVE MODE"):
        process = glia_process(database_url, *argv)
        try:
            (blocked,) = wait_for(lambda: waiting_on_a_lock(sql), 20, "glia to block on the lock")
            process.send_signal(signum)
            _, err = process.communicate(timeout=10)
        finally:
            stop(process)
        assert process.returncode == 128 + signum, err
        assert "cancelled" in err and "Traceback" not in err, err
        wait_for(lambda: not still_running(sql, blocked["pid"]), 5, "glia's query to be cancelled")


def test_a_killed_cli_leaves_no_query_running(receiver: ReceiverServer, database_url: str, sql: Sql) -> None:
    # kill -9 cancels nothing: PostgreSQL 14 and newer notice the dead client (client_connection_check_interval)
    version = int(sql("SELECT current_setting('server_version_num') AS v")[0]["v"])
    if version < 140000:
        pytest.skip("PostgreSQL before 14 cannot check for a dead client during a query")
    post_spans(receiver, otlp_span(RUN, None, "R", time.time_ns()))
    with holding(database_url, "LOCK TABLE spans IN ACCESS EXCLUSIVE MODE"):
        process = glia_process(database_url, "runs", GLIA_READ_STATEMENT_TIMEOUT_MS="60000")
        try:
            (blocked,) = wait_for(lambda: waiting_on_a_lock(sql), 20, "glia to block on the lock")
            process.kill()
        finally:
            stop(process)
        wait_for(lambda: not still_running(sql, blocked["pid"]), 5, "the dead client's query to end")


def test_the_cli_has_a_read_timeout(receiver: ReceiverServer, database_url: str) -> None:
    post_spans(receiver, otlp_span(RUN, None, "R", time.time_ns()))
    with holding(database_url, "LOCK TABLE spans IN ACCESS EXCLUSIVE MODE"):
        process = glia_process(database_url, "show", RUN, GLIA_READ_STATEMENT_TIMEOUT_MS="1000")
        try:
            _, err = process.communicate(timeout=20)
        finally:
            stop(process)
    assert process.returncode == 1
    assert "1 s" in err and "GLIA_READ_STATEMENT_TIMEOUT_MS" in err and "Traceback" not in err, err


# --- item 6: bounded answers ---------------------------------------------------------------------------------------


def test_huge_stored_names_are_cut_with_a_marker_in_every_view(
    receiver: ReceiverServer, database_url: str, sql: Sql
) -> None:
    # three runs whose names are 3 MB each, as a receiver without a name limit stored them (made in PostgreSQL:
    # ingest cuts names now); the issue saw three 30 MB names make one /api/runs page 94 MB
    t0 = time.time_ns()
    runs = [f"{i:016x}" for i in range(1, 4)]
    post_spans(receiver, *(otlp_span(r, None, "short", t0 + i * MS) for i, r in enumerate(runs)))
    post_spans(receiver, otlp_span(SPAN_A, runs[0], "child", t0 + 10 * MS))
    sql("UPDATE spans SET name = repeat('n', 3000000), status_message = repeat('m', 3000000) WHERE trace_id = $1",
        TRACE)  # fmt: skip

    page = httpx.get(f"{receiver.url}/api/runs", timeout=30)
    assert page.status_code == 200 and len(page.content) < 64 * 1024, len(page.content)
    rows = page.json()["runs"]
    assert sorted(r["run_id"] for r in rows) == runs
    for row in rows:
        assert row["run_name"] == "n" * 4096 + "…[cut at 4096 characters]"
        assert row["status_message"] == "m" * 4096 + "…[cut at 4096 characters]"
        assert row["elided"] == ["run_name", "status_message"]

    detail = httpx.get(f"{receiver.url}/api/runs/{runs[0]}", timeout=30)
    assert detail.status_code == 200 and len(detail.content) < 3 * 65536, len(detail.content)
    run = detail.json()
    assert run["run_name"] == "n" * 65536 + "…[cut at 65536 characters]"
    assert run["elided"] == ["run_name", "status_message"]
    (child,) = run["children"]
    assert child["name"] == "n" * 4096 + "…[cut at 4096 characters]" and child["elided"] == ["name", "status_message"]
    # what PostgreSQL holds is untouched
    assert sql("SELECT min(length(name)) AS n FROM spans WHERE trace_id = $1", TRACE)[0]["n"] == 3000000


def attrs_span(span_id: str, parent: str | None, start_ns: int, n: int, size: int) -> dict[str, Any]:
    attrs = {f"k{i:03d}": f"{i:03d}" * (size // 3) for i in range(n)}
    return otlp_span(span_id, parent, f"span-{span_id}", start_ns, **attrs)


def test_a_page_stops_at_its_byte_budget_and_the_cursor_carries_on(
    receiver_factory: Callable[..., ReceiverServer],
) -> None:
    receiver = receiver_factory(api_response_bytes=65536, api_list_row_bytes=16384, api_list_value_chars=2000)
    t0 = time.time_ns()
    runs = [f"{i:016x}" for i in range(1, 11)]
    # ten runs with 40 attributes of 3000 characters each: 120 KB of attributes a run
    post_spans(receiver, *(attrs_span(r, None, t0 - i * MS, 40, 3000) for i, r in enumerate(runs)))

    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        response = httpx.get(f"{receiver.url}/api/runs", params=params, timeout=30)
        assert response.status_code == 200, response.text
        page = response.json()
        sizes.append(len(response.content))
        for row in page["runs"]:
            # each value cut at 2000 characters, the bag stopped once past 16 KiB, and both said
            assert all(len(v) == 2000 + len("…[cut at 2000 characters]") for v in row["attributes"].values())
            assert 5 <= len(row["attributes"]) < 40
            assert row["elided"][-1] == "attributes.*"
            assert set(row["elided"][:-1]) == {f"attributes.{k}" for k in row["attributes"]}
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert len(page["runs"]) < 10  # ended early at the budget, with a cursor
    assert seen == runs  # newest first, each once
    assert len(sizes) > 2 and max(sizes) < 65536 + 20_000, sizes


def test_children_stop_at_the_byte_budget_and_say_so(receiver_factory: Callable[..., ReceiverServer]) -> None:
    receiver = receiver_factory(api_response_bytes=65536)
    t0 = time.time_ns()
    children = [f"c{i:015x}" for i in range(200)]
    post_spans(
        receiver,
        otlp_span(RUN, None, "R", t0),
        *(attrs_span(c, RUN, t0 + (i + 1) * MS, 3, 3000) for i, c in enumerate(children)),
    )
    response = httpx.get(f"{receiver.url}/api/runs/{RUN}", timeout=30)
    run = response.json()
    assert run["children_truncated"] is True
    shown = [c["span_id"] for c in run["children"]]
    assert 5 < len(shown) < 200 and shown == children[: len(shown)]
    assert len(response.content) < 65536 + 20_000
    small = httpx.get(f"{receiver.url}/api/runs/{children[0]}", timeout=30)
    assert small.status_code == 404  # a child span is not a run


def test_glia_runs_follows_the_same_limits(receiver: ReceiverServer, database_url: str) -> None:
    post_spans(receiver, otlp_span(RUN, None, "x" * 500, time.time_ns(), note="y" * 500))
    process = glia_process(database_url, "runs", "--format", "json", GLIA_API_LIST_VALUE_CHARS="100")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    (row,) = orjson.loads(out)
    assert row["run_name"] == "x" * 100 + "…[cut at 100 characters]"
    assert row["attributes"]["note"] == "y" * 100 + "…[cut at 100 characters]"
    assert row["elided"] == ["run_name", "attributes.note"]


def test_metric_series_are_bounded_too(receiver_factory: Callable[..., ReceiverServer], sql: Sql) -> None:
    receiver = receiver_factory(api_response_bytes=65536, api_list_row_bytes=4096, api_list_value_chars=100)
    post_spans(receiver, otlp_span(RUN, None, "R", time.time_ns()))
    # 200 points, each its own series: a 3000-character attribute, and a name of 10000 characters
    sql(
        "INSERT INTO metric_points (point_id, time, time_unix_nano, metric_name, unit, metric_type, value, trace_id,"
        " span_id, attributes)"
        " SELECT gen_random_uuid(), s.start_time, 0, repeat('m', 10000), 'By', 'gauge', i, s.trace_id, s.span_id,"
        "        jsonb_build_object('k', i, 'blob', repeat('b', 3000), 'wide', repeat('w', 5000))"
        " FROM spans s, generate_series(1, 200) AS i WHERE s.span_id = $1",
        RUN,
    )
    response = httpx.get(f"{receiver.url}/api/runs/{RUN}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(response.content) < 65536 + 20_000, len(response.content)
    assert body["truncated"] is True and 5 < len(body["series"]) < 200
    for series in body["series"]:
        assert series["name"] == "m" * 100 + "…[cut at 100 characters]"
        assert len(series["points"]) == 1
        attrs = series["attributes"]
        assert attrs == {"blob": "b" * 100 + "…[cut at 100 characters]", "k": attrs["k"],
                         "wide": "w" * 100 + "…[cut at 100 characters]"}  # fmt: skip
        assert series["elided"] == ["name", "attributes.blob", "attributes.wide"]
