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
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from . import decode, flatten, flatten_logs, http_errors
from .errors import BadRequest, InternalError, MethodNotAllowed, PayloadTooLarge, RequestError, Unavailable
from .services import Services, check_key, require, services
from .store import Chunks, Store, WriteResult

log = logging.getLogger("glia.receiver")

# Bodies larger than this are decoded and flattened in a worker thread so the event loop keeps serving, and
# written chunk by chunk as they are flattened.
_THREAD_THRESHOLD = 256 * 1024
# Bodies larger than this but not _THREAD_THRESHOLD are flattened whole in a worker thread (one job's span is
# about 1 KiB: flattened at once, no thread hop).
_FLATTEN_THREAD_THRESHOLD = 16 * 1024
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


def _success(signal: Signal, kind: str, report: decode.Report) -> bytes:
    # OTLP lets partial_success carry a message with nothing rejected: a warning (here: values cut to a limit)
    rejected, message = report.rejected, report.message()
    if kind == decode.PROTOBUF:
        return signal.response(rejected, message)
    body: dict[str, Any] = {}
    if rejected or message:
        body["partialSuccess"] = {signal.rejected_field: str(rejected), "errorMessage": message}
    return orjson.dumps(body)


@dataclass
class Head:
    """The request headers the pipeline reads, from one pass over the ASGI scope's (the first of each)."""

    content_type: str | None = None
    content_length: str | None = None
    content_encoding: str | None = None
    authorization: str | None = None

    @classmethod
    def of(cls, scope: Scope) -> Head:
        """The headers of `scope`."""
        head = cls()
        for name, value in scope["headers"]:
            field_name = _HEADS.get(name)
            if field_name is not None and getattr(head, field_name) is None:
                setattr(head, field_name, value.decode("latin-1"))
        return head


_HEADS = {
    b"content-type": "content_type",
    b"content-length": "content_length",
    b"content-encoding": "content_encoding",
    b"authorization": "authorization",
}


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytearray:
    """The whole body (`declared`: its Content-Length); ClientDisconnect when the client goes away (or stops sending
    and is cut off) before its end."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"body of {size} bytes is over the limit of {limit} bytes")
    body = bytearray()  # grows in place: joining a list of chunks would hold the body twice
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        body += chunk
        if not message.get("more_body", False):
            return body


def _flatten_all(
    signal: Signal,
    raw: bytes | bytearray,
    kind: str,
    limits: flatten.Limits,
    now: int,
    report: decode.Report,
    chunk_rows: int,
) -> tuple[set[datetime], list[list[tuple[Any, ...]]]]:
    """A body small enough to hold whole as rows: its partition months and its rows, in chunks."""
    decoded = signal.parse(raw, kind)
    months = signal.months(decoded.items, limits, now)
    return months, list(signal.chunks(decoded.items, limits, now, report, chunk_rows))


async def _ahead(chunks: Iterator[T]) -> AsyncGenerator[T, None]:
    """The items of `chunks`, the next one made in a worker thread while the caller works on the current one (the
    flatten of chunk n+1 runs while PostgreSQL stores chunk n)."""
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


async def handle(head: Head, receive: Receive, signal: Signal, svc: Services) -> Response | tuple[bytes, str]:
    """One export request through the pipeline: the body and content type of its 200, or the Response of a failure,
    in the request's content type."""
    settings = svc.settings
    kind = decode.JSON
    started = time.perf_counter()
    report = decode.Report()
    try:
        kind = decode.media_type(head.content_type)
        try:
            body = await read_body(receive, head.content_length, settings.max_body_bytes)
        except ClientDisconnect:
            # nobody is left to answer: not an error of ours, nor one worth a line at the default level
            log.debug("%s: the client went away before its whole body had arrived", signal.name)
            return Response(status_code=400)
        limit = settings.max_body_bytes
        if len(body) > _THREAD_THRESHOLD:
            raw = await asyncio.to_thread(decode.decompress, body, head.content_encoding, limit)
        else:  # most requests: one job's span, no thread hop
            raw = decode.decompress(body, head.content_encoding, limit)
        del body
        async with svc.budget.hold(len(raw), settings.decode_wait_seconds):
            now = time.time_ns()
            if len(raw) > _THREAD_THRESHOLD:
                decoded = await asyncio.to_thread(signal.parse, raw, kind)
                del raw
                months = await asyncio.to_thread(signal.months, decoded.items, svc.limits, now)
                rows = signal.chunks(decoded.items, svc.limits, now, report, settings.write_chunk_rows)
                async with contextlib.aclosing(_ahead(rows)) as chunks:
                    result = await signal.write(svc.store, chunks, months)
            else:
                # a medium body (a batch of a few hundred spans) is flattened in a worker thread: it holds the GIL
                # as long, but the event loop gets it back every few ms to keep PostgreSQL fed with other requests'
                # rows (512-span batches: 28,000 -> 30,500 spans/s, docs/benchmarks.md)
                chunk_rows = settings.write_chunk_rows
                work = functools.partial(_flatten_all, signal, raw, kind, svc.limits, now, report, chunk_rows)
                months, flat = await asyncio.to_thread(work) if len(raw) > _FLATTEN_THREAD_THRESHOLD else work()
                del raw, work
                result = await _write_small(svc.store, signal, flat, months)
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
    return _success(signal, kind, report), kind


# --- serving: a plain ASGI endpoint, not a FastAPI route ----------------------------------------------------------

SIGNALS = {"/v1/traces": TRACES, "/v1/metrics": METRICS, "/v1/logs": LOGS}


class OtlpEndpoint:
    """The ASGI app of the OTLP export paths (SIGNALS), handed the application's Services by `services`.

    app.py puts it behind the same Host check, security headers and request count as the rest of the application,
    but outside FastAPI: its routing, dependency injection (sync dependencies run in a thread pool) and middleware
    stack cost more than the whole pipeline of a one-span request. It does what a route would: POST only (405 in the
    OTLP shape otherwise), the ingest key (services.check_key), then `handle`; every error is answered in the OTLP
    shape (http_errors.py)."""

    def __init__(self, services: Callable[[], Services]) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signal = SIGNALS[scope["path"]]
        svc = self.services()
        head = Head.of(scope)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(
                    f"{scope['method']} is not supported on {scope['path']}: OTLP/HTTP exports are POSTed"
                )
            await check_key(svc, Request(scope), "ingest", head.authorization)
        except RequestError as exc:
            answer: Response | tuple[bytes, str] = http_errors.render(
                Request(scope), exc, svc.settings.retry_after_seconds
            )
        else:
            answer = await handle(head, receive, signal, svc)
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        body, kind = answer
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _routed(request: Request, signal: Signal) -> Response:
    answer = await handle(Head.of(request.scope), request.receive, signal, services(request))
    return answer if isinstance(answer, Response) else Response(answer[0], media_type=answer[1])


# What OpenAPI (and /docs) shows of the OTLP paths. Dispatch serves them before FastAPI sees a request; these routes
# run the same pipeline should the FastAPI application be served alone.
router = APIRouter()
_ingest_key = [Depends(require("ingest"))]


@router.post("/v1/traces", summary="OTLP/HTTP trace export", dependencies=_ingest_key)
async def traces(request: Request) -> Response:
    """An ExportTraceServiceRequest: one row per span in `spans`."""
    return await _routed(request, TRACES)


@router.post("/v1/metrics", summary="OTLP/HTTP metrics export", dependencies=_ingest_key)
async def metrics(request: Request) -> Response:
    """An ExportMetricsServiceRequest: one row per data point in `metric_points`."""
    return await _routed(request, METRICS)


@router.post("/v1/logs", summary="OTLP/HTTP logs export", dependencies=_ingest_key)
async def logs(request: Request) -> Response:
    """An ExportLogsServiceRequest: one row per log record in `log_records`."""
    return await _routed(request, LOGS)


class Dispatch:
    """The receiver's ASGI app: the OTLP export paths to `otlp`, everything else (and the lifespan) to `app`."""

    def __init__(self, app: ASGIApp, otlp: ASGIApp) -> None:
        self.app = app
        self.otlp = otlp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in SIGNALS:
            await self.otlp(scope, receive, send)
        else:
            await self.app(scope, receive, send)
