"""Rows -> PostgreSQL: one transaction per request, chunk by chunk COPY into a staging table, then an idempotent
upsert.

A failure that is the database's (away, busy, not at the expected schema: `database.is_transient`) is raised and
answered 503. Any other failure of a chunk (a row PostgreSQL refuses, a value the driver cannot encode) is isolated
by bisection under savepoints: the chunk is split in parts, the parts that fail are split again, and the rows that
fail alone are rejected with the error while the rest is stored. One bad row among n costs O(log n) statements, not
n. The SQL is `sql/store.sql`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import sqlfiles
from .database import Database, describe, is_transient, refused_by_server
from .decode import MAX_MESSAGES
from .flatten import METRIC_COLUMNS, SPAN_COLUMNS
from .flatten_logs import LOG_COLUMNS

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("glia.store")

_NO_PARTITION = "no partition of relation"
_SPLIT = 4  # a refused chunk is cut into this many parts: fewer rows redone per level than halving, as few rounds
# How many rows the rejections of one request may name with PostgreSQL's message (the rest are counted).
_ROW_MESSAGES = MAX_MESSAGES


def _sql(name: str) -> str:
    return sqlfiles.load("store.sql")[name]


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


def _describe_record(row: tuple[Any, ...]) -> str:
    return f"log record at {row[1]} (body {str(row[6])[:60]!r})"


def _tables() -> tuple[Table, Table, Table]:
    return (
        Table("spans", "spans_stage", SPAN_COLUMNS, _sql("insert_spans"), _sql("clear_spans_stage"), _describe_span),
        Table(
            "metric_points", "metric_points_stage", METRIC_COLUMNS, _sql("insert_metric_points"),
            _sql("clear_metric_points_stage"), _describe_point,
        ),
        Table(
            "log_records", "log_records_stage", LOG_COLUMNS, _sql("insert_log_records"),
            _sql("clear_log_records_stage"), _describe_record,
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


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """Make a new pooled connection's staging tables (the pool's `init`)."""
    await conn.execute(_sql("create_stage_tables"))


def _unobserved(table: str, seconds: float) -> None:
    pass


class Store:
    """Writes span and metric rows through the receiver's Database (whose pool the application's lifespan owns).

    `on_commit(table, seconds)` is told how long each committed transaction took, from its start (/metrics)."""

    def __init__(self, db: Database, on_commit: Callable[[str, float], None] = _unobserved) -> None:
        self._db = db
        self._on_commit = on_commit
        self._months: set[tuple[str, datetime]] = set()
        self._spans, self._metrics, self._logs = _tables()

    async def write_spans(self, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        """Store span rows, chunk by chunk in one transaction; returns how many were new and which were rejected.

        `months` are the partition months the rows need (flatten.span_months): they are made before the
        transaction, since making one inside it would lock the table for the rest of the request."""
        return await self._write(self._spans, chunks, months)

    async def write_metrics(self, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        """Store metric point rows, as write_spans does."""
        return await self._write(self._metrics, chunks, months)

    async def write_logs(self, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        """Store log record rows, as write_spans does."""
        return await self._write(self._logs, chunks, months)

    async def ensure_partitions_ahead(self, months: int = 2) -> None:
        """Create this month's and the next months' partitions (run at start-up and daily)."""
        async with self._db.connection() as conn:
            await conn.execute(_sql("ensure_partitions_ahead"), months)

    # --- internals -----------------------------------------------------------------------------------------

    async def _write(self, table: Table, chunks: Chunks, months: Iterable[datetime]) -> WriteResult:
        result = WriteResult()
        await self._ensure_partitions(table.name, set(months))
        async with self._db.connection() as conn:
            started = time.perf_counter()
            async with conn.transaction():
                # one chunk ahead, so the last one can leave clearing the staging table to the commit
                pending: Sequence[tuple[Any, ...]] | None = None
                async for records in _each(chunks):
                    if pending:
                        await self._write_chunk(conn, table, pending, result, last=False)
                    pending = records
                if pending:
                    await self._write_chunk(conn, table, pending, result, last=True)
            self._on_commit(table.name, time.perf_counter() - started)
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
                await conn.execute(_sql("ensure_partition"), table.name, month)
            error = await self._attempt(conn, table, records, result, clear=not last)
        if error is None:
            return
        log.warning(
            "%s: a chunk of %d rows was refused (%s); isolating the rows at fault", table.name, len(records),
            describe(error),
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
            if not refused_by_server(exc):
                # flatten checks every value against its column: one reaching the driver unfit is a bug there
                log.error("%s: the driver could not encode a row: %s", table.name, describe(exc))
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
            result.reject(f"{table.describe(records[0])}: could not be stored: {describe(error)}")
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
        sql = _sql("ensure_partition")
        async with self._db.connection() as conn:
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
    # the partition key is the third column of a span row (start_time), the second of a point or log row (time)
    value: datetime = record[2] if table.name == "spans" else record[1]
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
