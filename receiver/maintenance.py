"""The receiver's background work, started and stopped by the application's lifespan (`running`): next months'
partitions made ahead of need once a day, the stored retention policy checked every GLIA_RETENTION_CHECK_SECONDS
(applied at most once a day, by one receiver at a time: retention.py), and every GLIA_LOST_SWEEP_SECONDS the sweep
that marks lost the runs whose heartbeats stopped more than GLIA_LOST_AFTER_SECONDS ago (`sweep_lost`, one receiver
at a time under an advisory lock; its SQL is `sql/maintenance.sql`).

No loop ever stops on a failure: partitions are also made on demand, and the next check tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from . import retention, sqlfiles
from .database import Database
from .store import Store

log = logging.getLogger("glia.maintenance")

PARTITIONS_EVERY = 24 * 3600.0
LOST_AFTER_SECONDS = 300.0  # the settings' defaults (GLIA_LOST_AFTER_SECONDS, GLIA_LOST_SWEEP_SECONDS)
LOST_SWEEP_SECONDS = 30.0


def _sql(name: str) -> str:
    return sqlfiles.load("maintenance.sql")[name]


async def keep_partitions_ahead(store: Store, every: float = PARTITIONS_EVERY) -> None:
    """Make this month's and the next months' partitions every `every` seconds (start-up made them first)."""
    while True:
        await asyncio.sleep(every)
        try:
            await store.ensure_partitions_ahead()
        except Exception as exc:  # keep the loop alive; partitions are also made on demand
            log.warning("could not create partitions ahead: %s", exc)


async def apply_retention(db: Database, check_every: float) -> None:
    """Check the stored retention policy every `check_every` seconds; it is applied once a day."""
    while True:
        try:
            async with db.connection() as conn:
                await retention.apply_policy_if_due(conn)
        except Exception as exc:  # keep the loop alive: the next check tries again
            log.warning("retention: could not apply the policy: %s", exc)
        await asyncio.sleep(check_every)


async def sweep_lost(db: Database, lost_after_seconds: float) -> list[tuple[str, str]] | None:
    """Mark lost the runs without an end whose last heartbeat is older than `lost_after_seconds`; returns their
    (trace id, run id), or None when another receiver holds the sweep's lock (it is sweeping now)."""
    async with db.connection() as conn, conn.transaction():
        if not await conn.fetchval(_sql("try_sweep_lock")):
            return None
        rows = await conn.fetch(_sql("mark_lost"), lost_after_seconds)
    lost = [(r["trace_id"], r["span_id"]) for r in rows]
    if lost:
        log.info("%d runs lost: no heartbeat for %.0f s (%s)", len(lost), lost_after_seconds, lost[0][1])
    return lost


async def keep_sweeping_lost(db: Database, lost_after_seconds: float, every: float) -> None:
    """Sweep for lost runs every `every` seconds."""
    while True:
        await asyncio.sleep(every)
        try:
            await sweep_lost(db, lost_after_seconds)
        except Exception as exc:  # keep the loop alive: the next sweep tries again
            log.warning("could not sweep for lost runs: %s", exc)


@contextlib.asynccontextmanager
async def running(
    db: Database,
    store: Store,
    retention_check_seconds: float,
    lost_after_seconds: float = LOST_AFTER_SECONDS,
    lost_sweep_seconds: float = LOST_SWEEP_SECONDS,
) -> AsyncIterator[None]:
    """The loops, for the life of the block; cancelled and awaited when it ends."""
    tasks = [
        asyncio.create_task(keep_partitions_ahead(store), name="glia-partitions-ahead"),
        asyncio.create_task(apply_retention(db, retention_check_seconds), name="glia-retention"),
        asyncio.create_task(keep_sweeping_lost(db, lost_after_seconds, lost_sweep_seconds), name="glia-lost-sweep"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
