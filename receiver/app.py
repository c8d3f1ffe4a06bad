"""The OTLP/HTTP endpoint. Every export request runs one fixed pipeline:

content type -> read body (size limit) -> decompress (size limit) -> decode -> flatten -> store -> respond

and every failure maps to one status: 400 undecodable, 413 too large, 415 unsupported type or encoding,
503 + Retry-After when PostgreSQL is away or busy, or when the bodies being decoded already hold the decode budget
(the client retries). 200 is sent only after the commit, with `partial_success` when some spans or points could not
be stored or had values cut. Error bodies are `google.rpc.Status`, in the request's content type.

Decoding costs several times a body's size in memory, so the bytes of bodies between decode and commit are bounded
(`GLIA_MAX_DECODING_BYTES`), and rows are flattened and written in chunks, not held for the whole request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import ClientDisconnect

from . import api, auth, decode, docs, flatten, guard, retention
from .errors import BadRequest, PayloadTooLarge, RequestError, SchemaError, Unavailable
from .migrate import head_revision
from .settings import Settings
from .store import Chunks, Store, WriteResult, check_schema, create_pool

log = logging.getLogger("glia.receiver")

# Bodies larger than this are decoded and flattened in a worker thread so the event loop keeps serving.
_THREAD_THRESHOLD = 256 * 1024
T = TypeVar("T")
_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    405: code_pb2.UNIMPLEMENTED,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


@dataclass
class Signal:
    """What differs between /v1/traces and /v1/metrics."""

    name: str
    parse: Callable[[bytes | bytearray, str], decode.Decoded[Any]]
    months: Callable[[list[Any], flatten.Limits, int], set[datetime]]
    chunks: Callable[[list[Any], flatten.Limits, int, decode.Report, int], Iterator[list[tuple[Any, ...]]]]
    write: Callable[[Store, Chunks, Iterable[datetime]], Awaitable[WriteResult]]
    response: Callable[[int, str], bytes]
    rejected_field: str  # the partial_success field, in OTLP/JSON spelling


def _trace_response(rejected: int, message: str) -> bytes:
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return bytes(response.SerializeToString())


def _metric_response(rejected: int, message: str) -> bytes:
    response = ExportMetricsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = message
    return bytes(response.SerializeToString())


TRACES = Signal(
    "traces",
    decode.decode_traces,
    flatten.span_months,
    flatten.span_chunks,
    Store.write_spans,
    _trace_response,
    "rejectedSpans",
)
METRICS = Signal(
    "metrics",
    decode.decode_metrics,
    flatten.metric_months,
    flatten.metric_chunks,
    Store.write_metrics,
    _metric_response,
    "rejectedDataPoints",
)


def _error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    code = _GRPC_CODES.get(status, code_pb2.UNKNOWN)
    if kind == decode.PROTOBUF:
        body = status_pb2.Status(code=code, message=message).SerializeToString()
    else:
        body = orjson.dumps({"code": code, "message": message})
    return Response(body, status_code=status, media_type=kind, headers=headers)


def _success(signal: Signal, kind: str, report: decode.Report) -> Response:
    # OTLP lets partial_success carry a message with nothing rejected: a warning (here: values cut to a limit)
    rejected, message = report.rejected, report.message()
    if kind == decode.PROTOBUF:
        return Response(signal.response(rejected, message), media_type=kind)
    body: dict[str, Any] = {}
    if rejected or message:
        body["partialSuccess"] = {signal.rejected_field: str(rejected), "errorMessage": message}
    return Response(orjson.dumps(body), media_type=kind)


async def _read_body(request: Request, limit: int) -> bytearray:
    """The whole body; ClientDisconnect when the client goes away (or stops sending and is cut off) before its end."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"body of {size} bytes is over the limit of {limit} bytes")
    body = bytearray()  # grows in place: joining a list of chunks would hold the body twice
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        body += chunk
    return body


class DecodeBudget:
    """The bytes of request bodies between decode and commit, bounded: decoding costs several times a body's size.

    Waiters are served in arrival order, so a large body is not passed over for ever by small ones; a body larger
    than the whole budget gets all of it once nothing else holds any."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, size: int, wait: float) -> AsyncIterator[None]:
        """Hold `size` bytes of the budget for the block; Unavailable when they cannot be had within `wait` s."""
        size = min(max(size, 1), self.capacity)
        if self._waiting or self.used + size > self.capacity:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((size, granted))
            try:
                await asyncio.wait_for(asyncio.shield(granted), wait)
            except BaseException as exc:
                if granted.done():
                    self._release(size)  # granted as the wait ran out
                else:
                    granted.cancel()
                    self._grant()
                if isinstance(exc, TimeoutError):
                    raise Unavailable(
                        f"the receiver is decoding as many bytes as it may at once ({self.capacity}, "
                        "GLIA_MAX_DECODING_BYTES); retry later"
                    ) from None
                raise
        else:
            self.used += size
        try:
            yield
        finally:
            self._release(size)

    def _release(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            size, granted = self._waiting[0]
            if granted.cancelled():
                self._waiting.popleft()
                continue
            if self.used and self.used + size > self.capacity:
                return
            self._waiting.popleft()
            self.used += size
            granted.set_result(None)


async def _maybe_thread(threaded: bool, func: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(func, *args) if threaded else func(*args)


async def _ahead(chunks: Iterator[T], threaded: bool) -> AsyncGenerator[T, None]:
    """The items of `chunks`; when threaded, the next one is made in a worker thread while the caller works on the
    current one (the flatten of chunk n+1 runs while PostgreSQL stores chunk n)."""
    if not threaded:
        for item in chunks:
            yield item
        return
    following: asyncio.Future[T | None] = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
    try:
        while (chunk := await following) is not None:
            following = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
            yield chunk
    finally:
        # never leave the generator running in a thread behind us, nor its error unread
        with contextlib.suppress(Exception):
            await following


def create_app(settings: Settings, database_url: str) -> FastAPI:
    """The receiver application for one database. The lifespan owns the pool."""
    limits = flatten.Limits(
        max_attributes=settings.max_attributes_per_span,
        max_value_bytes=settings.max_attribute_value_bytes,
        max_events=settings.max_events_per_span,
        max_age_days=settings.max_span_age_days,
        max_future_days=settings.max_span_future_days,
    )
    retry_after = {"Retry-After": str(settings.retry_after_seconds)}
    budget = DecodeBudget(settings.max_decoding_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            database_url,
            min_size=0,
            max_size=settings.pool_max_size,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
        store = Store(pool, acquire_timeout=settings.pool_acquire_timeout)
        try:
            await check_schema(store, head_revision())
            await store.ensure_partitions_ahead()
        except BaseException:
            await pool.close()
            raise
        app.state.store = store
        app.state.pool = pool
        app.state.keys = auth.KeyCache(
            pool, ttl=settings.key_cache_seconds, acquire_timeout=settings.pool_acquire_timeout
        )
        await _log_auth_mode(app.state.keys)
        maintenance = asyncio.create_task(_maintain_partitions(store))
        retention_task = asyncio.create_task(retention.run_daily(pool, settings.retention_check_seconds))
        log.info("receiver ready: pool max %d connections", settings.pool_max_size)
        try:
            yield
        finally:
            for task in (maintenance, retention_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.wait_for(pool.close(), timeout=10)

    # /docs is docs.router's: Swagger UI from this origin; FastAPI's own pages would load it from a CDN
    app = FastAPI(
        title="Glia receiver",
        summary="OTLP/HTTP in, one row per span in PostgreSQL",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    app.state.auth_failures = auth.failure_log(settings.rejection_log_seconds)
    app.include_router(api.router)
    app.include_router(docs.router)

    def error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        if request.url.path.startswith("/v1/"):  # OTLP: a google.rpc.Status in the request's content type
            kind = decode.PROTOBUF if "protobuf" in request.headers.get("content-type", "") else decode.JSON
            return _error_response(status, message, kind, headers)
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    # the last added runs first: headers on every response, the Host refused before anything else runs
    host_rule = guard.HostRule.make(settings.host, settings.allowed_hosts)
    app.add_middleware(guard.HostCheck, rule=host_rule, refuse=error, log_seconds=settings.rejection_log_seconds)
    app.add_middleware(guard.SecurityHeaders)

    @app.exception_handler(auth.AuthError)
    async def auth_failed(request: Request, exc: auth.AuthError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error(request, exc.status_code, exc.message, headers)

    # Raised by store.connection (the one place driver errors are translated) anywhere outside the ingest pipeline,
    # which answers its own: the query API, the key cache behind every authenticated request.
    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> Response:
        log.warning("%s: 503 %s", request.url.path, exc.message)
        return error(request, 503, exc.message, retry_after)

    # A value PostgreSQL cannot take (SQLSTATE class 22); the query API lets these through store.connection.
    @app.exception_handler(asyncpg.DataError)
    async def data_error(request: Request, exc: asyncpg.DataError) -> Response:
        if request.url.path.startswith("/api/"):
            detail = [{"loc": ["query"], "msg": f"PostgreSQL refused a value: {exc}", "type": "value_error"}]
            return JSONResponse({"detail": detail}, status_code=422)
        log.error("%s: unexpected database data error: %s", request.url.path, exc)
        return error(request, 500, "internal error in the glia receiver; see its log")

    ingest_auth = [Depends(auth.require("ingest"))]

    async def export(request: Request, signal: Signal) -> Response:
        kind = decode.JSON
        started = time.perf_counter()
        report = decode.Report()
        try:
            kind = decode.media_type(request.headers.get("content-type"))
            try:
                body = await _read_body(request, settings.max_body_bytes)
            except ClientDisconnect:
                # nobody is left to answer: not an error of ours, nor one worth a line at the default level
                log.debug("%s: the client went away before its whole body had arrived", signal.name)
                return Response(status_code=400)
            encoding = request.headers.get("content-encoding")
            raw = await _maybe_thread(
                len(body) > _THREAD_THRESHOLD, decode.decompress, body, encoding, settings.max_body_bytes
            )
            del body
            async with budget.hold(len(raw), settings.decode_wait_seconds):
                threaded = len(raw) > _THREAD_THRESHOLD
                decoded = await _maybe_thread(threaded, signal.parse, raw, kind)
                del raw
                now = time.time_ns()
                months = await _maybe_thread(threaded, signal.months, decoded.items, limits, now)
                rows = signal.chunks(decoded.items, limits, now, report, settings.write_chunk_rows)
                async with contextlib.aclosing(_ahead(rows, threaded)) as chunks:
                    store: Store = request.app.state.store
                    result = await signal.write(store, chunks, months)
        except Unavailable as exc:
            log.warning("%s: 503 %s", signal.name, exc.message)
            return _error_response(503, exc.message, kind, retry_after)
        except RequestError as exc:
            log.warning("%s: rejected request with %d: %s", signal.name, exc.status_code, exc.message)
            return _error_response(exc.status_code, exc.message, kind)
        except Exception:
            # a bug, not the client's fault nor a transient one: say so in the OTLP shape, with the details in our log
            log.exception("%s: internal error", signal.name)
            return _error_response(500, "internal error in the glia receiver; see its log", kind)
        report.merge(result.rejected, result.errors)
        if report.rejected:
            log.warning(
                "%s: stored %d new, rejected %d: %s", signal.name, result.inserted, report.rejected, report.errors[0]
            )
        if report.warnings:
            log.info("%s: values cut to the limits: %s", signal.name, report.warnings[0])
        log.debug(
            "%s: %d new rows in %.1f ms", signal.name, result.inserted, (time.perf_counter() - started) * 1e3
        )
        return _success(signal, kind, report)

    @app.post("/v1/traces", summary="OTLP/HTTP trace export", dependencies=ingest_auth)
    async def traces(request: Request) -> Response:
        return await export(request, TRACES)

    @app.post("/v1/metrics", summary="OTLP/HTTP metrics export", dependencies=ingest_auth)
    async def metrics(request: Request) -> Response:
        return await export(request, METRICS)

    @app.api_route("/v1/traces", methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    @app.api_route("/v1/metrics", methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def wrong_method(request: Request) -> Response:
        kind = decode.PROTOBUF if "protobuf" in request.headers.get("content-type", "") else decode.JSON
        message = f"{request.method} is not supported on {request.url.path}: OTLP/HTTP exports are POSTed"
        return _error_response(405, message, kind, {"Allow": "POST"})

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the database is reachable and its schema is at head")
    async def readyz(request: Request) -> JSONResponse:
        store: Store = request.app.state.store
        try:
            await check_schema(store, head_revision())
        except Unavailable as exc:
            return JSONResponse({"status": "unavailable", "reason": exc.message}, status_code=503)
        except SchemaError as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app


async def _log_auth_mode(keys: auth.KeyCache) -> None:
    try:
        active = await keys.keys()
    except Unavailable as exc:
        log.warning("could not read the API keys yet: %s", exc)
        return
    if active:
        log.info("API keys: %d active; ingest needs an ingest key, /api and the page a read key", len(active))
    else:
        log.warning("no API keys: ingest, the query API and the page are open to anyone who can connect "
                    "('glia keys create NAME' to require keys)")


async def _maintain_partitions(store: Store) -> None:
    """Keep next months' partitions made ahead of need, once a day."""
    while True:
        await asyncio.sleep(24 * 3600)
        try:
            await store.ensure_partitions_ahead()
        except Exception as exc:  # keep the loop alive; partitions are also made on demand
            log.warning("could not create partitions ahead: %s", exc)
