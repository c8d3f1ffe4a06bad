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
from tests.helpers import Sql, seed_runs


def holding(moment: datetime, sql: Sql) -> list[dict[str, Any]]:
    """The spans partition whose range holds `moment`."""
    return sql(
        "SELECT partition FROM glia_partitions() WHERE parent = 'spans' AND range_start <= $1 AND $1 < range_end",
        moment,
    )


def apply(url: str, keep_days: int, archive: Path | None = None) -> list[retention.Dropped]:
    """retention.apply on a connection of its own."""

    async def go() -> list[retention.Dropped]:
        conn = await asyncpg.connect(url)
        try:
            return await retention.apply(conn, keep_days, archive)
        finally:
            await conn.close()

    return asyncio.run(go())


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
    newer = sql("SELECT count(*) AS n FROM spans WHERE start_time >= $1", cutoff)[0]["n"]
    assert newer > 0

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
    assert sql("SELECT count(*) AS n FROM spans WHERE start_time >= $1", cutoff)[0]["n"] == newer
    assert holding(cutoff, sql), "the partition holding the cut-off was dropped"
    # ... and in the archive, as gzipped CSV with the table's columns
    archived = 0
    for part in old:
        path = archive / f"{part['partition']}.csv.gz"
        with gzip.open(path, "rt") as f:
            rows = list(csv.DictReader(f))
        archived += len(rows)
        assert all(r["span_id"] and r["service_name"].startswith("prog-") for r in rows)
    assert archived == old_rows
    # one file per dropped partition of spans and of metric_points, nothing else (no temporary file left)
    names = [p["partition"] for p in old]
    files = {f"{n}.csv.gz" for n in names} | {f"{n.replace('spans', 'metric_points', 1)}.csv.gz" for n in names}
    assert {p.name for p in archive.iterdir()} == files


def test_a_partition_that_reaches_past_the_cutoff_is_kept(database_url: str, sql: Sql) -> None:
    seed_runs(database_url, n=60, months=3, metrics_every=0)
    # a cut-off in the middle of a month: that month still holds newer rows, so it stays
    cutoff = datetime.now(UTC) - timedelta(days=45)
    kept = holding(cutoff, sql)
    assert kept and sql("SELECT count(*) AS n FROM spans WHERE start_time < $1", cutoff)[0]["n"] > 0
    before = sql("SELECT count(*) AS n FROM spans WHERE start_time >= $1", cutoff)[0]["n"]
    old = months_before(cutoff, sql)
    dropped = apply(database_url, keep_days=45)
    assert old and {p["partition"] for p in old} <= {d.partition for d in dropped}
    assert all(d.range_end <= cutoff for d in dropped)
    assert months_before(cutoff, sql) == []
    assert holding(cutoff, sql) == kept
    assert sql("SELECT count(*) AS n FROM spans WHERE start_time >= $1", cutoff)[0]["n"] == before


def test_a_second_archive_of_the_same_month_keeps_the_first(database_url: str, sql: Sql, tmp_path: Path) -> None:
    seed_runs(database_url, n=60, months=4, metrics_every=0)
    cutoff = datetime.now(UTC) - timedelta(days=62)
    oldest = months_before(cutoff, sql)[0]
    first = apply(database_url, 62, tmp_path)
    assert oldest["partition"] in {d.partition for d in first}
    path = tmp_path / f"{oldest['partition']}.csv.gz"
    content = path.read_bytes()
    # a late span for that month makes its partition again; the next run archives and drops it once more
    month = oldest["range_end"] - timedelta(days=1)
    sql("SELECT glia_ensure_partition('spans'::regclass, $1)", month)
    sql(
        "INSERT INTO spans (trace_id, span_id, start_time, end_time, name, start_time_unix_nano, duration_ns)"
        " VALUES ('late0000000000000000000000000000', 'late000000000000', $1, $1, 'late', 0, 0)",
        month,
    )
    second = apply(database_url, 62, tmp_path)
    assert [d.partition for d in second] == [oldest["partition"]] and second[0].rows == 1
    assert second[0].archive is not None and second[0].archive != path
    assert second[0].archive.name.startswith(f"{oldest['partition']}.") and second[0].archive.name.endswith(".csv.gz")
    assert path.read_bytes() == content
    with gzip.open(second[0].archive, "rt") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["late"]
    assert not list(tmp_path.glob(".*"))


def test_a_partition_in_use_is_left_for_the_next_run(
    database_url: str, sql: Sql, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seed_runs(database_url, n=60, months=4, metrics_every=0)
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "200ms")
    cutoff = datetime.now(UTC) - timedelta(days=62)
    old = months_before(cutoff, sql)
    assert len(old) >= 2
    busy = old[0]["partition"]
    busy_rows = sql(f"SELECT count(*) AS n FROM {busy}")[0]["n"]

    async def go() -> list[retention.Dropped]:
        holder = await asyncpg.connect(database_url)
        try:
            async with holder.transaction():
                # an open write transaction on one spans partition (its lock blocks the archive's SHARE lock), and
                # a reader of metric_points (its lock blocks the drop of any metric_points partition)
                await holder.execute(f"LOCK TABLE {busy} IN ROW EXCLUSIVE MODE")
                await holder.execute("LOCK TABLE metric_points IN ACCESS SHARE MODE")
                conn = await asyncpg.connect(database_url)
                try:
                    return await retention.apply(conn, 62, tmp_path)
                finally:
                    await conn.close()
        finally:
            await holder.close()

    with caplog.at_level("WARNING", logger="glia.retention"):
        dropped = asyncio.run(go())
    assert {d.partition for d in dropped} == {p["partition"] for p in old[1:]}
    assert months_before(cutoff, sql) == [old[0]]
    assert sql(f"SELECT count(*) AS n FROM {busy}")[0]["n"] == busy_rows
    expired_metrics = sql(
        "SELECT partition FROM glia_partitions() WHERE parent = 'metric_points' AND range_end <= $1", cutoff
    )
    assert len(expired_metrics) == len(old)  # each was copied, then its drop timed out: kept, archive removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{p['partition']}.csv.gz" for p in old[1:])
    kept_messages = [r.getMessage() for r in caplog.records if "kept for the next run" in r.getMessage()]
    assert len(kept_messages) == 1 + len(expired_metrics) and any(busy in m for m in kept_messages)
    # the next run takes what was left, archived once
    again = apply(database_url, 62, tmp_path)
    assert {d.partition for d in again} == {busy} | {p["partition"] for p in expired_metrics}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{p['partition']}.csv.gz" for p in old] + [f"{p['partition']}.csv.gz" for p in expired_metrics]
    )


def test_glia_retention_refuses_while_another_process_applies_it(
    database_url: str, sql: Sql, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_runs(database_url, n=60, months=4, metrics_every=0)
    total = sql("SELECT count(*) AS n FROM spans")[0]["n"]

    async def go() -> int:
        holder = await asyncpg.connect(database_url)
        try:
            assert await holder.fetchval("SELECT pg_try_advisory_lock(hashtext('glia_retention'))")
            return await asyncio.to_thread(main, ["retention", "--older-than", "30d", "--database-url", database_url])
        finally:
            await holder.close()

    assert asyncio.run(go()) == 1
    assert "applying retention right now" in capsys.readouterr().err
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == total
    assert main(["retention", "--older-than", "30d", "--database-url", database_url]) == 0
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] < total


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
    for absurd in ("99999999999999999999d", "300000y", "9" * 5000):
        assert main(["retention", "--older-than", absurd, "--database-url", database_url]) == 2
        assert "at most 36500 days" in capsys.readouterr().err
