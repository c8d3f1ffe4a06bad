"""Rows -> PostgreSQL: one transaction per request, chunk by chunk COPY into a staging table, then an idempotent
upsert.

Driver errors are translated here and nowhere else (`connection`, which the query API and the key cache use too):
anything that says the database is away or busy becomes `Unavailable` (503 + Retry-After, the client retries). Any
other failure of a chunk (a row PostgreSQL refuses, a value the driver cannot encode) is isolated by bisection under
savepoints: the chunk is split in parts, the parts that fail are split again, and the rows that fail alone are
rejected with the error while the rest is stored. One bad row among n costs O(log n) statements, not n.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from . import queries
from .decode import MAX_MESSAGES
from .errors import SchemaError, Unavailable
from .flatten import METRIC_COLUMNS, SPAN_COLUMNS

log = logging.getLogger("glia.store")

# SQLSTATE classes that mean "try again later": connection exception, insufficient resources, operator
# intervention (shutdown, cancel), transaction rollback (serialization failure, deadlock).
_RETRYABLE_CLASSES = ("08", "53", "57", "40")
# SQLSTATE classes that are about the database, not the rows being written: besides the retryable ones, system
# error, internal error, object in use or lock not available, invalid transaction state, and a schema that is not
# what this receiver expects (undefined table or column, privileges: a migration under way). A write failing with one
# of these is answered 503; any other failure is the rows' (data exception, constraint, program limit such as an
# index row too large, a trigger raising) and is isolated to them.
_DATABASE_CLASSES = (*_RETRYABLE_CLASSES, "58", "XX", "55", "25", "42", "3D", "3F", "0A", "28", "F0")
_NO_PARTITION = "no partition of relation"
_SPLIT = 4  # a refused chunk is cut into this many parts: fewer rows redone per level than halving, as few rounds
# How many rows the rejections of one request may name with PostgreSQL's message (the rest are counted).
_ROW_MESSAGES = MAX_MESSAGES


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
    clear: str
    describe: Callable[[tuple[Any, ...]], str]  # one row, for a rejection message


def _describe_span(row: tuple[Any, ...]) -> str:
    return f"span {row[0]}/{row[1]} (name {str(row[5])[:60]!r})"


def _describe_point(row: tuple[Any, ...]) -> str:
    return f"metric {str(row[4])[:60]!r} point at {row[2]}"


def _tables() -> tuple[Table, Table]:
    q = queries.load()
    return (
        Table("spans", "spans_stage", SPAN_COLUMNS, q["insert_spans"], q["clear_spans_stage"], _describe_span),
        Table(
            "metric_points", "metric_points_stage", METRIC_COLUMNS, q["insert_metric_points"],
            q["clear_metric_points_stage"], _describe_point,
        ),
    )


@dataclass
class WriteResult:
    inserted: int = 0  # new rows (a resent row is not counted again)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)  # the first rejections' messages

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < _ROW_MESSAGES:
            self.errors.append(message)


# What write_spans and write_metrics take: the rows of one request, in chunks, produced as they are written.
Chunks = Iterable[Sequence[tuple[Any, ...]]] | AsyncIterable[Sequence[tuple[Any, ...]]]


def is_transient(exc: BaseException) -> bool:
    """Whether a failed write says the database is away or busy (retry later) rather than a row is bad."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(_DATABASE_CLASSES)
    if isinstance(exc, asyncpg.DataError):  # an argument the driver cannot encode (an InterfaceError too)
        return False
    return isinstance(
        exc,
        OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError | asyncpg.CannotConnectNowError,
    )


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

    async def write_spans(self, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        """Store span rows, chunk by chunk in one transaction; returns how many were new and which were rejected.

        `months` are the partition months the rows need (flatten.span_months): they are made before the
        transaction, since making one inside it would lock the table for the rest of the request."""
        return await self._write(self._spans, chunks, months)

    async def write_metrics(self, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        """Store metric point rows, as write_spans does."""
        return await self._write(self._metrics, chunks, months)

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

    async def _write(self, table: Table, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        result = WriteResult()
        await self._ensure_partitions(table.name, set(months))
        async with self._connection() as conn, conn.transaction():
            # one chunk ahead, so the last one can leave clearing the staging table to the commit
            pending: Sequence[tuple[Any, ...]] | None = None
            async for records in _each(chunks):
                if pending:
                    await self._write_chunk(conn, table, pending, result, last=False)
                pending = records
            if pending:
                await self._write_chunk(conn, table, pending, result, last=True)
        return result

    async def _write_chunk(
        self, conn: asyncpg.Connection, table: Table, records: Sequence[tuple[Any, ...]], result: WriteResult,
        *, last: bool,
    ) -> None:
        error = await self._attempt(conn, table, records, result, clear=not last)
        if error is not None and _NO_PARTITION in str(error):
            # a partition was dropped (retention) since we cached it: make it again here, once. Inside the
            # transaction this holds the table's lock to the commit, but it happens once a retention run at most.
            self._months = {m for m in self._months if m[0] != table.name}
            for month in sorted({_month(record, table) for record in records}):
                await conn.execute(queries.load()["ensure_partition"], table.name, month)
            error = await self._attempt(conn, table, records, result, clear=not last)
        if error is None:
            return
        log.warning(
            "%s: a chunk of %d rows was refused (%s); isolating the rows at fault", table.name, len(records),
            _describe(error),
        )
        await self._isolate(conn, table, records, result, error)  # each attempt clears the staging table

    async def _attempt(
        self, conn: asyncpg.Connection, table: Table, records: Sequence[tuple[Any, ...]], result: WriteResult,
        *, clear: bool = True,
    ) -> BaseException | None:
        """COPY + upsert `records` under a savepoint: None when they are stored, else what refused them (a failure
        that is the database's, not the rows', is raised)."""
        try:
            async with conn.transaction():  # a savepoint: a refused attempt costs only itself
                await conn.copy_records_to_table(table.stage, records=records, columns=table.columns)
                status: str = await conn.execute(table.insert)
                if clear:
                    await conn.execute(table.clear)
        except Exception as exc:
            if is_transient(exc):
                raise
            if not isinstance(exc, asyncpg.PostgresError):
                # flatten checks every value against its column: one reaching the driver unfit is a bug there
                log.error("%s: the driver could not encode a row: %s", table.name, _describe(exc))
            return exc
        result.inserted += int(status.rsplit(" ", 1)[-1])
        return None

    async def _isolate(
        self,
        conn: asyncpg.Connection,
        table: Table,
        records: Sequence[tuple[Any, ...]],
        result: WriteResult,
        error: BaseException,
    ) -> None:
        """`records` were refused together: find the rows refused alone, by splitting and trying again."""
        if len(records) == 1:
            result.reject(f"{table.describe(records[0])}: could not be stored: {_describe(error)}")
            return
        step = -(-len(records) // _SPLIT)
        for i in range(0, len(records), step):
            part = records[i : i + step]
            part_error = await self._attempt(conn, table, part, result)
            if part_error is not None:
                await self._isolate(conn, table, part, result, part_error)

    async def _ensure_partitions(self, table: str, months: set[datetime]) -> None:
        missing = [m for m in sorted(months) if (table, m) not in self._months]
        if not missing:
            return
        sql = queries.load()["ensure_partition"]
        async with self._connection() as conn:
            for month in missing:
                await conn.execute(sql, table, month)
                self._months.add((table, month))


async def _each(chunks: Chunks) -> AsyncIterator[Sequence[tuple[Any, ...]]]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def _month(record: tuple[Any, ...], table: Table) -> datetime:
    # the partition key is the third column of a span row (start_time), the second of a point row (time)
    value: datetime = record[2] if table.name == "spans" else record[1]
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


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
