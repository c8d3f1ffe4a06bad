"""The query API against a seeded database: filters, sorting, keyset pages, one run, its metrics, 422s, and a
schemathesis run over the OpenAPI schema."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from glia_otel._cli import main
from receiver import query
from tests.conftest import ReceiverServer
from tests.helpers import N, Sql, expected, run_id, seed_runs


@pytest.fixture
def seeded(database_url: str, receiver: ReceiverServer) -> httpx.Client:
    seed_runs(database_url)
    with httpx.Client(base_url=receiver.url, timeout=30) as client:
        yield client


def ids(page: dict[str, Any]) -> list[str]:
    return [r["run_id"] for r in page["runs"]]


def test_newest_first_with_every_column(seeded: httpx.Client) -> None:
    page = seeded.get("/api/runs", params={"limit": 5}).json()
    # run 1 is the newest, then 2, 3, ...
    assert ids(page) == [run_id(i) for i in range(1, 6)]
    first = page["runs"][0]
    for key, value in expected(1).items():
        assert first[key] == value, key
    assert first["status"] == "ok" and first["run_kind"] == "command"
    assert first["cpu_seconds"] == pytest.approx(expected(1)["wall_seconds"] * 0.15)
    assert page["next_cursor"]


def test_filters_select_the_right_runs(seeded: httpx.Client) -> None:
    def runs(**params: Any) -> set[int]:
        page = seeded.get("/api/runs", params={"limit": 500, **params}).json()
        by_id = {run_id(i): i for i in range(1, N + 1)}
        return {by_id[r] for r in ids(page)}

    every = range(1, N + 1)
    assert runs(program="prog-07") == {i for i in every if i % 50 == 7}
    assert runs(service="prog-07") == {i for i in every if i % 50 == 7}
    assert runs(host="node03") == {i for i in every if i % 20 == 3}
    assert runs(user="eve") == {i for i in every if i % 7 == 4}
    assert runs(status="error") == {i for i in every if expected(i)["exit_code"] != 0}
    assert runs(exit_code=137) == {101}
    assert runs(attr="pipeline=wgs") == {i for i in every if i % 4 == 1}
    # typed containment: a number matches the number, a quoted number the string
    assert runs(attr="reads=7000") == {7}
    assert runs(attr=['reads="7000"']) == set()
    assert runs(attr=["pipeline=qc", "sample=S3"]) == {3}
    # 12 months over 120 runs: about 3 days apart; the newest week holds runs 1 and 2 only
    assert runs(since="7d") == {1, 2}
    newest = datetime.now(UTC) - timedelta(hours=1)
    assert runs(until=(newest - timedelta(days=355)).isoformat()) == {i for i in every if i > 118}
    assert runs(program="prog-07", status="error") == {i for i in every if i % 50 == 7 and expected(i)["exit_code"]}


def test_keyset_pages_cover_everything_once(seeded: httpx.Client, sql: Sql) -> None:
    # ties in every sort key, and runs without CPU or memory figures (sorted as -1): pages must neither skip nor
    # repeat a run where the sort value does not change from one page to the next
    tied = [run_id(i) for i in range(10, 50)]
    sql(
        "UPDATE spans SET start_time = (SELECT start_time FROM spans WHERE span_id = $2), duration_ns = 60e9,"
        " peak_rss_bytes = 512 * 1048576 WHERE span_id = ANY($1::text[])",
        tied[:20],
        tied[0],
    )
    sql(
        "UPDATE spans SET cpu_user_seconds = NULL, cpu_system_seconds = NULL, peak_rss_bytes = NULL"
        " WHERE span_id = ANY($1::text[])",
        tied[20:],
    )
    for sort in ("-started_at", "started_at", "-peak_rss_bytes", "peak_rss_bytes", "wall_seconds", "-cpu_seconds",
                 "cpu_seconds"):  # fmt: skip
        whole = seeded.get("/api/runs", params={"limit": 500, "sort": sort}).json()
        assert whole["next_cursor"] is None and len(whole["runs"]) == N, sort
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 7, "sort": sort}
            if cursor:
                params["cursor"] = cursor
            page = seeded.get("/api/runs", params=params).json()
            seen += ids(page)
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ids(whole), sort
        key = sort.lstrip("-")
        values = [-1 if r[key] is None else r[key] for r in whole["runs"]]
        assert values == sorted(values, reverse=sort.startswith("-")), sort
    by_wall = seeded.get("/api/runs", params={"sort": "wall_seconds", "limit": 500}).json()["runs"]
    assert sum(r["wall_seconds"] == 60.0 for r in by_wall) >= 20
    assert sum(r["cpu_seconds"] is None for r in by_wall) == 20
    by_memory = seeded.get("/api/runs", params={"sort": "-peak_rss_bytes", "limit": 3}).json()["runs"]
    top = sorted((i for i in range(1, N + 1) if run_id(i) not in tied), key=lambda i: -expected(i)["peak_rss_bytes"])
    assert [r["peak_rss_bytes"] for r in by_memory] == [expected(i)["peak_rss_bytes"] for i in top[:3]]


def test_one_run_with_children_and_metrics(seeded: httpx.Client, sql: Sql) -> None:
    rid = run_id(5)
    trace = sql("SELECT trace_id FROM spans WHERE span_id = $1", rid)[0]["trace_id"]
    # a child span and a grandchild under run 5
    for span, parent, name in (
        ("c000000000000001", rid, "step-1"),
        ("c000000000000002", "c000000000000001", "io"),
    ):
        sql(
            "INSERT INTO spans (trace_id, span_id, parent_span_id, start_time, end_time, name, start_time_unix_nano,"
            " duration_ns) SELECT trace_id, $2, $3, start_time, end_time, $4, start_time_unix_nano, 1000"
            " FROM spans WHERE span_id = $1",
            rid,
            span,
            parent,
            name,
        )
    run = seeded.get(f"/api/runs/{rid}").json()
    assert run["run_id"] == rid and run["trace_id"] == trace
    assert run["program_name"] == "prog-05" and run["attributes"] == expected(5)["attributes"]
    assert run["max_rss_kb"] == expected(5)["peak_rss_bytes"] // 1024
    assert [(c["name"], c["depth"]) for c in run["children"]] == [("step-1", 1), ("io", 2)]

    metrics = seeded.get(f"/api/runs/{rid}/metrics").json()
    series = {(s["name"], s["attributes"].get("type")): s for s in metrics["series"]}
    assert set(series) == {
        ("process.memory.usage", None),
        ("process.cpu.time", "user"),
        ("process.cpu.time", "system"),
    }
    memory = series[("process.memory.usage", None)]["points"]
    wall = expected(5)["wall_seconds"]
    assert len(memory) == int(wall // 10) + 1
    assert max(p["value"] for p in memory) == pytest.approx(expected(5)["peak_rss_bytes"])
    assert [p["time"] for p in memory] == sorted(p["time"] for p in memory)


def test_not_found_and_validation_messages(seeded: httpx.Client) -> None:
    missing = seeded.get("/api/runs/0123456789abcdef")
    assert missing.status_code == 404 and "0123456789abcdef" in missing.json()["detail"]
    bad_id = seeded.get("/api/runs/not-a-run")
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["path", "run_id"]

    def problem(**params: Any) -> dict[str, Any]:
        response = seeded.get("/api/runs", params=params)
        assert response.status_code == 422, params
        detail: dict[str, Any] = response.json()["detail"][0]
        return detail

    assert problem(since="last tuesday")["loc"] == ["query", "since"]
    assert "ISO 8601" in problem(since="last tuesday")["msg"]
    assert "key=value" in problem(attr="nokey")["msg"]
    assert problem(limit=0)["loc"] == ["query", "limit"]
    assert problem(limit=501)["loc"] == ["query", "limit"]
    assert problem(sort="owner")["loc"] == ["query", "sort"]
    assert problem(status="failed")["loc"] == ["query", "status"]
    assert "cursor" in problem(cursor="garbage")["msg"]
    assert "later than since" in problem(since="2026-01-02", until="2026-01-01")["msg"]
    cursor = seeded.get("/api/runs", params={"limit": 1}).json()["next_cursor"]
    assert "sort=-started_at" in problem(cursor=cursor, sort="wall_seconds")["msg"]
    assert problem(user="a\x00b")["loc"] == ["query", "user"]


def cursor_for(sort: str, value: Any) -> str:
    raw = orjson.dumps([sort, value, "0" * 32, "0" * 16])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_values_postgresql_cannot_take_are_422_naming_the_parameter(seeded: httpx.Client) -> None:
    def problem(**params: Any) -> dict[str, Any]:
        response = seeded.get("/api/runs", params=params)
        assert response.status_code == 422, (params, response.text)
        detail: dict[str, Any] = response.json()["detail"][0]
        return detail

    # a NUL in a key, in a plain value, or in a JSON string value (which JSON text spells \u0000)
    for attr in ("a\x00b=1", "sample=S\x001", 'sample="S\\u00001"'):
        found = problem(attr=attr)
        assert found["loc"] == ["query", "attr"] and "NUL" in found["msg"], attr
    # times that are valid ISO 8601 but outside what UTC (and so asyncpg) can hold
    for param in ("since", "until"):
        for text in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
            found = problem(**{param: text})
            assert found["loc"] == ["query", param] and "out of range" in found["msg"], (param, text)
    for sort in ("-started_at", "started_at"):
        found = problem(sort=sort, cursor=cursor_for(sort, "9999-12-31T23:59:59-14:00"))
        assert found["loc"] == ["query", "cursor"] and "out of range" in found["msg"]
    # ... and the same filters with values in range still work
    page = seeded.get("/api/runs", params={"attr": "pipeline=wgs", "since": "0001-01-02T00:00:00+14:00"}).json()
    assert {r["attributes"]["pipeline"] for r in page["runs"]} == {"wgs"} and len(page["runs"]) == N // 4


def test_a_data_error_from_postgresql_is_422(seeded: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # without the check, PostgreSQL refuses the \u0000 in the jsonb parameter (SQLSTATE 22P05): database.py makes it
    # an InvalidQuery, answered 422, not 500
    monkeypatch.setattr(query.RunFilter, "check", lambda self: None)
    response = seeded.get("/api/runs", params={"attr": "sample=S\x001"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query"] and "PostgreSQL" in response.json()["detail"][0]["msg"]


def test_a_database_error_is_503_with_retry_after(seeded: httpx.Client, sql: Sql) -> None:
    # a schema being changed under the receiver (not a transient SQLSTATE class) is still worth a retry
    sql("ALTER VIEW runs RENAME TO runs_moved")
    response = seeded.get("/api/runs")
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert "UndefinedTable" in response.json()["detail"]
    sql("ALTER VIEW runs_moved RENAME TO runs")
    assert len(seeded.get("/api/runs", params={"limit": 500}).json()["runs"]) == N


def test_glia_runs_reports_an_out_of_range_time(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed_runs(database_url, n=3, months=1)
    assert main(["runs", "--since", "9999-12-31T23:59:59-14:00", "--database-url", database_url]) == 2
    err = capsys.readouterr().err
    assert "glia runs: --since:" in err and "out of range" in err and "Traceback" not in err
    assert main(["runs", "--attr", "sample=S\x001", "--database-url", database_url]) == 2
    assert "attr: must not contain NUL" in capsys.readouterr().err
    assert main(["runs", "--format", "json", "--database-url", database_url]) == 0
    assert len(orjson.loads(capsys.readouterr().out)) == 3


def test_openapi_documents_the_api(seeded: httpx.Client) -> None:
    schema = seeded.get("/openapi.json").json()
    assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/metrics"} <= set(schema["paths"])
    params = {p["name"] for p in schema["paths"]["/api/runs"]["get"]["parameters"]}
    assert {
        "program",
        "user",
        "host",
        "status",
        "exit_code",
        "since",
        "until",
        "attr",
        "sort",
        "limit",
        "cursor",
    } <= params


def test_the_api_version_is_the_packages(
    receiver_factory: Callable[..., ReceiverServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from glia_otel import _version

    monkeypatch.setattr(_version, "__version__", "9.8.7-test")
    receiver = receiver_factory()
    assert httpx.get(f"{receiver.url}/openapi.json").json()["info"]["version"] == "9.8.7-test"


def test_schemathesis(seeded: httpx.Client) -> None:
    """Generated requests for every /api operation get a documented status and a body matching the schema, never a
    500 (schemathesis checks, driven by hypothesis against the running receiver)."""
    from hypothesis import given
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(f"{seeded.base_url}/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith("/api/"):
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            # values the schema allows but that mean nothing (since=2026-13-45) are a 422 by design
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
    assert calls >= 100
