"""The OTLP/HTTP endpoint. Every export request runs one fixed pipeline:

content type -> read body (size limit) -> decompress (size limit) -> decode -> flatten -> store -> respond

and every failure maps to one status: 400 undecodable, 413 too large, 415 unsupported type or encoding,
503 + Retry-After when PostgreSQL is away or busy (the client retries). 200 is sent only after the commit, with
`partial_success` when some spans or points could not be stored. Error bodies are `google.rpc.Status`, in the
request's content type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from . import api, auth, decode, docs, flatten, guard, retention
from .errors import BadRequest, PayloadTooLarge, RequestError, SchemaError, Unavailable
from .migrate import head_revision
from .settings import Settings
from .store import Store, check_schema, create_pool

log = logging.getLogger("glia.receiver")

# Bodies larger than this are decoded and flattened in a worker thread so the event loop keeps serving.
_THREAD_THRESHOLD = 256 * 1024
_MAX_MESSAGES = 10  # per-item rejection messages echoed back in partial_success
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
    parse: Callable[[bytes, str], decode.Decoded[Any]]
    to_rows: Callable[[list[Any], flatten.Limits, int], flatten.Rows]
    write: Callable[[Store, flatten.Rows], Awaitable[Any]]
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


TRACES = Signal("traces", decode.decode_traces, flatten.span_rows, Store.write_spans, _trace_response, "rejectedSpans")
METRICS = Signal(
    "metrics", decode.decode_metrics, flatten.metric_rows, Store.write_metrics, _metric_response, "rejectedDataPoints"
)


def _error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    code = _GRPC_CODES.get(status, code_pb2.UNKNOWN)
    if kind == decode.PROTOBUF:
        body = status_pb2.Status(code=code, message=message).SerializeToString()
    else:
        body = orjson.dumps({"code": code, "message": message})
    return Response(body, status_code=status, media_type=kind, headers=headers)


def _success(signal: Signal, kind: str, rejected: int, errors: list[str]) -> Response:
    message = ""
    if rejected:
        shown = errors[:_MAX_MESSAGES]
        more = f"; and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        message = "; ".join(shown) + more
    if kind == decode.PROTOBUF:
        return Response(signal.response(rejected, message), media_type=kind)
    body: dict[str, Any] = {}
    if rejected or message:
        body["partialSuccess"] = {signal.rejected_field: str(rejected), "errorMessage": message}
    return Response(orjson.dumps(body), media_type=kind)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"body of {size} bytes is over the limit of {limit} bytes")
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
        try:
            kind = decode.media_type(request.headers.get("content-type"))
            body = await _read_body(request, settings.max_body_bytes)
            if len(body) > _THREAD_THRESHOLD:
                decoded, rows = await asyncio.to_thread(_decode_flatten, signal, body, request, kind)
            else:
                decoded, rows = _decode_flatten(signal, body, request, kind)
            store: Store = request.app.state.store
            result = await signal.write(store, rows)
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
        rejected = decoded.rejected + rows.rejected + result.rejected
        errors = decoded.errors + rows.errors + (result.errors or [])
        if rejected:
            log.warning(
                "%s: stored %d, rejected %d: %s", signal.name, len(rows.rows) - result.rejected, rejected, errors[0]
            )
        log.debug(
            "%s: %d rows (%d new) in %.1f ms",
            signal.name,
            len(rows.rows),
            result.inserted,
            (time.perf_counter() - started) * 1e3,
        )
        return _success(signal, kind, rejected, errors)

    def _decode_flatten(
        signal: Signal, body: bytes, request: Request, kind: str
    ) -> tuple[decode.Decoded[Any], flatten.Rows]:
        raw = decode.decompress(body, request.headers.get("content-encoding"), settings.max_body_bytes)
        decoded = signal.parse(raw, kind)
        rows = signal.to_rows(decoded.items, limits, time.time_ns())
        return decoded, rows

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
