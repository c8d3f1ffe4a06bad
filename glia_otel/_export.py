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
# Answers about the endpoint, not the data (wrong URL or path, missing or bad credentials, a proxy in the way): the
# same bytes will be accepted once the endpoint is right, so they are kept like those of an endpoint that is down.
ENDPOINT_PROBLEM = frozenset({401, 403, 404, 405, 407, 408})
_MAX_ERROR_BODY = 65536
# Pseudo-status for "no HTTP answer": connection refused, DNS failure, timeout, reset.
NO_ANSWER = 0

CONTENT_TYPES = {"pb": "application/x-protobuf", "json": "application/json"}

# What an answer means for the bytes that were sent: the one rule the exporters and `glia flush` share.
SENT, KEEP, REJECTED = "sent", "keep", "rejected"


def outcome(status: int) -> str:
    """`SENT` (2xx), `KEEP` (no answer, busy, or the endpoint is misconfigured: the same bytes are resent later) or
    `REJECTED` (refused for what they are: 400, 413, 415, ...)."""
    if 200 <= status < 300:
        return SENT
    if status == NO_ANSWER or status in RETRYABLE or status in ENDPOINT_PROBLEM:
        return KEEP
    return REJECTED


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
    except Exception as e:  # OSError, ValueError, http.client.HTTPException, ssl errors: never raise
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

    infos = _resolve(host, port, deadline)
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


def resolve_ahead(url: str, timeout: float = 0.05) -> None:
    """Look the endpoint's name up now, within `timeout`, so that a later post finds it cached. Never raises."""
    try:
        scheme, host, port, _ = split_url(url)
        if scheme == "http":
            _resolve(host, port, time.monotonic() + timeout)
    except Exception:  # the post looks it up again and says what failed
        pass


_RESOLVED_TTL_S = 300.0
_resolved: dict[tuple[str, int], tuple[float, list[Any]]] = {}


def _resolve(host: str, port: int, deadline: float) -> list[Any]:
    """The endpoint's addresses: looked up once (cached for a few minutes), and never past `deadline`.

    `getaddrinfo` has no timeout of its own and a slow resolver can stall it for seconds, so a name is looked up
    in a helper thread that is abandoned (it is a daemon) when the deadline passes.
    """
    import _socket
    import _thread

    key = (host, port)
    cached = _resolved.get(key)
    if cached is not None and time.monotonic() - cached[0] < _RESOLVED_TTL_S:
        return cached[1]
    for family in (_socket.AF_INET, _socket.AF_INET6):
        # An address, not a name: nothing to look up, and no thread to start for it.
        try:
            _socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return [(family, _socket.SOCK_STREAM, 0, "", (host, port) if family == _socket.AF_INET else (host, port, 0, 0))]
    # An ASCII host as bytes skips the `idna` codec, which costs milliseconds to import.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    done = _thread.allocate_lock()
    done.acquire()
    box: list[Any] = []

    def lookup() -> None:
        try:
            box.append(_socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM))
        except BaseException as e:
            box.append(e)
        finally:
            done.release()

    _thread.start_new_thread(lookup, ())
    if not done.acquire(timeout=_remaining(deadline)):
        raise TimeoutError
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    if not result:
        raise OSError(f"cannot resolve {host}")
    _resolved[key] = (time.monotonic(), result)
    return list(result)


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
    status = int(fields[1])
    if 200 <= status < 300:
        return status, status_line
    # A failure: the google.rpc.Status in the body says why, and belongs in the log line.
    try:
        while b"\r\n\r\n" not in buf and len(buf) < _MAX_ERROR_BODY:
            s.settimeout(_remaining(deadline))
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        header, _, body = buf.partition(b"\r\n\r\n")
        content_type, length = "", _MAX_ERROR_BODY
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                content_type = value.strip().decode("latin-1")
            elif name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = min(int(value.strip()), _MAX_ERROR_BODY)
        while len(body) < length:
            s.settimeout(_remaining(deadline))
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    except (OSError, TimeoutError):
        return status, status_line
    return status, _with_message(status_line, rpc_status_message(body[:length], content_type))


def _post_https(
    host: str, port: int, target: str, body: bytes, hdrs: Mapping[str, str], timeout: float
) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPSConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", target, body=body, headers=dict(hdrs))
        resp = conn.getresponse()
        body = resp.read(_MAX_ERROR_BODY)
        line = f"HTTP/1.1 {resp.status} {resp.reason}"
        if 200 <= resp.status < 300:
            return resp.status, line
        return resp.status, _with_message(line, rpc_status_message(body, resp.getheader("content-type") or ""))
    finally:
        conn.close()


def compress(body: bytes, compression: str) -> bytes:
    """Gzip the body when compression is `gzip` (zlib with a gzip header; fast level, the bodies are small)."""
    if compression != "gzip":
        return body
    import zlib

    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    return c.compress(body) + c.flush()


def _with_message(status_line: str, message: str) -> str:
    return f"{status_line}: {message}" if message else status_line


def rpc_status_message(body: bytes, content_type: str) -> str:
    """The `message` of a google.rpc.Status error body (protobuf or JSON), or "" if there is none."""
    if not body:
        return ""
    try:
        if "json" in content_type.lower():
            import json

            doc = json.loads(body)
            message = doc.get("message") if isinstance(doc, dict) else None
            return message.strip()[:500] if isinstance(message, str) else ""
        if "protobuf" not in content_type.lower():
            return body[:200].decode("utf-8", "replace").strip() if content_type.startswith("text/") else ""
        # google.rpc.Status: code = 1 (varint), message = 2 (string), details = 3; read by hand (no protobuf import).
        i = 0
        while i < len(body):
            key, i = _read_varint(body, i)
            wire = key & 7
            if wire == 0:
                _, i = _read_varint(body, i)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                n, i = _read_varint(body, i)
                if key >> 3 == 2:
                    return body[i : i + n].decode("utf-8", "replace").strip()[:500]
                i += n
            else:
                return ""
    except Exception:
        return ""
    return ""


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


def describe_failure(url: str, status: int, detail: str) -> str:
    """One clear line about a failed export."""
    if status == NO_ANSWER:
        return f"could not reach {url} ({detail})"
    if status in ENDPOINT_PROBLEM:
        return f"{url} answered {detail} (check the endpoint URL and OTEL_EXPORTER_OTLP_HEADERS)"
    return f"{url} answered {detail}"


def report_rejected(url: str, status: int, detail: str, kept_as: str | None) -> None:
    """A request the endpoint will never accept as it is (400, 413, 415, ...): log once where it was kept."""
    where = (
        f"kept as {kept_as} (`glia flush --retry-rejected` resends it)"
        if kept_as is not None
        else "it could not be kept"
    )
    warn_once(f"permanent:{url}:{status}", "%s; %s", describe_failure(url, status, detail), where)
