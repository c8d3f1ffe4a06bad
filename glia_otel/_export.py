"""Posting OTLP request bodies: deliver within a timeout, or hand the exact bytes to the spool.

Plain `http://` endpoints use a minimal HTTP/1.1 client on a socket (importing `http.client` costs more
than the whole post to a local endpoint); `https://` uses `http.client`.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from ._log import warn_once

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
        parts = urlsplit(url)
        if parts.scheme == "https":
            return _post_https(parts.hostname or "", parts.port or 443, _target(parts), body, hdrs, timeout)
        return _post_http(parts.hostname or "", parts.port or 80, _target(parts), body, hdrs, deadline)
    except TimeoutError:
        return NO_ANSWER, f"timed out after {timeout * 1000:.0f} ms"
    except (OSError, ValueError) as e:
        return NO_ANSWER, f"{type(e).__name__}: {e}"


def _target(parts: object) -> str:
    path = getattr(parts, "path", "") or "/"
    query = getattr(parts, "query", "")
    return f"{path}?{query}" if query else path


def _post_http(
    host: str, port: int, target: str, body: bytes, hdrs: Mapping[str, str], deadline: float
) -> tuple[int, str]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    with socket.create_connection((host, port), timeout=remaining) as sock:
        head = [
            f"POST {target} HTTP/1.1",
            f"Host: {host}:{port}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in hdrs.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        buf = b""
        while b"\r\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
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
    """Gzip the body when compression is `gzip` (fast level: the bodies are small)."""
    return gzip.compress(body, compresslevel=1) if compression == "gzip" else body


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
