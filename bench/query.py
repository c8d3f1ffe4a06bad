"""Query latency on a million runs: indexed schema vs. the same data without its secondary indexes.

    uv run python bench/query.py [--runs 1000000] [--months 12] [--repeat 30] [--only-answers]

Starts a private embedded PostgreSQL in a temporary directory (never the tests' or the user's), migrates it, seeds
`--runs` synthetic runs over `--months` months (50 programs, 20 hosts, 7 users; bench/seed.sql, one INSERT ...
SELECT FROM generate_series), then measures the median latency of each query on the indexed database and on a copy
without the secondary indexes, and prints both side by side with the ratio. The API is measured through a real
receiver (uvicorn) on each database. The answers (`glia suggest`, `glia compare`: receiver/answers.py) are measured
as the commands run them (the named queries in a read transaction, then the recommendation or the rank tests in
Python) and through /api/suggest and /api/compare. The page's program view is measured as the page opens it
(receiver/page/app.js, `showProgram`): its API calls issued at once, as the browser does, over up to six keep-alive
connections, and timed until the last answer is in; also with the two calls the page adds when it is opened at a
program view's address (the runs table's first page and the running-now box).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from receiver import answers  # noqa: E402
from receiver.query import ReadLimits, reading  # noqa: E402
from receiver.sqlfiles import parse  # noqa: E402

SEED = parse((REPO / "bench" / "seed.sql").read_text())
NOINDEX_DB = "glia_noindex"
# the secondary indexes the comparison copy goes without (the primary key stays: it is the table's identity)
SECONDARY_INDEXES = [
    "spans_start_time_idx",
    "spans_service_time_idx",
    "spans_owner_time_idx",
    "spans_host_time_idx",
    "spans_script_sha_idx",
    "spans_parent_idx",
    "spans_attributes_idx",
    "spans_span_id_idx",
    "spans_workflow_run_idx",
    "spans_unfinished_idx",
]
QUERIES: dict[str, tuple[str, tuple[Any, ...], float]] = {
    # name: (sql, args, target ms)
    "newest 50 runs of one program": (
        "SELECT * FROM runs WHERE program_name = $1 ORDER BY started_at DESC LIMIT 50",
        ("prog-07",),
        10,
    ),
    "JSONB containment filter": (
        "SELECT * FROM runs WHERE attributes @> $1::jsonb ORDER BY started_at DESC LIMIT 50",
        ('{"pipeline": "qc", "sample": "S7"}',),
        50,
    ),
    "30-day failure rate by program": (
        "SELECT program_name, count(*) AS runs, avg((status = 'error')::int) AS failure_rate FROM runs"
        " WHERE started_at >= now() - interval '30 days' GROUP BY program_name ORDER BY failure_rate DESC",
        (),
        300,
    ),
}
API_PAGES: dict[str, tuple[dict[str, Any], float]] = {
    "API: one page (program filter)": ({"program": "prog-07", "limit": 50}, 10),
    "API: one page (newest, no filter)": ({"limit": 50}, 10),
    "API: one page (custom value filter)": ({"attr": ["pipeline=qc", "sample=S7"], "limit": 50}, 50),
}

# name: (the answer for a database connection, target ms); one program of the seed: prog-07, 20,000 runs a year
ANSWERS: dict[str, tuple[Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]], float]] = {
    "suggest: one program, 30 days": (
        lambda conn: answers.suggest(
            conn, answers.SuggestFilter(since=datetime.now(UTC) - timedelta(days=30), program="prog-07")
        ),
        300,
    ),
    "compare: one program by version, all": (
        lambda conn: answers.compare(conn, answers.CompareFilter(program="prog-07")),
        300,
    ),
    "compare: one program by host, all": (
        lambda conn: answers.compare(conn, answers.CompareFilter(program="prog-07", by=answers.CompareBy.HOST)),
        300,
    ),
    "suggest: every program, 30 days": (
        lambda conn: answers.suggest(conn, answers.SuggestFilter(since=datetime.now(UTC) - timedelta(days=30))),
        1000,
    ),
}
API_ANSWERS: dict[str, tuple[str, dict[str, Any], float]] = {
    "API: /api/suggest, one program": ("/api/suggest", {"program": "prog-07"}, 300),
    "API: /api/compare, one program": ("/api/compare", {"program": "prog-07"}, 300),
}
# The page's program view (#program=prog-07): app.js's showProgram fires these three at once (Promise.all) and draws
# the view when the last is in; its parameters in the page's order. Opened at that address (a link, a reload), the
# page also loads the runs table's first page (loadRuns) and the running-now box (loadRunning) at the same time.
PROGRAM_VIEW = [
    ("/api/runs", {"program": "prog-07", "limit": "500", "sort": "-started_at"}),
    ("/api/compare", {"program": "prog-07"}),
    ("/api/suggest", {"program": "prog-07"}),
]
PAGE_OPEN = [
    ("/api/runs", {"limit": "50"}),
    ("/api/runs", {"status": "running", "sort": "-started_at", "limit": "100"}),
]
PAGE_VIEWS: dict[str, tuple[list[tuple[str, dict[str, str]]], float]] = {
    "page: program view (3 calls at once)": (PROGRAM_VIEW, 500),
    "page: program view opened at its URL (5)": (PAGE_OPEN + PROGRAM_VIEW, 500),
}
BROWSER_CONNECTIONS = 6  # a browser's keep-alive connections to one HTTP/1.1 host
LIMITS = ReadLimits(
    statement_timeout_ms=600_000,
    response_bytes=4 * 1024 * 1024,
    list_value_chars=4096,
    list_row_bytes=65536,
    detail_value_chars=65536,
)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def time_query(url: str, sql: str, args: tuple[Any, ...], repeat: int) -> float:
    # as the API does: plan each execution with its values (a generic plan cannot see how selective they are)
    conn = await asyncpg.connect(url, server_settings={"plan_cache_mode": "force_custom_plan"})
    try:
        await conn.fetch(sql, *args)  # warm: plan and cache
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await conn.fetch(sql, *args)
            samples.append(time.perf_counter() - started)
        return median_ms(samples)
    finally:
        await conn.close()


async def time_answer(
    url: str, answer: Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]], repeat: int
) -> float:
    """The median time of one answer as `glia suggest` / `glia compare` get it: a read transaction (the API's
    settings: custom plans, a statement timeout), its query, the Python after it."""
    conn = await asyncpg.connect(url)
    try:

        async def once() -> dict[str, Any]:
            async with reading(conn, LIMITS) as runs:
                return await answer(runs.conn)

        first = await once()  # warm: plan and cache
        assert first["groups"], "the answer has no groups: the seed is not what it should be"
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await once()
            samples.append(time.perf_counter() - started)
        return median_ms(samples)
    finally:
        await conn.close()


def time_api_answer(base: str, path: str, params: dict[str, Any], repeat: int) -> float:
    with httpx.Client(base_url=base, timeout=120) as client:
        first = client.get(path, params=params)
        first.raise_for_status()
        assert first.json()["groups"], path
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            client.get(path, params=params).raise_for_status()
            samples.append(time.perf_counter() - started)
        return median_ms(samples)


def time_api(base: str, params: dict[str, Any], repeat: int) -> float:
    with httpx.Client(base_url=base, timeout=120) as client:
        first = client.get("/api/runs", params=params)
        first.raise_for_status()
        assert len(first.json()["runs"]) == params["limit"]
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            client.get("/api/runs", params=params).raise_for_status()
            samples.append(time.perf_counter() - started)
        return median_ms(samples)


async def time_page_view(base: str, calls: list[tuple[str, dict[str, str]]], repeat: int) -> float:
    """The median time from the first request of a page view to the last answer read, its calls issued at once."""
    limits = httpx.Limits(max_connections=BROWSER_CONNECTIONS, max_keepalive_connections=BROWSER_CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def once() -> list[Any]:
            responses = await asyncio.gather(*(client.get(path, params=params) for path, params in calls))
            for response in responses:
                response.raise_for_status()
            return [response.json() for response in responses]

        runs, compared, suggested = (await once())[-3:]  # warm: plans, caches, and the connections opened
        assert len(runs["runs"]) == 500 and compared["groups"] and suggested["groups"], "not the seed's program view"
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await once()
            samples.append(time.perf_counter() - started)
        return median_ms(samples)


class Receiver:
    """The receiver app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, database_url: str) -> None:
        import socket

        import uvicorn

        from receiver.app import create_app
        from receiver.settings import Settings

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # the reads' own timeout too (10 s by default): a scan of 10,000,000 runs without an index takes longer
        settings = Settings(
            database_url=database_url, port=self.port, statement_timeout_ms=600_000, read_statement_timeout_ms=600_000
        )
        config = uvicorn.Config(
            create_app(settings, database_url), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("receiver did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def seed(url: str, runs: int, months: int) -> float:
    conn = await asyncpg.connect(url, command_timeout=3600)
    try:
        started = time.perf_counter()
        newest = datetime.now(UTC) - timedelta(minutes=5)
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute(SEED["seed_partitions"], months, newest)
        await conn.execute(SEED["seed_runs"], runs, months, newest)
        await conn.execute("VACUUM ANALYZE spans")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def make_unindexed_copy(admin_url: str, url: str) -> tuple[str, float]:
    started = time.perf_counter()
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{NOINDEX_DB}"')
        await admin.execute(f'CREATE DATABASE "{NOINDEX_DB}" TEMPLATE "glia"')
    finally:
        await admin.close()
    copy_url = url.rsplit("/", 1)[0] + "/" + NOINDEX_DB
    conn = await asyncpg.connect(copy_url)
    try:
        for index in SECONDARY_INDEXES:
            await conn.execute(f"DROP INDEX {index}")  # names from the fixed list above
        await conn.execute("ANALYZE spans")
    finally:
        await conn.close()
    return copy_url, time.perf_counter() - started


async def explain(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        month = datetime.now(UTC) - timedelta(days=30)
        plans = {
            **{name: (sql, qargs) for name, (sql, qargs, _) in QUERIES.items()},
            "suggest (one program)": (
                answers._sql("suggest"),
                ("prog-07", None, None, month, None, answers.MAX_SUGGEST_GROUPS + 1),
            ),
            "compare (one program by version)": (
                answers._sql("compare"),
                ("prog-07", "script_sha256", None, None, None, answers.MAX_COMPARE_RUNS, answers.MAX_COMPARE_GROUPS),
            ),
        }
        for name, (sql, qargs) in plans.items():
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *qargs)
            print(f"--- {name}\n" + "\n".join(r[0] for r in plan) + "\n")
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=30, help="timed repetitions per query on the indexed database")
    parser.add_argument("--repeat-unindexed", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="print each query's plan on the indexed database")
    parser.add_argument("--only-answers", action="store_true", help="suggest, compare, the program view only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the receivers' start-up notices are not results

    from receiver.embedded import EmbeddedPostgres
    from receiver.migrate import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="glia-bench-"))
    workdir.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    pg = EmbeddedPostgres(workdir, preferred_port=56000)
    try:
        url = pg.start()
        upgrade(url)
        print(f"seeding {args.runs:,} runs over {args.months} months into a private PostgreSQL in {workdir} ...")
        seconds = asyncio.run(seed(url, args.runs, args.months))
        print(f"  seeded in {seconds:.1f} s ({args.runs / seconds:,.0f} runs/s, INSERT ... SELECT generate_series)")
        copy_url, copy_seconds = asyncio.run(make_unindexed_copy(pg.url(), url))
        print(f"  unindexed copy made in {copy_seconds:.1f} s\n")

        if args.explain:
            asyncio.run(explain(url))
        rows: list[tuple[str, float, float, float]] = []
        for name, (sql, qargs, target) in {} if args.only_answers else QUERIES.items():
            indexed = asyncio.run(time_query(url, sql, qargs, args.repeat))
            plain = asyncio.run(time_query(copy_url, sql, qargs, args.repeat_unindexed))
            rows.append((name, indexed, plain, target))
        for name, (params, target) in {} if args.only_answers else API_PAGES.items():
            with Receiver(url) as base:
                indexed = time_api(base, params, args.repeat)
            with Receiver(copy_url) as base:
                plain = time_api(base, params, args.repeat_unindexed)
            rows.append((name, indexed, plain, target))
        for name, (answer, target) in ANSWERS.items():
            indexed = asyncio.run(time_answer(url, answer, args.repeat))
            plain = asyncio.run(time_answer(copy_url, answer, args.repeat_unindexed))
            rows.append((name, indexed, plain, target))
        for name, (path, params, target) in API_ANSWERS.items():
            with Receiver(url) as base:
                indexed = time_api_answer(base, path, params, args.repeat)
            with Receiver(copy_url) as base:
                plain = time_api_answer(base, path, params, args.repeat_unindexed)
            rows.append((name, indexed, plain, target))
        for name, (calls, target) in PAGE_VIEWS.items():
            with Receiver(url) as base:
                indexed = asyncio.run(time_page_view(base, calls, args.repeat))
            with Receiver(copy_url) as base:
                plain = asyncio.run(time_page_view(base, calls, args.repeat_unindexed))
            rows.append((name, indexed, plain, target))

        print(f"{'query (median latency)':<40} {'indexed':>10} {'no index':>10} {'ratio':>8} {'target':>8}  ok")
        failed = 0
        for name, indexed, plain, target in rows:
            ok = indexed < target
            failed += not ok
            print(
                f"{name:<40} {indexed:>8.2f}ms {plain:>8.1f}ms {plain / indexed:>7.1f}x {target:>6.0f}ms  "
                f"{'yes' if ok else 'NO'}"
            )
        return 1 if failed else 0
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
