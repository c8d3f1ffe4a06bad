"""Every SQL query in docs/querying.md runs against a seeded database and returns rows, so the doc cannot rot."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from tests.conftest import REPO
from tests.helpers import Sql, seed_runs

DOC = REPO / "docs" / "querying.md"


def doc_queries() -> list[tuple[str, str]]:
    """(heading, sql) for each ```sql block."""
    text = DOC.read_text()
    found = []
    for match in re.finditer(r"```sql\n(.*?)```", text, flags=re.DOTALL):
        heading = re.findall(r"^## (.+)$", text[: match.start()], flags=re.MULTILINE)[-1]
        found.append((heading, match.group(1)))
    return found


def substitute(query: str, variables: dict[str, str]) -> str:
    """psql's :'name' -> a quoted literal, as psql does it."""

    def literal(m: re.Match[str]) -> str:
        return "'" + variables[m.group(1)].replace("'", "''") + "'"

    return re.sub(r":'(\w+)'", literal, query)


def test_the_doc_has_enough_queries() -> None:
    assert len(doc_queries()) >= 12


@pytest.fixture(scope="module")
def queries() -> list[tuple[str, str]]:
    return doc_queries()


def test_every_query_in_the_doc_returns_rows(database_url: str, sql: Sql) -> None:
    seed_runs(database_url, n=3000, months=12, metrics_every=40)
    # a run with samples for the timeline queries, and a program with several script versions
    sampled = sql(
        "SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM metric_points m"
        " WHERE m.service_instance_id = r.service_instance_id) ORDER BY r.started_at DESC LIMIT 1"
    )
    assert sampled, "the seed made no metric points"
    variables = {"program": "prog-07", "run_id": sampled[0]["run_id"]}

    async def run_all() -> dict[str, list[asyncpg.Record]]:
        conn = await asyncpg.connect(database_url)
        results = {}
        try:
            for heading, query in doc_queries():
                try:
                    results[heading] = await conn.fetch(substitute(query, variables))
                except asyncpg.PostgresError as exc:
                    raise AssertionError(f"docs/querying.md, '{heading}': {exc}") from exc
        finally:
            await conn.close()
        return results

    results = asyncio.run(run_all())
    empty = [heading for heading, rows in results.items() if not rows]
    assert not empty, f"queries that returned nothing on the seeded database: {empty}"

    # a few answers checked against what the seed put in
    contained = results["Runs with a given custom value"]
    assert all(r["attributes"].count('"qc"') and r["attributes"].count('"S7"') for r in contained)
    assert all(r["reads"] > 500_000 for r in results["Runs where a custom number is in a range"])
    assert {r["signal"] for r in results["Runs killed by a signal"]} == {9}
    versions = results["Peak memory of one script across its versions"]
    assert len(versions) == 3 and sum(r["runs"] for r in versions) == 60  # prog-07: every 50th of 3000 runs
    assert len(results["Runs and failures per day"]) == 14
    timeline = results["A run's memory over time"]
    assert len(timeline) > 1
