"""Retention: whole monthly partitions older than the cut-off are archived and dropped; newer ones never."""

from __future__ import annotations

import asyncio
import csv
import gzip
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from glia_otel._cli import main
from receiver import retention
from tests.integration.test_api import seed_runs

Sql = Callable[..., list[dict[str, Any]]]


def months_before(cutoff: datetime, sql: Sql) -> list[dict[str, Any]]:
    return sql(
        "SELECT partition, range_end FROM glia_partitions() WHERE parent = 'spans' AND range_end <= $1"
        " ORDER BY range_start",
        cutoff,
    )


def test_retention_archives_and_drops_old_partitions(
    database_url: str, sql: Sql, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_runs(database_url, n=120, months=12, metrics_every=0)
    total = sql("SELECT count(*) AS n FROM spans")[0]["n"]
    cutoff = datetime.now(UTC) - timedelta(days=90)
    old = months_before(cutoff, sql)
    assert len(old) >= 9
    old_rows = sql("SELECT count(*) AS n FROM spans WHERE start_time < $1", old[-1]["range_end"])[0]["n"]
    assert old_rows > 0

    assert main(["retention", "--older-than", "90d", "--dry-run", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.count("would drop spans_") == len(old)
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == total

    archive = tmp_path / "archive"
    assert main(["retention", "--older-than", "90d", "--archive", str(archive), "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert f"dropped {old[0]['partition']}" in out
    # the old partitions are gone, with exactly their rows; nothing newer than the last dropped month is touched
    assert months_before(cutoff, sql) == []
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == total - old_rows
    assert sql("SELECT min(start_time) AS t FROM spans")[0]["t"] >= old[-1]["range_end"]
    # ... and in the archive, as gzipped CSV with the table's columns
    archived = 0
    for part in old:
        path = archive / f"{part['partition']}.csv.gz"
        with gzip.open(path, "rt") as f:
            rows = list(csv.DictReader(f))
        archived += len(rows)
        assert all(r["span_id"] and r["service_name"].startswith("prog-") for r in rows)
    assert archived == old_rows
    assert not list(archive.glob(".*partial"))


def test_a_partition_that_reaches_past_the_cutoff_is_kept(database_url: str, sql: Sql) -> None:
    seed_runs(database_url, n=60, months=3, metrics_every=0)

    # a cut-off in the middle of a month: that month still holds newer rows, so it stays
    async def go() -> list[retention.Dropped]:
        conn = await asyncpg.connect(database_url)
        try:
            return await retention.apply(conn, keep_days=45)
        finally:
            await conn.close()

    cutoff = datetime.now(UTC) - timedelta(days=45)
    before = sql("SELECT count(*) AS n FROM spans WHERE start_time >= $1", cutoff)[0]["n"]
    dropped = asyncio.run(go())
    assert all(d.range_end <= cutoff for d in dropped)
    assert sql("SELECT count(*) AS n FROM spans WHERE start_time >= $1", cutoff)[0]["n"] == before


def test_stored_policy_is_applied_once_a_day(database_url: str, sql: Sql, capsys: pytest.CaptureFixture[str]) -> None:
    seed_runs(database_url, n=60, months=6, metrics_every=0)
    assert main(["retention", "--show-policy", "--database-url", database_url]) == 0
    assert "no retention policy" in capsys.readouterr().out
    assert main(["retention", "--set-policy", "60d", "--database-url", database_url]) == 0
    assert "keep 60 days" in capsys.readouterr().out

    async def apply_twice() -> tuple[Any, Any]:
        conn = await asyncpg.connect(database_url)
        try:
            return await retention.apply_policy_if_due(conn), await retention.apply_policy_if_due(conn)
        finally:
            await conn.close()

    first, second = asyncio.run(apply_twice())
    assert first and second is None  # applied, then not again within the day
    cutoff = datetime.now(UTC) - timedelta(days=60)
    assert months_before(cutoff, sql) == []
    assert sql("SELECT last_applied_at IS NOT NULL AS applied FROM retention_policy") == [{"applied": True}]


def test_receiver_applies_the_policy(
    receiver_factory: Callable[..., Any], database_url: str, sql: Sql, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_runs(database_url, n=60, months=6, metrics_every=0)
    assert main(["retention", "--set-policy", "30d", "--database-url", database_url]) == 0
    receiver_factory()
    import time

    deadline = time.monotonic() + 20
    while sql("SELECT last_applied_at FROM retention_policy")[0]["last_applied_at"] is None:
        assert time.monotonic() < deadline, "the receiver did not apply the policy"
        time.sleep(0.2)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert months_before(cutoff, sql) == []


def test_bad_age_is_refused(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retention", "--older-than", "soon", "--database-url", database_url]) == 2
    assert "not an age" in capsys.readouterr().err
