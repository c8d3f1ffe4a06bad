"""The receiver's background work, started and stopped by the application's lifespan (`running`): next months'
partitions made ahead of need once a day, and the stored retention policy checked every
GLIA_RETENTION_CHECK_SECONDS (applied at most once a day, by one receiver at a time: retention.py).

Neither loop ever stops on a failure: partitions are also made on demand, and the next check tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from . import retention
from .database import Database
from .store import Store

log = logging.getLogger("glia.maintenance")

PARTITIONS_EVERY = 24 * 3600.0


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


@contextlib.asynccontextmanager
async def running(db: Database, store: Store, retention_check_seconds: float) -> AsyncIterator[None]:
    """Both loops, for the life of the block; cancelled and awaited when it ends."""
    tasks = [
        asyncio.create_task(keep_partitions_ahead(store), name="glia-partitions-ahead"),
        asyncio.create_task(apply_retention(db, retention_check_seconds), name="glia-retention"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
