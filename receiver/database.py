"""The door to PostgreSQL: the receiver's pool, the single connection a command opens, and the one place where driver
errors become the receiver's own (`errors.py`).

What "the database is away or busy" means is decided here: such errors become `Unavailable` (503 + Retry-After, the
client retries; a 5xx other than 503 would make the Collector drop the batch). A read's statement timeout is told as
such, and a value PostgreSQL refuses in a read (SQLSTATE class 22) is the query's fault (`InvalidQuery`, 422). Rows
that PostgreSQL refuses while being written are not translated: `store.py` isolates them, asking `is_transient`
which failures are the database's rather than the rows'.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from . import sqlfiles
from .errors import GliaError, InvalidQuery, LockNotGranted, SchemaError, Unavailable

log = logging.getLogger("glia.database")

# SQLSTATE classes that mean "try again later": connection exception, insufficient resources, operator
# intervention (shutdown, cancel), transaction rollback (serialization failure, deadlock).
_RETRYABLE_CLASSES = ("08", "53", "57", "40")
# SQLSTATE classes that are about the database, not the rows being written: besides the retryable ones, system
# error, internal error, object in use or lock not available, invalid transaction state, and a schema that is not
# what this receiver expects (undefined table or column, privileges: a migration under way). A write failing with one
# of these is answered 503; any other failure is the rows' (data exception, constraint, program limit such as an
# index row too large, a trigger raising) and is isolated to them.
_DATABASE_CLASSES = (*_RETRYABLE_CLASSES, "58", "XX", "55", "25", "42", "3D", "3F", "0A", "28", "F0")
_DATA_EXCEPTION = "22"  # a value PostgreSQL cannot take: in a read, the query's fault
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"  # statement_timeout, or a cancel request
# Errors of the connection itself, raised by the driver. InternalClientError: the server went away in the middle
# of a transaction.
_DRIVER_UNREACHABLE = (asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.CannotConnectNowError)
# An argument the driver cannot encode (an InterfaceError, but no news about the connection).
_DRIVER_ENCODE = asyncpg.exceptions._base.DataError
# OSErrors of the network (a file the block writes, an archive, say, failing is no news about the database)
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.EHOSTUNREACH,
        errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL, errno.ENOTCONN,
    }
)  # fmt: skip


def describe(exc: BaseException) -> str:
    """`Type: message` of a driver error, for messages and logs."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, _DRIVER_ENCODE):
        return False
    if isinstance(exc, (*_DRIVER_UNREACHABLE, ConnectionError, socket.gaierror)):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


def is_transient(exc: BaseException) -> bool:
    """Whether a failed write says the database is away or busy (retry later) rather than a row is bad."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(_DATABASE_CLASSES)
    return isinstance(exc, TimeoutError) or _unreachable(exc)


def refused_by_server(exc: BaseException) -> bool:
    """Whether PostgreSQL refused a statement (rather than the driver refusing to send it)."""
    return isinstance(exc, asyncpg.PostgresError)


def translate(exc: BaseException, *, read_timeout_ms: int | None = None) -> GliaError | None:
    """The receiver's error for a driver error, or None when `exc` is none. `read_timeout_ms` is given for reads:
    their statement timeout and the values PostgreSQL refuses in them are told as such."""
    if isinstance(exc, TimeoutError):
        return Unavailable("database did not answer in time")
    if isinstance(exc, _DRIVER_ENCODE) and read_timeout_ms is not None:
        return InvalidQuery(None, f"a value cannot be sent to PostgreSQL: {exc}")
    if _unreachable(exc):
        return Unavailable(f"database is unreachable: {describe(exc)}")
    if not isinstance(exc, asyncpg.PostgresError):
        return None
    sqlstate = exc.sqlstate or ""
    if read_timeout_ms is not None and sqlstate == _QUERY_CANCELED:
        return Unavailable(
            f"the query did not finish within the read timeout of {read_timeout_ms / 1000:g} s"
            f" (GLIA_READ_STATEMENT_TIMEOUT_MS) and was cancelled: narrow it (a since/until range, a program) or"
            f" retry later (PostgreSQL: {exc})"
        )
    if read_timeout_ms is not None and sqlstate.startswith(_DATA_EXCEPTION):
        return InvalidQuery(None, f"PostgreSQL refused a value: {exc}")
    if sqlstate == _LOCK_NOT_AVAILABLE:
        return LockNotGranted(f"database is busy: {describe(exc)}")
    # Anything else (shutdown, out of resources, a schema being migrated) is worth retrying.
    return Unavailable(f"database is unavailable: {describe(exc)}")


@contextlib.asynccontextmanager
async def translated(*, read_timeout_ms: int | None = None, log_unexpected: bool = False) -> AsyncIterator[None]:
    """Driver errors raised in the block, raised as the receiver's own (`translate`). With `log_unexpected` (the
    receiver), an error of the database that is not a known transient one is logged too: it may need a person."""
    try:
        yield
    except Exception as exc:
        mine = translate(exc, read_timeout_ms=read_timeout_ms)
        if mine is None:
            raise
        known = (getattr(exc, "sqlstate", None) or "").startswith(_RETRYABLE_CLASSES)
        if log_unexpected and type(mine) is Unavailable and refused_by_server(exc) and not known:
            log.error("unexpected database error, answering 503 so the client retries: %s", describe(exc))
        raise mine from None


async def create_pool(
    dsn: str,
    *,
    max_size: int,
    statement_timeout_ms: int,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    """A bounded pool, connections opened as needed; `init` runs on each new connection."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        init=init,
        server_settings={"statement_timeout": str(statement_timeout_ms), "application_name": "glia-receiver"},
        command_timeout=max(statement_timeout_ms / 1000 + 5, 10),
    )


class Database:
    """The receiver's pool (the application's lifespan owns it) and how long a request waits for a connection."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    @contextlib.asynccontextmanager
    async def connection(self, *, read_timeout_ms: int | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, driver errors raised inside translated; `read_timeout_ms` for reads."""
        async with translated(log_unexpected=True):  # acquiring: opening a connection, or its server gone
            try:
                async with (
                    self.pool.acquire(timeout=self.acquire_timeout) as conn,
                    translated(read_timeout_ms=read_timeout_ms, log_unexpected=True),
                ):
                    yield conn
            except TimeoutError:  # the block's own are translated already: this is the wait for a connection
                raise Unavailable("database did not answer in time: every pooled connection is busy") from None

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        async with self.connection() as conn:
            try:
                value: str | None = await conn.fetchval(sqlfiles.load("database.sql")["schema_revision"])
            except asyncpg.UndefinedTableError:
                return None
            return value

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109
        """Close the pool, waiting at most `timeout` seconds for connections in use."""
        await asyncio.wait_for(self.pool.close(), timeout=timeout)


@contextlib.asynccontextmanager
async def connect(
    dsn: str,
    *,
    read_timeout_ms: int | None = None,
    command_timeout: float | None = None,
    application_name: str = "glia-cli",
) -> AsyncIterator[asyncpg.Connection]:
    """One connection of a command's own (`glia runs`, `glia keys`, ...), driver errors translated."""
    async with translated(read_timeout_ms=read_timeout_ms):
        conn = await asyncpg.connect(
            dsn, timeout=10, command_timeout=command_timeout, server_settings={"application_name": application_name}
        )
        try:
            yield conn
        finally:
            await conn.close(timeout=5)


async def check_schema(db: Database, head: str) -> None:
    """Raise SchemaError unless the database's schema is at `head`."""
    current = await db.schema_revision()
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
