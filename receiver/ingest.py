"""The OTLP/HTTP endpoint (`/v1/traces`, `/v1/metrics`, `/v1/logs`). Every export request runs one fixed pipeline,
`handle`:

content type -> read body (size limit) -> decompress (size limit) -> decode -> flatten -> store -> respond

and every failure maps to one status: 400 undecodable, 413 too large, 415 unsupported type or encoding,
503 + Retry-After when PostgreSQL is away or busy, or when the bodies being decoded already hold the decode budget
(the client retries). 200 is sent only after the commit, with `partial_success` when some spans or points could not
be stored or had values cut. Error bodies are `google.rpc.Status`, in the request's content type (http_errors.py).

Decoding costs several times a body's size in memory, so the bytes of bodies between decode and commit are bounded
(budget.py), and rows are flattened and written in chunks, not held for the whole request at once. What differs
between the signals is one `Signal` each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from . import decode, flatten, flatten_logs, http_errors
from .errors import BadRequest, InternalError, MethodNotAllowed, PayloadTooLarge, RequestError, Unavailable
from .services import Services, check_key, services
from .store import Chunks, Store, WriteResult

log = logging.getLogger("glia.receiver")

# Bodies larger than this are decoded and flattened in a worker thread so the event loop keeps serving.
_THREAD_THRESHOLD = 256 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Signal:
    """What differs between /v1/traces, /v1/metrics and /v1/logs."""

    name: str
    parse: Callable[[bytes | bytearray, str], decode.Decoded[Any]]
    months: Callable[[list[Any], flatten.Limits, int], set[datetime]]
    chunks: Callable[[list[Any], flatten.Limits, int, decode.Report, int], Iterator[list[tuple[Any, ...]]]]
    write: Callable[[Store, Chunks, Iterable[datetime]], Awaitable[WriteResult]]
    response: Callable[[int, str], bytes]
    rejected_field: str  # the partial_success field, in OTLP/JSON spelling
    # a small request's rows, in a transaction shared with other small requests (None: written alone)
    submit: Callable[[Store, Sequence[tuple[Any, ...]], Iterable[datetime]], Awaitable[WriteResult]] | None = None


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


def _log_response(rejected: int, message: str) -> bytes:
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
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
    Store.submit_spans,
)
METRICS = Signal(
    "metrics",
    decode.decode_metrics,
    flatten.metric_months,
    flatten.metric_chunks,
    Store.write_metrics,
    _metric_response,
    "rejectedDataPoints",
    Store.submit_metrics,
)
LOGS = Signal(
    "logs",
    decode.decode_logs,
    flatten_logs.log_months,
    flatten_logs.log_chunks,
    Store.write_logs,
    _log_response,
    "rejectedLogRecords",
    Store.submit_logs,
)


def _success(signal: Signal, kind: str, report: decode.Report) -> Response:
    # OTLP lets partial_success carry a message with nothing rejected: a warning (here: values cut to a limit)
    rejected, message = report.rejected, report.message()
    if kind == decode.PROTOBUF:
        return Response(signal.response(rejected, message), media_type=kind)
    body: dict[str, Any] = {}
    if rejected or message:
        body["partialSuccess"] = {signal.rejected_field: str(rejected), "errorMessage": message}
    return Response(orjson.dumps(body), media_type=kind)


async def read_body(request: Request, limit: int) -> bytearray:
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


async def _write_small(
    store: Store, signal: Signal, chunks: list[list[tuple[Any, ...]]], months: set[datetime]
) -> WriteResult:
    """A body small enough to be flattened at once: its rows share a transaction with other small requests' when
    they fit in one (Store.submit_*), else they are written alone, chunk by chunk."""
    if signal.submit is None or len(chunks) > 1 or (chunks and len(chunks[0]) > store.max_rows):
        return await signal.write(store, chunks, months)
    return await signal.submit(store, chunks[0] if chunks else [], months)


async def handle(request: Request, signal: Signal, svc: Services) -> Response:
    """One export request through the pipeline; every failure answered in the request's content type."""
    settings = svc.settings
    kind = decode.JSON
    started = time.perf_counter()
    report = decode.Report()
    try:
        kind = decode.media_type(request.headers.get("content-type"))
        try:
            body = await read_body(request, settings.max_body_bytes)
        except ClientDisconnect:
            # nobody is left to answer: not an error of ours, nor one worth a line at the default level
            log.debug("%s: the client went away before its whole body had arrived", signal.name)
            return Response(status_code=400)
        encoding = request.headers.get("content-encoding")
        raw = await _maybe_thread(
            len(body) > _THREAD_THRESHOLD, decode.decompress, body, encoding, settings.max_body_bytes
        )
        del body
        async with svc.budget.hold(len(raw), settings.decode_wait_seconds):
            threaded = len(raw) > _THREAD_THRESHOLD
            decoded = await _maybe_thread(threaded, signal.parse, raw, kind)
            del raw
            now = time.time_ns()
            months = await _maybe_thread(threaded, signal.months, decoded.items, svc.limits, now)
            rows = signal.chunks(decoded.items, svc.limits, now, report, settings.write_chunk_rows)
            if threaded:
                async with contextlib.aclosing(_ahead(rows, threaded)) as chunks:
                    result = await signal.write(svc.store, chunks, months)
            else:
                result = await _write_small(svc.store, signal, list(rows), months)
    except RequestError as exc:
        if isinstance(exc, Unavailable):
            log.warning("%s: 503 %s", signal.name, exc.message)
        else:
            log.warning("%s: rejected request with %d: %s", signal.name, exc.status_code, exc.message)
        return http_errors.otlp(exc, kind, settings.retry_after_seconds)
    except Exception:
        # a bug, not the client's fault nor a transient one: say so in the OTLP shape, with the details in our log
        log.exception("%s: internal error", signal.name)
        return http_errors.otlp(InternalError(), kind, settings.retry_after_seconds)
    report.merge(result.rejected, result.errors)
    svc.metrics.stored(signal.name, result.inserted, report.rejected)
    if report.rejected:
        log.warning(
            "%s: stored %d new, rejected %d: %s", signal.name, result.inserted, report.rejected, report.errors[0]
        )
    if report.warnings:
        log.info("%s: values cut to the limits: %s", signal.name, report.warnings[0])
    log.debug("%s: %d new rows in %.1f ms", signal.name, result.inserted, (time.perf_counter() - started) * 1e3)
    return _success(signal, kind, report)


# --- serving: a plain ASGI endpoint, not a FastAPI route ----------------------------------------------------------

SIGNALS = {"/v1/traces": TRACES, "/v1/metrics": METRICS, "/v1/logs": LOGS}


class OtlpEndpoints:
    """Serves the OTLP export paths (SIGNALS) itself and hands every other request to the application.

    ASGI middleware, placed inside the Host check, the security headers and the request count (app.py), so those
    apply as to every path; what it skips is FastAPI's routing, dependency injection (its sync dependencies run in a
    thread pool) and exception middleware, which cost more than the whole pipeline of a one-span request. It does
    what the route did: POST only (405 in the OTLP shape otherwise), the ingest key (services.check_key), then
    `handle`; every error is answered in the OTLP shape (http_errors.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signal = SIGNALS.get(scope["path"]) if scope["type"] == "http" else None
        if signal is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        svc = services(request)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(
                    f"{scope['method']} is not supported on {scope['path']}: OTLP/HTTP exports are POSTed"
                )
            await check_key(svc, request, "ingest")
        except RequestError as exc:
            response = http_errors.render(request, exc, svc.settings.retry_after_seconds)
        else:
            response = await handle(request, signal, svc)
        await response(scope, receive, send)
