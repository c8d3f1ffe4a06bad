"""Retention: drop whole monthly partitions of spans and metric_points that ended before a cut-off.

A partition is dropped only when its whole range lies before the cut-off, so no row newer than the cut-off is ever
lost. With an archive directory, each partition is first written there as gzip-compressed CSV with a header
(`spans_2025_01.csv.gz`), written to a temporary name and renamed once complete. The policy (`glia retention
--set-policy 90d`) lives in the database; every receiver checks it hourly and applies it once a day.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from . import queries

log = logging.getLogger("glia.retention")

_AGE = re.compile(r"^\s*(\d+)\s*(d|w|m|y)?\s*$")
_AGE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
APPLY_EVERY = timedelta(days=1)


def parse_age(text: str) -> int:
    """Days in an age such as `90d`, `12w`, `6m` (30 days each), `1y` or a bare number of days."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an age: use e.g. 90d, 12w, 6m or 1y")
    days = int(match.group(1)) * _AGE_DAYS[match.group(2) or "d"]
    if days <= 0:
        raise ValueError(f"{text!r}: the age must be at least one day")
    return days


@dataclass
class Dropped:
    parent: str
    partition: str
    range_start: datetime
    range_end: datetime
    archive: Path | None = None
    rows: int | None = None


def _sql(name: str) -> str:
    return queries.load("retention.sql")[name]


async def expired(conn: asyncpg.Connection, cutoff: datetime) -> list[Dropped]:
    """The partitions whose whole range ends at or before `cutoff`."""
    return [Dropped(**dict(r)) for r in await conn.fetch(_sql("expired_partitions"), cutoff)]


async def _archive(conn: asyncpg.Connection, partition: str, directory: Path) -> tuple[Path, int]:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    target = directory / f"{partition}.csv.gz"
    partial = directory / f".{partition}.csv.gz.partial"
    with gzip.open(partial, "wb") as out:

        async def write(chunk: bytes) -> None:
            out.write(chunk)

        status = await conn.copy_from_table(partition, output=write, format="csv", header=True)
    os.replace(partial, target)
    return target, int(status.rsplit(" ", 1)[-1])


async def apply(
    conn: asyncpg.Connection, keep_days: int, archive_dir: Path | None = None, *, dry_run: bool = False
) -> list[Dropped]:
    """Drop (after archiving, when asked) every partition that ended more than `keep_days` days ago."""
    cutoff = datetime.now(UTC) - timedelta(days=keep_days)
    victims = await expired(conn, cutoff)
    if dry_run or not victims:
        return victims
    await conn.execute(_sql("no_statement_timeout"))
    for victim in victims:
        if archive_dir is not None:
            victim.archive, victim.rows = await _archive(conn, victim.partition, archive_dir)
        await conn.execute(_sql("drop_partition"), victim.partition)
        log.info(
            "retention: dropped %s (%s to %s)%s",
            victim.partition,
            victim.range_start.date(),
            victim.range_end.date(),
            f", archived {victim.rows} rows to {victim.archive}" if victim.archive else "",
        )
    return victims


async def get_policy(conn: asyncpg.Connection) -> dict[str, Any] | None:
    """The stored policy, or None."""
    row = await conn.fetchrow(_sql("get_policy"))
    return dict(row) if row else None


async def set_policy(conn: asyncpg.Connection, keep_days: int, archive_dir: Path | None) -> None:
    """Store the policy the receivers apply daily."""
    await conn.execute(_sql("set_policy"), keep_days, str(archive_dir) if archive_dir else None)


async def clear_policy(conn: asyncpg.Connection) -> None:
    """Remove the policy: nothing is dropped any more."""
    await conn.execute(_sql("clear_policy"))


async def apply_policy_if_due(conn: asyncpg.Connection) -> list[Dropped] | None:
    """Apply the stored policy if it was not applied in the last day; None when there is nothing to do."""
    if not await conn.fetchval(_sql("try_lock")):
        return None  # another receiver is applying it right now
    try:
        policy = await get_policy(conn)
        if policy is None:
            return None
        last = policy["last_applied_at"]
        if last is not None and datetime.now(UTC) - last < APPLY_EVERY:
            return None
        archive = Path(policy["archive_dir"]) if policy["archive_dir"] else None
        dropped = await apply(conn, policy["keep_days"], archive)
        await conn.execute(_sql("policy_applied"))
        return dropped
    finally:
        await conn.fetchval(_sql("unlock"))


async def run_daily(pool: asyncpg.Pool, check_every: float = 3600.0) -> None:
    """The receiver's background task: check the policy every `check_every` seconds, apply it once a day."""
    while True:
        try:
            async with pool.acquire(timeout=30) as conn:
                await apply_policy_if_due(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the loop alive: the next check tries again
            log.warning("retention: could not apply the policy: %s", exc)
        await asyncio.sleep(check_every)
