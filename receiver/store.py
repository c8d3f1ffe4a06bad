"""Rows -> PostgreSQL: COPY into a staging table, then an idempotent upsert, in one transaction.

Two ways in. A large request (`write_spans`, `write_metrics`) is written alone, chunk by chunk, in its own
transaction. Small requests (`submit_spans`, `submit_metrics`: what one job's export sends, a span or a few) share
transactions: each waits in a queue, and a writer takes whatever has queued up (up to `max_rows` rows) into one
COPY, one upsert and one commit, as soon as a writer is free (group commit: no timer, so a lone request waits for
nothing but its own commit). At most `writers` such transactions run at once. Each request is answered only after
the commit that holds its rows, with its own result.

Rows that are all new, which is what nearly every batch is, skip the staging table: one COPY straight into the
table, as fast as a plain COPY (about a fifth less of PostgreSQL's CPU than staging + upsert, docs/benchmarks.md).
A key already stored (a resent batch, a live run's final span) makes that COPY fail whole with unique_violation;
the rows then take the staging + upsert path, and the table's next writes go that way too, for 2, 4, ... up to
`_DIRECT_BACKOFF_MAX` writes, so that a stream of resends or live runs pays for a failed COPY only now and then.
The two ways store the same rows.

A failure that is the database's (away, busy, not at the expected schema: `database.is_transient`) is raised and
answered 503. Any other failure of a chunk (a row PostgreSQL refuses, a value the driver cannot encode) is isolated
by bisection under savepoints: the chunk is split in parts, the parts that fail are split again, and the rows that
fail alone are rejected with the error while the rest is stored. One bad row among n costs O(log n) statements, not
n. A shared transaction that fails so is rolled back and written again request by request, each under its own
savepoint and isolated as above: a bad row in one request never costs another request its rows. The SQL is
`sql/store.sql`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import sqlfiles
from .database import Database, describe, is_transient, refused_by_server
from .decode import MAX_MESSAGES
from .errors import Unavailable
from .flatten import METRIC_COLUMNS, SPAN_COLUMNS, in_key_order
from .flatten_logs import LOG_COLUMNS

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("glia.store")

_NO_PARTITION = "no partition of relation"
_UNIQUE_VIOLATION = "23505"
# A shared transaction of up to this many rows is one statement (the rows as an array parameter: one round trip);
# past it, COPY into the staging table and an upsert cost less than the array (measured: docs/benchmarks.md).
_ONE_STATEMENT_ROWS = 256
# After a direct COPY meets a stored key, this table's next writes skip it for 2, 4, ... up to this many writes.
_DIRECT_BACKOFF_MAX = 256
_SPLIT = 4  # a refused chunk is cut into this many parts: fewer rows redone per level than halving, as few rounds
# How many rows the rejections of one request may name with PostgreSQL's message (the rest are counted).
_ROW_MESSAGES = MAX_MESSAGES


def _sql(name: str) -> str:
    return sqlfiles.load("store.sql")[name]


def _formatted(name: str, table: Table) -> str:
    return _format(name, table.name, tuple(table.columns))


@functools.cache
def _format(name: str, table: str, columns: tuple[str, ...]) -> str:
    # the table's name and flatten's column names: constants of the code, never anything a request brings
    return _sql(name).format(
        table=table, columns=", ".join(f'"{column}"' for column in columns), on_conflict=_on_conflict(table)
    )


def _on_conflict(table: str) -> str:
    """What a write does with a row already stored: spans merge by key as insert_spans does (a live run's records
    and its final span, docs/attributes.md), the other tables keep the first copy."""
    if table != "spans":
        return "ON CONFLICT DO NOTHING"
    return "ON CONFLICT" + _sql("insert_spans").split("ON CONFLICT", 1)[1].rstrip().rstrip(";")


@dataclass(frozen=True)
class Table:
    name: str
    stage: str
    columns: Sequence[str]
    insert: str
    clear: str
    describe: Callable[[tuple[Any, ...]], str]  # one row, for a rejection message

    @property
    def insert_rows(self) -> str:
        """The one-statement upsert of an array of rows (`$1`, of the per-connection row type)."""
        return _formatted("insert_rows", self)

    @property
    def create_row_type(self) -> str:
        """Makes the per-connection row type (a temp table with no rows) of `insert_rows`."""
        return _formatted("create_row_type", self)


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
            "metric_points",
            "metric_points_stage",
            METRIC_COLUMNS,
            _sql("insert_metric_points"),
            _sql("clear_metric_points_stage"),
            _describe_point,
        ),
        Table(
            "log_records",
            "log_records_stage",
            LOG_COLUMNS,
            _sql("insert_log_records"),
            _sql("clear_log_records_stage"),
            _describe_record,
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
    """Make a new pooled connection's staging tables and row types (the pool's `init`)."""
    await conn.execute(_sql("create_stage_tables"))
    for table in _tables():
        await conn.execute(table.create_row_type)


def _unobserved(table: str, seconds: float) -> None:
    pass


@dataclass
class _DirectCopy:
    """Whether one table's next write tries the direct COPY: after one that failed (a stored key, mostly), a run of
    writes doubling in length (up to _DIRECT_BACKOFF_MAX) does not; one that works ends the backoff."""

    skip: int = 0  # writes left before the next try
    backoff: int = 1

    def ready(self) -> bool:
        """Whether this write tries it (counting the write as one skipped when not)."""
        if self.skip:
            self.skip -= 1
            return False
        return True

    def failed(self) -> None:
        self.backoff = min(self.backoff * 2, _DIRECT_BACKOFF_MAX)
        self.skip = self.backoff

    def worked(self) -> None:
        self.backoff = 1


@dataclass
class _Submitted:
    """One small request's rows, waiting in a queue for the shared transaction that will hold them."""

    rows: Sequence[tuple[Any, ...]]
    done: asyncio.Future[WriteResult]
    result: WriteResult = field(default_factory=WriteResult)


class _Queue:
    """The small requests of one table waiting for a writer, and how many writers run."""

    def __init__(self) -> None:
        self.waiting: deque[_Submitted] = deque()
        self.writers = 0


class Store:
    """Writes span, metric and log rows through the receiver's Database (whose pool the application's lifespan
    owns).

    `on_commit(table, seconds)` is told how long each committed transaction took, from its start (/metrics).
    `writers` bounds the shared transactions of small requests running at once (per table), `max_rows` the rows one
    of them takes."""

    def __init__(
        self,
        db: Database,
        on_commit: Callable[[str, float], None] = _unobserved,
        *,
        writers: int = 2,
        max_rows: int = 4096,
    ) -> None:
        if writers < 1 or max_rows < 1:
            raise ValueError(f"writers ({writers}) and max_rows ({max_rows}) must be at least 1")
        self._db = db
        self._on_commit = on_commit
        self._months: set[tuple[str, datetime]] = set()
        self._spans, self._metrics, self._logs = _tables()
        self.writers = writers
        self.max_rows = max_rows
        self._queues: defaultdict[str, _Queue] = defaultdict(_Queue)  # by table
        self._direct: defaultdict[str, _DirectCopy] = defaultdict(_DirectCopy)  # by table
        self._tasks: set[asyncio.Task[None]] = set()

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

    async def submit_spans(self, rows: Sequence[tuple[Any, ...]], months: Iterable[datetime]) -> WriteResult:
        """Store the span rows of one small request in a transaction shared with other small requests; returns
        after the commit that holds them, with this request's own result.

        A request's `inserted` is exact unless some rows of its shared transaction were stored already (resent):
        then the transaction's new rows are shared out in arrival order, so their sum stays exact."""
        return await self._submit(self._spans, rows, months)

    async def submit_metrics(self, rows: Sequence[tuple[Any, ...]], months: Iterable[datetime]) -> WriteResult:
        """Store the metric point rows of one small request, as submit_spans does."""
        return await self._submit(self._metrics, rows, months)

    async def submit_logs(self, rows: Sequence[tuple[Any, ...]], months: Iterable[datetime]) -> WriteResult:
        """Store the log record rows of one small request, as submit_spans does."""
        return await self._submit(self._logs, rows, months)

    async def ensure_partitions_ahead(self, months: int = 2) -> None:
        """Create this month's and the next months' partitions (run at start-up and daily)."""
        async with self._db.connection() as conn:
            await conn.execute(_sql("ensure_partitions_ahead"), months)

    # --- internals -----------------------------------------------------------------------------------------

    async def _submit(self, table: Table, rows: Sequence[tuple[Any, ...]], months: Iterable[datetime]) -> WriteResult:
        if not rows:
            return WriteResult()
        # made before the request queues, as for a request written alone (a cached month costs nothing)
        if any((table.name, month) not in self._months for month in months):
            await self._ensure_partitions(table.name, set(months))
        queue = self._queues[table.name]
        item = _Submitted(rows, asyncio.get_running_loop().create_future())
        queue.waiting.append(item)
        if queue.writers < self.writers:
            queue.writers += 1
            task = asyncio.create_task(self._writer(table, queue))
            self._tasks.add(task)  # a task nothing refers to may be collected before it ends
            task.add_done_callback(self._tasks.discard)
        # shielded: a request whose client left is still written with its group (and its answer dropped)
        return await asyncio.shield(item.done)

    async def _writer(self, table: Table, queue: _Queue) -> None:
        """Write what has queued up, group by group, until nothing waits, on one pooled connection (given back when
        the queue is empty, or replaced after a failure)."""
        try:
            while queue.waiting:
                group: list[_Submitted] | None = self._take(queue)
                try:
                    async with self._db.connection() as conn:
                        while group:
                            await self._write_group(conn, table, group)
                            for item in group:
                                if not item.done.done():
                                    item.done.set_result(item.result)
                            group = self._take(queue) if queue.waiting else None
                except BaseException as exc:
                    # cancelled (the application stopping): the requests are answered 503, so their clients resend
                    told = exc if isinstance(exc, Exception) else Unavailable("the receiver is stopping; retry")
                    for item in group or ():
                        if not item.done.done():
                            item.done.set_exception(told)
                    if told is not exc:
                        raise
        finally:
            queue.writers -= 1

    def _take(self, queue: _Queue) -> list[_Submitted]:
        """The requests waiting first, up to max_rows rows (at least one request)."""
        group = [queue.waiting.popleft()]
        rows = len(group[0].rows)
        while queue.waiting and rows + len(queue.waiting[0].rows) <= self.max_rows:
            item = queue.waiting.popleft()
            group.append(item)
            rows += len(item.rows)
        return group

    async def _write_group(self, conn: asyncpg.Connection, table: Table, group: list[_Submitted]) -> None:
        """The whole group in one transaction: up to _ONE_STATEMENT_ROWS rows as one upsert statement (an array of
        rows, one round trip), more by COPY into the staging table and an upsert. If a row is refused, the group
        again, request by request, each isolated under its own savepoint."""
        records = [row for item in group for row in item.rows] if len(group) > 1 else group[0].rows
        if table.name == "spans" and len(group) > 1:
            records = in_key_order(list(records))  # one row per key in one statement, the final one winning
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            if len(records) <= _ONE_STATEMENT_ROWS:
                status: str = await conn.execute(table.insert_rows, records)
            elif self._direct[table.name].ready() and await self._copy_direct(conn, table, records):  # its own tx
                status = f"COPY {len(records)}"
            else:
                async with conn.transaction():
                    await conn.copy_records_to_table(table.stage, records=records, columns=table.columns)
                    status = await conn.execute(table.insert)
        except Exception as exc:
            if is_transient(exc):
                raise
            error = exc
        if error is None:
            self._on_commit(table.name, time.perf_counter() - started)
            _share_out(group, int(status.rsplit(" ", 1)[-1]))
            return
        log.warning(
            "%s: a shared transaction of %d requests (%d rows) was refused (%s); writing them one by one",
            table.name,
            len(group),
            len(records),
            describe(error),
        )
        started = time.perf_counter()
        async with conn.transaction():
            for item in group:
                await self._write_chunk(conn, table, item.rows, item.result, last=False)
        self._on_commit(table.name, time.perf_counter() - started)

    async def _copy_direct(self, conn: asyncpg.Connection, table: Table, records: Sequence[tuple[Any, ...]]) -> bool:
        """COPY `records` straight into the table (the caller asked the table's _DirectCopy first): True when they
        were all new and are stored (inside the caller's transaction or savepoint, if any); False when they must
        take the staging path, which merges stored keys, and meets and isolates any other refusal as before. The
        database away or busy is raised."""
        direct = self._direct[table.name]
        try:
            await conn.copy_records_to_table(table.name, records=records, columns=table.columns)
        except Exception as exc:
            if is_transient(exc):
                raise
            if not (refused_by_server(exc) and getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION):
                log.debug("%s: the direct COPY of %d rows was refused (%s)", table.name, len(records), describe(exc))
            direct.failed()  # a refused row too: the staging path isolates it, and need not redo this first
            return False
        direct.worked()
        return True

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
        self,
        conn: asyncpg.Connection,
        table: Table,
        records: Sequence[tuple[Any, ...]],
        result: WriteResult,
        *,
        last: bool,
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
            "%s: a chunk of %d rows was refused (%s); isolating the rows at fault",
            table.name,
            len(records),
            describe(error),
        )
        await self._isolate(conn, table, records, result, error)  # each attempt clears the staging table

    async def _attempt(
        self,
        conn: asyncpg.Connection,
        table: Table,
        records: Sequence[tuple[Any, ...]],
        result: WriteResult,
        *,
        clear: bool = True,
    ) -> BaseException | None:
        """Store `records` under a savepoint, by the direct COPY when the table's backoff allows and they are all
        new, else by COPY into the staging table + upsert: None when they are stored, else what refused them (a
        failure that is the database's, not the rows', is raised)."""
        if self._direct[table.name].ready():
            savepoint = conn.transaction()  # rolled back if the direct COPY is refused
            await savepoint.start()
            try:
                stored = await self._copy_direct(conn, table, records)
            except BaseException:
                with contextlib.suppress(Exception):  # the connection may be gone: what raised says why
                    await savepoint.rollback()
                raise
            if stored:
                await savepoint.commit()
                result.inserted += len(records)
                return None
            await savepoint.rollback()
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


def _share_out(group: list[_Submitted], inserted: int) -> None:
    """The new rows of a shared transaction, counted against its requests in arrival order."""
    for item in group:
        item.result.inserted = min(len(item.rows), inserted)
        inserted -= item.result.inserted


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
