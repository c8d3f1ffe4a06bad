"""Rows -> PostgreSQL: one transaction per request, COPY into a staging table, then an idempotent upsert.

Driver errors are translated here and nowhere else (`connection`, which the query API and the key cache use too):
anything that says the database is away or busy becomes `Unavailable` (503 + Retry-After, the client retries); a
row PostgreSQL refuses for its content is retried alone and, if it still fails, rejected with PostgreSQL's message
while the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from . import queries
from .errors import SchemaError, Unavailable
from .flatten import METRIC_COLUMNS, SPAN_COLUMNS, Rows

log = logging.getLogger("glia.store")

# SQLSTATE classes that mean "try again later": connection exception, insufficient resources, operator
# intervention (shutdown, cancel), transaction rollback (serialization failure, deadlock).
_RETRYABLE_CLASSES = ("08", "53", "57", "40")
# SQLSTATE classes that mean "this row's content": data exception, integrity constraint, program limit
# (an index row too large).
_ROW_CLASSES = ("22", "23", "54")
_NO_PARTITION = "no partition of relation"


@contextlib.asynccontextmanager
async def connection(
    pool: asyncpg.Pool, acquire_timeout: float, *, passthrough: tuple[str, ...] = ()
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, with every driver error raised inside translated to the receiver's own: the one place
    that decides what "the database is away or busy" (`Unavailable`, 503 + Retry-After) means.

    Errors whose SQLSTATE class is in `passthrough` are re-raised as they are for the caller's handler: the query
    API passes "22" (data exceptions, including a query argument asyncpg cannot encode), which it answers with 422.
    """
    try:
        async with pool.acquire(timeout=acquire_timeout) as conn:
            yield conn
    except TimeoutError:
        raise Unavailable("database did not answer in time: every pooled connection is busy") from None
    except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.CannotConnectNowError) as exc:
        # InternalClientError: the server went away in the middle of a transaction
        raise Unavailable(f"database is unreachable: {_describe(exc)}") from None
    except asyncpg.PostgresError as exc:
        sqlstate = exc.sqlstate or ""
        if passthrough and sqlstate.startswith(passthrough):
            raise
        # Row-content errors are handled where the rows are written; anything else reaching here (shutdown,
        # out of resources, a schema being migrated) is worth retrying: a 5xx other than 503 would make the
        # Collector drop the batch.
        if not sqlstate.startswith(_RETRYABLE_CLASSES):
            log.error("unexpected database error, answering 503 so the client retries: %s", _describe(exc))
        raise Unavailable(f"database is unavailable: {_describe(exc)}") from None


@dataclass(frozen=True)
class Table:
    name: str
    stage: str
    columns: Sequence[str]
    insert: str


def _tables() -> tuple[Table, Table]:
    q = queries.load()
    return (
        Table("spans", "spans_stage", SPAN_COLUMNS, q["insert_spans"]),
        Table("metric_points", "metric_points_stage", METRIC_COLUMNS, q["insert_metric_points"]),
    )


@dataclass
class WriteResult:
    inserted: int = 0  # new rows (a resent row is not counted again)
    rejected: int = 0
    errors: list[str] | None = None


async def _init_connection(conn: asyncpg.Connection) -> None:
    # with no schema yet there is nothing to stage into: check_schema says so and the receiver does not start
    with contextlib.suppress(asyncpg.UndefinedTableError):
        await conn.execute(queries.load()["create_stage_tables"])


async def create_pool(dsn: str, *, min_size: int, max_size: int, statement_timeout_ms: int) -> asyncpg.Pool:
    """A bounded pool whose connections each have their staging tables."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"statement_timeout": str(statement_timeout_ms), "application_name": "glia-receiver"},
        command_timeout=max(statement_timeout_ms / 1000 + 5, 10),
    )


class Store:
    """Writes span and metric rows; the application's lifespan owns the pool and passes it in."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._months: set[tuple[str, datetime]] = set()
        self._spans, self._metrics = _tables()

    async def write_spans(self, rows: Rows) -> WriteResult:
        """Store span rows; returns how many were new and which were rejected by PostgreSQL."""
        return await self._write(self._spans, rows)

    async def write_metrics(self, rows: Rows) -> WriteResult:
        """Store metric point rows."""
        return await self._write(self._metrics, rows)

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        async with self._connection() as conn:
            try:
                value: str | None = await conn.fetchval(queries.load()["schema_revision"])
            except asyncpg.UndefinedTableError:
                return None
            return value

    async def ensure_partitions_ahead(self, months: int = 2) -> None:
        """Create this month's and the next months' partitions (run at start-up and daily)."""
        async with self._connection() as conn:
            await conn.execute(queries.load()["ensure_partitions_ahead"], months)

    # --- internals -----------------------------------------------------------------------------------------

    def _connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return connection(self._pool, self._acquire_timeout)

    async def _write(self, table: Table, rows: Rows) -> WriteResult:
        if not rows.rows:
            return WriteResult()
        for attempt in (1, 2):
            await self._ensure_partitions(table.name, rows.months)
            async with self._connection() as conn:
                try:
                    return WriteResult(inserted=await self._copy_upsert(conn, table, rows.rows))
                except asyncpg.PostgresError as exc:
                    if _NO_PARTITION in str(exc) and attempt == 1:
                        # a partition was dropped (retention) since we cached it: make it again, once
                        self._months.clear()
                        continue
                    if not (exc.sqlstate or "").startswith(_ROW_CLASSES):
                        raise
                    log.warning("batch refused by PostgreSQL (%s); storing its %d rows one by one", exc, len(rows.rows))
                return await self._row_by_row(conn, table, rows.rows)
        raise AssertionError("unreachable")

    async def _copy_upsert(self, conn: asyncpg.Connection, table: Table, records: list[tuple[Any, ...]]) -> int:
        async with conn.transaction():
            await conn.copy_records_to_table(table.stage, records=records, columns=table.columns)
            status: str = await conn.execute(table.insert)
        return int(status.rsplit(" ", 1)[-1])

    async def _row_by_row(self, conn: asyncpg.Connection, table: Table, records: list[tuple[Any, ...]]) -> WriteResult:
        result = WriteResult(errors=[])
        truncate = queries.load()["truncate_stage_tables"]
        async with conn.transaction():
            for record in records:
                try:
                    async with conn.transaction():  # a savepoint per row
                        await conn.copy_records_to_table(table.stage, records=[record], columns=table.columns)
                        status: str = await conn.execute(table.insert)
                        await conn.execute(truncate)
                    result.inserted += int(status.rsplit(" ", 1)[-1])
                except asyncpg.PostgresError as exc:
                    if not (exc.sqlstate or "").startswith(_ROW_CLASSES):
                        raise
                    result.rejected += 1
                    assert result.errors is not None
                    result.errors.append(f"{table.name} row {record[0]}/{record[1]}: PostgreSQL refused it: {exc}")
        return result

    async def _ensure_partitions(self, table: str, months: set[datetime]) -> None:
        missing = [m for m in sorted(months) if (table, m) not in self._months]
        if not missing:
            return
        sql = queries.load()["ensure_partition"]
        async with self._connection() as conn:
            for month in missing:
                await conn.execute(sql, table, month)
                self._months.add((table, month))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_schema(store: Store, head: str) -> None:
    """Raise SchemaError unless the database's schema is at `head`."""
    current = await store.schema_revision()
    if current != head:
        shown = current or "empty (no glia schema)"
        raise SchemaError(
            f"database schema is at {shown}, this receiver needs {head}: run 'glia migrate' to bring it up to date"
        )


async def wait_for_database(dsn: str, timeout: float) -> None:  # noqa: ASYNC109
    """Connect once, retrying for up to `timeout` seconds; raise the last error after that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=min(5.0, max(timeout, 0.5)))
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, TimeoutError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.5)
        else:
            await conn.close()
            return
