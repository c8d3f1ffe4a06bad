"""Posting OTLP request bodies within a timeout. Never raises; says why a post failed.

Plain `http://` endpoints use a minimal HTTP/1.1 client on the `_socket` module: importing `socket`, `http.client`
or `urllib` costs more than a whole post to a local endpoint, and `glia run` has tens of milliseconds in all.
`https://` uses `http.client`.
"""

from __future__ import annotations

import time

from ._config import split_url
from ._log import warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RETRYABLE = frozenset({429, 502, 503, 504})
# Pseudo-status for "no HTTP answer": connection refused, DNS failure, timeout, reset.
NO_ANSWER = 0

CONTENT_TYPES = {"pb": "application/x-protobuf", "json": "application/json"}


def post(
    url: str, body: bytes, content_type: str, headers: Mapping[str, str], timeout: float, gzipped: bool
) -> tuple[int, str]:
    """POST `body`; returns (status, detail). Status 0: no HTTP answer (detail says why). Never raises."""
    deadline = time.monotonic() + max(timeout, 0.001)
    hdrs = {"Content-Type": content_type, "User-Agent": "glia-otel"}
    if gzipped:
        hdrs["Content-Encoding"] = "gzip"
    for k, v in headers.items():
        hdrs[k] = v
    try:
        scheme, host, port, target = split_url(url)
        if scheme == "https":
            return _post_https(host, port, target, body, hdrs, timeout)
        return _post_http(host, port, target, body, hdrs, deadline)
    except TimeoutError:
        return NO_ANSWER, f"timed out after {timeout * 1000:.0f} ms"
    except (OSError, ValueError) as e:
        return NO_ANSWER, f"{type(e).__name__}: {e}"


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _post_http(
    host: str, port: int, target: str, body: bytes, hdrs: Mapping[str, str], deadline: float
) -> tuple[int, str]:
    import _socket

    # An ASCII host as bytes skips the `idna` codec, which costs milliseconds to import.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    infos = _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(address)
        except OSError as e:
            sock.close()
            error = e
            continue
        try:
            return _exchange(sock, host, port, target, body, hdrs, deadline)
        finally:
            sock.close()
    assert error is not None
    if isinstance(error, _socket.timeout):
        raise TimeoutError
    raise error


def _exchange(
    sock: object, host: str, port: int, target: str, body: bytes, hdrs: Mapping[str, str], deadline: float
) -> tuple[int, str]:
    head = [f"POST {target} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in hdrs.items()]
    s: Any = sock
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    buf = b""
    while b"\r\n" not in buf:
        s.settimeout(_remaining(deadline))
        chunk = s.recv(4096)
        if not chunk:
            return NO_ANSWER, "connection closed without an answer"
        buf += chunk
    status_line = buf.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        return NO_ANSWER, f"not an HTTP answer: {status_line[:80]!r}"
    return int(fields[1]), status_line


def _post_https(
    host: str, port: int, target: str, body: bytes, hdrs: Mapping[str, str], timeout: float
) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPSConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", target, body=body, headers=dict(hdrs))
        resp = conn.getresponse()
        resp.read()
        return resp.status, f"HTTP {resp.status} {resp.reason}"
    finally:
        conn.close()


def compress(body: bytes, compression: str) -> bytes:
    """Gzip the body when compression is `gzip` (zlib with a gzip header; fast level, the bodies are small)."""
    if compression != "gzip":
        return body
    import zlib

    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    return c.compress(body) + c.flush()


def describe_failure(url: str, status: int, detail: str) -> str:
    """One clear line about a failed export."""
    if status == NO_ANSWER:
        return f"could not reach {url} ({detail})"
    return f"{url} answered {detail}"


def report_permanent(url: str, status: int, detail: str) -> None:
    """A non-retryable answer (400, 413, 415, ...) means the data will never be accepted: log once, drop."""
    warn_once(
        f"permanent:{url}:{status}",
        "%s; the request was dropped (not retryable)",
        describe_failure(url, status, detail),
    )
