"""The receiver's own metrics on `/metrics`, in the Prometheus text format (prometheus-client).

Each application has its own registry, held by its `Services`, so that several applications in one process (the
tests) never share a counter. What is measured where:

- OTLP requests by signal and status: `RequestCounter`, ASGI middleware outside the Host check, so a request refused
  for its Host or its key is counted with the status it was answered with;
- items stored and rejected: `ingest.handle`, from the write's result and the request's report;
- commit latency: `store.Store`, from the start of a request's transaction to its commit;
- connections waiting for the pool: `MeteredDatabase`, the receiver's `Database` counting its waiters;
- the pool's connections in use and the decode budget: read from the live objects when scraped;
- partitions ahead: read from the catalog when scraped, in a read-only transaction under the read statement timeout.
  While every pooled connection is busy the last figure read is served instead: a scrape never queues for a
  connection that ingest needs (the figure changes once a month).

A scrape needs a read key once keys exist, and obeys the Host rule, as the query API does. docs/deploy.md says what
to alert on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import sqlfiles
from .database import Database
from .errors import Unavailable
from .query import ReadLimits, reading
from .services import Wired, require

if TYPE_CHECKING:
    import asyncpg

    from .budget import DecodeBudget

log = logging.getLogger("glia.metrics")

# The OTLP paths and the signal each is counted under.
SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
TABLES = ("spans", "metric_points", "log_records")
# Seconds from a request's transaction start to its commit: a one-span request takes a few milliseconds, a batch
# of 4096 spans a few hundred, and past the statement timeout (30 s) the request has failed.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ReceiverMetrics:
    """The metrics of one receiver application, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "glia_receiver_requests",
            "OTLP export requests answered, by signal and HTTP status (the receiver's own answers; a connection the"
            " HTTP edge refuses before reading a request is not counted)",
            ["signal", "status"],
            registry=registry,
        )
        self.items_stored = Counter(
            "glia_receiver_items_stored",
            "spans, metric points or log records committed as new rows (a resent item already stored is not counted"
            " again)",
            ["signal"],
            registry=registry,
        )
        self.items_rejected = Counter(
            "glia_receiver_items_rejected",
            "spans, metric points or log records refused one by one in partial_success (a whole request refused is"
            " counted only in glia_receiver_requests)",
            ["signal"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "glia_receiver_commit_seconds",
            "seconds from the start of an export request's transaction to its commit, by table",
            ["table"],
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.pool_connections = Gauge(
            "glia_receiver_pool_connections",
            "the receiver's pooled PostgreSQL connections, in use or idle",
            ["state"],
            registry=registry,
        )
        self.pool_max = Gauge(
            "glia_receiver_pool_max_connections", "the pool's bound (GLIA_POOL_MAX_SIZE)", registry=registry
        )
        self.pool_waiting = Gauge(
            "glia_receiver_pool_waiting",
            "requests waiting for a pooled connection (or for one to open); past GLIA_POOL_ACQUIRE_TIMEOUT they are"
            " answered 503",
            registry=registry,
        )
        self.decode_bytes = Gauge(
            "glia_receiver_decode_bytes",
            "bytes of request bodies between decode and commit (the decode budget in use)",
            registry=registry,
        )
        self.decode_capacity = Gauge(
            "glia_receiver_decode_capacity_bytes", "the decode budget (GLIA_MAX_DECODING_BYTES)", registry=registry
        )
        self.decode_waiting = Gauge(
            "glia_receiver_decode_waiting",
            "requests waiting for their share of the decode budget; past GLIA_DECODE_WAIT_SECONDS they are answered"
            " 503",
            registry=registry,
        )
        self.partitions_ahead = Gauge(
            "glia_receiver_partitions_ahead",
            "months after the current one whose partition exists, by table (read from the catalog when scraped;"
            " absent when it could not be read)",
            ["table"],
            registry=registry,
        )
        self.partitions_read_errors = Counter(
            "glia_receiver_partitions_read_errors",
            "scrapes that could not read the partitions from the catalog",
            registry=registry,
        )
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        # every series an alert divides by or takes a rate of exists from the start, at 0
        for signal in SIGNALS.values():
            self.requests.labels(signal, "200")
            self.requests.labels(signal, "503")
            self.items_stored.labels(signal)
            self.items_rejected.labels(signal)
        for table in TABLES:
            self.commit_seconds.labels(table)
        self._read_failing = False
        # every request counts: the labelled children, found once (labels() costs more than the count)
        self._answered: dict[tuple[str, int], Any] = {}
        self._stored = {s: (self.items_stored.labels(s), self.items_rejected.labels(s)) for s in SIGNALS.values()}
        self._committed = {table: self.commit_seconds.labels(table) for table in TABLES}

    def answered(self, signal: str, status: int) -> None:
        """Count one answered OTLP request."""
        child = self._answered.get((signal, status))
        if child is None:  # a few signals times the statuses the receiver answers with
            child = self._answered[signal, status] = self.requests.labels(signal, str(status))
        child.inc()

    def stored(self, signal: str, inserted: int, rejected: int) -> None:
        """Count one request's new rows and the items it rejected."""
        stored, refused = self._stored[signal]
        stored.inc(inserted)
        if rejected:
            refused.inc(rejected)

    def committed(self, table: str, seconds: float) -> None:
        """Record one request's transaction, from its start to its commit."""
        self._committed[table].observe(seconds)

    async def scrape(self, db: Database, budget: DecodeBudget, reads: ReadLimits) -> bytes:
        """The registry in the Prometheus text format, the live figures sampled first (before this scrape's own
        read of the catalog can take a connection)."""
        pool = db.pool
        size, idle, most = pool.get_size(), pool.get_idle_size(), pool.get_max_size()
        self.pool_connections.labels("in_use").set(size - idle)
        self.pool_connections.labels("idle").set(idle)
        self.pool_max.set(most)
        self.decode_bytes.set(budget.used)
        self.decode_capacity.set(budget.capacity)
        self.decode_waiting.set(budget.waiting)
        if idle or size < most:
            await self._read_partitions(db, reads)
        return generate_latest(self.registry)

    async def _read_partitions(self, db: Database, reads: ReadLimits) -> None:
        try:
            async with (
                db.connection(read_timeout_ms=reads.statement_timeout_ms) as conn,
                reading(conn, reads),
            ):
                rows = await conn.fetch(sqlfiles.load("metrics.sql")["partitions_ahead"])
        except Unavailable as exc:
            self.partitions_read_errors.inc()
            self.partitions_ahead.clear()  # a figure that cannot be read is not served stale
            if not self._read_failing:
                log.warning("/metrics: cannot read the partitions from the catalog: %s", exc.message)
            self._read_failing = True
            return
        if self._read_failing:
            log.info("/metrics: the partitions are read from the catalog again")
        self._read_failing = False
        for row in rows:
            self.partitions_ahead.labels(row["table_name"]).set(row["months"])


class MeteredDatabase(Database):
    """The receiver's Database, counting the requests that wait for one of its pooled connections."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float, waiting: Gauge) -> None:
        super().__init__(pool, acquire_timeout=acquire_timeout)
        self._waiting = waiting

    @contextlib.asynccontextmanager
    async def connection(self, *, read_timeout_ms: int | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (Database.connection); the wait for it is counted in glia_receiver_pool_waiting."""
        self._waiting.inc()
        waiting = True
        try:
            async with super().connection(read_timeout_ms=read_timeout_ms) as conn:
                self._waiting.dec()
                waiting = False
                yield conn
        finally:
            if waiting:  # the wait ended without a connection: timed out, the database away, cancelled
                self._waiting.dec()


class RequestCounter:
    """Counts every answer to an OTLP path by signal and status (ASGI middleware, outermost)."""

    def __init__(self, app: ASGIApp, metrics: ReceiverMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signal = SIGNALS.get(scope["path"]) if scope["type"] == "http" else None
        if signal is None:
            await self.app(scope, receive, send)
            return
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not status:  # the server answers 500 to what escapes the application
                status = 500
            raise
        finally:
            if status:  # 0: the client went away before any answer
                self.metrics.answered(signal, status)


router = APIRouter()


@router.get(
    "/metrics",
    summary="the receiver's own metrics, Prometheus text format",
    dependencies=[Depends(require("read"))],
    response_class=Response,
)
async def metrics(svc: Wired) -> Response:
    """Requests, items stored and rejected, commit latency, the pool, the decode budget, partitions ahead."""
    body = await svc.metrics.scrape(svc.db, svc.budget, svc.reads)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
