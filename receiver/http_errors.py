"""How an error is answered over HTTP, in one place.

On the OTLP paths (`/v1/...`) the body is a `google.rpc.Status` in the request's content type, which is what
exporters read; elsewhere it is `{"detail": ...}`, as FastAPI answers its own errors. Every retryable error
(`RequestError.retryable`: the database away or busy, the decode budget taken) carries `Retry-After`, which makes
the Collector and the SDK exporters retry rather than drop the batch.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.rpc import code_pb2, status_pb2

from . import decode
from .errors import RequestError, Unavailable

log = logging.getLogger("glia.receiver")

OTLP_PATHS = "/v1/"
_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    405: code_pb2.UNIMPLEMENTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


def _headers(exc: RequestError, retry_after: int) -> dict[str, str]:
    headers = dict(exc.headers)
    if exc.retryable:
        headers["Retry-After"] = str(retry_after)
    return headers


def otlp(exc: RequestError, kind: str, retry_after: int) -> Response:
    """`exc` as OTLP answers it: a `google.rpc.Status` in `kind` (`decode.PROTOBUF` or `decode.JSON`)."""
    code = _GRPC_CODES.get(exc.status_code, code_pb2.UNKNOWN)
    if kind == decode.PROTOBUF:
        body = status_pb2.Status(code=code, message=exc.message).SerializeToString()
    else:
        body = orjson.dumps({"code": code, "message": exc.message})
    return Response(body, status_code=exc.status_code, media_type=kind, headers=_headers(exc, retry_after))


def render(request: Request, exc: RequestError, retry_after: int) -> Response:
    """`exc` as this request's answer: OTLP's shape on the export paths (in the content type the request declares,
    JSON when it declares none the receiver speaks), FastAPI's elsewhere."""
    if request.url.path.startswith(OTLP_PATHS):
        kind = decode.PROTOBUF if "protobuf" in request.headers.get("content-type", "") else decode.JSON
        return otlp(exc, kind, retry_after)
    return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code, headers=_headers(exc, retry_after))


def install(app: FastAPI, retry_after: int) -> None:
    """Answer every RequestError that reaches the application (from the query API, the key check, the page) with
    `render`; the ingest pipeline answers its own in the content type it decoded."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        if isinstance(exc, Unavailable):
            log.warning("%s: 503 %s", request.url.path, exc.message)
        return render(request, exc, retry_after)

    app.add_exception_handler(RequestError, handler)
