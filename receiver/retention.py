"""Retention: drop whole monthly partitions that ended before a cut-off, of every partitioned table (spans,
metric_points and log_records: the schema's `glia_partitioned_tables()`).

A partition is dropped only when its whole range lies before the cut-off, so no row newer than the cut-off is ever
lost. Each partition is archived (when asked) and dropped in one transaction that first takes a SHARE lock on it, so
no row can arrive between the copy and the drop; the lock waits and the drop's lock on the parent table wait at most
`LOCK_TIMEOUT` (ingest queues behind a waiting lock), and a partition that cannot be locked in time is left for the
next run. The archive is gzip-compressed CSV with a header (`spans_2025_01.csv.gz`), written to a temporary file,
fsynced, and linked into place under a name that never replaces an earlier archive (a second archive of the same
month is `spans_2025_01.<UTC time>.csv.gz`). The policy (`glia retention --set-policy 90d`) lives in the database;
every receiver checks it hourly and applies it once a day (maintenance.py); an advisory lock lets one process at a
time apply it.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import sqlfiles
from .database import translated
from .errors import LockNotGranted, RetentionBusy

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("glia.retention")

_AGE = re.compile(r"^\s*(\d+)\s*(d|w|m|y)?\s*$")
_AGE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
MAX_DAYS = 100 * 365
APPLY_EVERY = timedelta(days=1)
LOCK_TIMEOUT = "5s"  # how long a partition's drop may wait for its locks (and so hold up ingest queued behind it)


def parse_age(text: str) -> int:
    """Days in an age such as `90d`, `12w`, `6m` (30 days each), `1y` or a bare number of days."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an age: use e.g. 90d, 12w, 6m or 1y")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > 6:  # checked before multiplying: a million-digit number would be slow to convert
        raise ValueError(f"{text!r}: the age must be at most {MAX_DAYS} days (100 years)")
    days = int(digits) * _AGE_DAYS[match.group(2) or "d"]
    if days <= 0:
        raise ValueError(f"{text!r}: the age must be at least one day")
    if days > MAX_DAYS:
        raise ValueError(f"{text!r}: the age must be at most {MAX_DAYS} days (100 years)")
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
    return sqlfiles.load("retention.sql")[name]


async def expired(conn: asyncpg.Connection, cutoff: datetime) -> list[Dropped]:
    """The partitions whose whole range ends at or before `cutoff`."""
    return [Dropped(**dict(r)) for r in await conn.fetch(_sql("expired_partitions"), cutoff)]


# --- the archive file (blocking: run in a worker thread) ---------------------------------------------------------


class _Archive:
    """A gzip file being written under a temporary name in the archive directory."""

    def __init__(self, directory: Path, partition: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{partition}.", suffix=".csv.gz.partial")
        self.directory = directory
        self.partition = partition
        self.path = Path(name)
        self.raw: IO[bytes] = os.fdopen(fd, "wb")
        self.gz = gzip.GzipFile(filename=f"{partition}.csv", mode="wb", fileobj=self.raw)

    def finish(self) -> Path:
        """Flush and fsync the file, link it under a name no earlier archive has, fsync the directory."""
        self.gz.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        target = self.directory / f"{self.partition}.csv.gz"
        while True:
            try:
                os.link(self.path, target)  # unlike a rename, fails rather than replace an earlier archive
                break
            except FileExistsError:
                target = self.directory / f"{self.partition}.{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}.csv.gz"
        self.path.unlink()
        _fsync_directory(self.directory)
        return target

    def discard(self) -> None:
        """Remove the temporary file (after a failure)."""
        self.gz.close()
        self.raw.close()
        self.path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_directory(path.parent)


# --- dropping -----------------------------------------------------------------------------------------------------


async def _archive_and_drop(conn: asyncpg.Connection, victim: Dropped, archive_dir: Path | None) -> None:
    """In one transaction: lock the partition against writes, copy it out (when asked), drop it."""
    archive: _Archive | None = None
    published: Path | None = None
    try:
        async with translated(), conn.transaction():
            await conn.execute(_sql("set_lock_timeout"), LOCK_TIMEOUT)
            # the name comes from the catalog (glia_partitions), quoted by PostgreSQL, never from input
            quoted = await conn.fetchval(_sql("quote_partition"), victim.partition)
            await conn.execute(_sql("lock_partition").format(partition=quoted))
            if archive_dir is not None:
                archive = await asyncio.to_thread(_Archive, archive_dir, victim.partition)
                gz = archive.gz

                async def write(chunk: bytes) -> None:
                    await asyncio.to_thread(gz.write, chunk)  # compressing is CPU work: off the event loop

                status = await conn.copy_from_table(victim.partition, output=write, format="csv", header=True)
                victim.rows = int(status.rsplit(" ", 1)[-1])
                published = await asyncio.to_thread(archive.finish)
                archive = None
            await conn.execute(_sql("drop_partition"), victim.partition)
    except LockNotGranted:
        # the transaction is rolled back, nothing was dropped: an archive made of it would be a duplicate next time
        if published is not None:
            await asyncio.to_thread(_remove, published)
        raise
    finally:
        if archive is not None:
            await asyncio.to_thread(archive.discard)
    victim.archive = published


async def apply(
    conn: asyncpg.Connection, keep_days: int, archive_dir: Path | None = None, *, dry_run: bool = False
) -> list[Dropped]:
    """Drop (after archiving, when asked) every partition that ended more than `keep_days` days ago; returns the
    partitions dropped. A partition that stays locked (by a long query) past the lock timeout is left for the next
    run, with a warning. Raises RetentionBusy when another process is applying retention."""
    cutoff = datetime.now(UTC) - timedelta(days=keep_days)
    if dry_run:
        return await expired(conn, cutoff)
    if not await conn.fetchval(_sql("try_lock")):
        raise RetentionBusy("another receiver or 'glia retention' is applying retention right now; try again later")
    try:
        return await _apply_locked(conn, cutoff, archive_dir)
    finally:
        await conn.fetchval(_sql("unlock"))


async def _apply_locked(conn: asyncpg.Connection, cutoff: datetime, archive_dir: Path | None) -> list[Dropped]:
    dropped = []
    for victim in await expired(conn, cutoff):
        try:
            await _archive_and_drop(conn, victim, archive_dir)
        except LockNotGranted:
            log.warning(
                "retention: %s is in use (its lock was not granted within the lock timeout); kept for the next run",
                victim.partition,
            )
            continue
        dropped.append(victim)
        log.info(
            "retention: dropped %s (%s to %s)%s",
            victim.partition,
            victim.range_start.date(),
            victim.range_end.date(),
            f", archived {victim.rows} rows to {victim.archive}" if victim.archive else "",
        )
    return dropped


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
        cutoff = datetime.now(UTC) - timedelta(days=policy["keep_days"])
        dropped = await _apply_locked(conn, cutoff, archive)
        await conn.execute(_sql("policy_applied"))
        return dropped
    finally:
        await conn.fetchval(_sql("unlock"))
