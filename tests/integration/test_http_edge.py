"""The receiver's HTTP edge against raw sockets: idle timeouts, the connection bound and the open-files limit, the
Host check, and the logging of refused authentication. Everything runs against the real uvicorn receiver."""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from google.rpc import code_pb2, status_pb2

from tests.conftest import ReceiverServer
from tests.helpers import Sql, create_key, span_body

JSON_HEADERS = b"Content-Type: application/json\r\n"


@contextlib.contextmanager
def raw(receiver: ReceiverServer, timeout: float = 10.0) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=timeout) as sock:
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def still_open(sock: socket.socket) -> bool:
    """True when the server has neither closed the connection nor sent anything on it."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # returns b"" once closed, or what was sent
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


def server_connections(receiver: ReceiverServer) -> int:
    return len(receiver._server.server_state.connections)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# --- item 4: time without progress, connections, descriptors -----------------------------------------------------


def test_trickled_headers_are_closed_once_they_stop_coming(
    receiver_factory: Callable[..., ReceiverServer], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = receiver_factory(request_idle_timeout=1.0)
    with raw(receiver) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\n")
        # a byte every 0.4 s for over three idle timeouts: slow, but making progress, so the connection stays
        for byte in b"Host: 127":
            time.sleep(0.4)
            sock.sendall(bytes([byte]))
        assert still_open(sock), "closed while the headers were still coming"
        last = time.monotonic()
        response = read_until_closed(sock)
        waited = time.monotonic() - last
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert b"connection: close" in response.lower()
    assert 0.9 <= waited < 3.0, f"closed {waited:.2f} s after the last byte; the idle timeout is 1 s"
    assert httpx.get(f"{receiver.url}/healthz").status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "glia.server"]
    assert any("no bytes for 1 s while reading the request headers" in m and "127.0.0.1" in m for m in messages)


def test_a_connection_that_sends_nothing_is_closed(receiver_factory: Callable[..., ReceiverServer]) -> None:
    receiver = receiver_factory(request_idle_timeout=1.0)
    with raw(receiver) as sock:
        opened = time.monotonic()
        assert read_until_closed(sock) == b""  # no 408: browsers open connections ahead of need
        waited = time.monotonic() - opened
    assert 0.9 <= waited < 3.0, f"closed after {waited:.2f} s; the idle timeout is 1 s"


def test_a_stalled_body_is_closed_and_nothing_is_stored(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(request_idle_timeout=1.0)
    body = span_body()
    with raw(receiver) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n" + JSON_HEADERS
            + b"Content-Length: %d\r\n\r\n" % len(body) + body[:40]
        )  # fmt: skip
        sent = time.monotonic()
        response = read_until_closed(sock)
        waited = time.monotonic() - sent
    # no 408 here: an exporter retries a dropped connection, while a 408 is final for the Collector
    assert response == b""
    assert 0.9 <= waited < 3.0, f"closed after {waited:.2f} s; the idle timeout is 1 s"
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
    assert httpx.get(f"{receiver.url}/healthz").status_code == 200


def test_a_slow_body_that_keeps_coming_is_stored(receiver_factory: Callable[..., ReceiverServer], sql: Sql) -> None:
    receiver = receiver_factory(request_idle_timeout=1.0)
    body = span_body()
    pieces = [body[i : i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
    started = time.monotonic()
    with raw(receiver) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n" + JSON_HEADERS)
        time.sleep(0.6)
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        for piece in pieces:
            time.sleep(0.6)
            sock.sendall(piece)
        response = sock.recv(65536)
    assert time.monotonic() - started > 4.0  # over four idle timeouts in all
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert sql("SELECT name FROM spans") == [{"name": "keyed-run"}]


def test_headers_are_bounded_in_size(receiver_factory: Callable[..., ReceiverServer]) -> None:
    receiver = receiver_factory()
    with raw(receiver) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(ConnectionError):  # the server may close before every byte is taken
            for _ in range(100):
                sock.sendall(b"X-Padding: " + b"a" * 1000 + b"\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]


STALLER = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if i % 2:  # headers done, body stalled
        s.sendall(b"POST /v1/traces HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\n"
                  b"Content-Length: 1000\\r\\n\\r\\n{")
    else:  # headers stalled
        s.sendall(b"GET /readyz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Slow: ")
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def stalled_connections(port: int, n: int) -> Iterator[None]:
    """`n` connections from another process (its own descriptors), half stalled in the headers, half in the body."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STALLER, str(port), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=10)


@contextlib.contextmanager
def open_files_soft_limit(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_readyz_and_ingest_answer_while_300_stalled_connections_are_open(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    # 256 is macOS's default soft limit, and a service's is often 1024: the receiver must raise its own
    with open_files_soft_limit(256):
        receiver = receiver_factory(request_idle_timeout=60.0)
        with stalled_connections(receiver.port, 300):
            wait_for(
                lambda: server_connections(receiver) >= 300,
                10,
                f"the receiver took only {server_connections(receiver)} of the 300 connections",
            )
            ready = httpx.get(f"{receiver.url}/readyz", timeout=5)
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
            posted = httpx.post(
                f"{receiver.url}/v1/traces", content=span_body(), headers={"content-type": "application/json"}
            )
            assert posted.status_code == 200
            assert sql("SELECT name FROM spans") == [{"name": "keyed-run"}]


def test_connections_past_the_limit_get_503_until_others_close(
    receiver_factory: Callable[..., ReceiverServer],
) -> None:
    receiver = receiver_factory(max_connections=20, request_idle_timeout=60.0)
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(raw(receiver)) for _ in range(20)]
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        wait_for(lambda: server_connections(receiver) == 20, 5, "the 20 connections were not taken")
        with raw(receiver) as extra:
            refused = read_until_closed(extra)  # answered at once, before any request: nothing is read from it
        head, _, message = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), refused
        assert b"retry-after: " in head.lower()
        assert b"GLIA_MAX_CONNECTIONS" in message and b"20" in message
        assert all(still_open(sock) for sock in held)
        for sock in held[:5]:
            sock.close()
        wait_for(lambda: server_connections(receiver) <= 15, 5, "closed connections were still counted")
        assert httpx.get(f"{receiver.url}/healthz").status_code == 200


def test_glia_serve_runs_the_same_edge(database_url: str) -> None:
    from tests.serving import interrupt, serve_env, start_serve, wait_ready

    proc, url = start_serve("--database-url", database_url, env=serve_env(GLIA_REQUEST_IDLE_TIMEOUT="1"))
    try:
        wait_ready(url, proc)
        port = int(url.rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            started = time.monotonic()
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - started < 3.0
        refused = httpx.get(url + "/api/runs", headers={"host": "rebind.example"})
        assert refused.status_code == 403 and "GLIA_ALLOWED_HOSTS" in refused.json()["detail"]
        assert "frame-ancestors 'none'" in httpx.get(url + "/").headers["content-security-policy"]
    finally:
        interrupt(proc)


# --- item 8: the Host header ---------------------------------------------------------------------------------------


def test_bound_to_loopback_only_loopback_names_are_accepted(receiver: ReceiverServer, sql: Sql) -> None:
    port = receiver.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "127.0.0.2", "LocalHost."):
        response = httpx.get(f"{receiver.url}/api/runs", headers={"host": host})
        assert response.status_code == 200, (host, response.text)

    # what a DNS-rebinding page sends: its own name, now resolving to 127.0.0.1
    for path in ("/api/runs", "/", "/docs", "/openapi.json", "/readyz"):
        refused = httpx.get(f"{receiver.url}{path}", headers={"host": f"rebind.example:{port}"})
        assert refused.status_code == 403, path
        detail = refused.json()["detail"]
        assert "rebind.example" in detail and "GLIA_ALLOWED_HOSTS" in detail and "127.0.0.1" in detail

    # OTLP paths answer in the OTLP shape, in the request's content type, and store nothing
    pb = httpx.post(
        f"{receiver.url}/v1/traces",
        content=b"",
        headers={"host": "rebind.example", "content-type": "application/x-protobuf"},
    )
    assert pb.status_code == 403 and pb.headers["content-type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(pb.content)
    assert status.code == code_pb2.PERMISSION_DENIED and "GLIA_ALLOWED_HOSTS" in status.message
    headers = {"host": "rebind.example", "content-type": "application/json"}
    js = httpx.post(f"{receiver.url}/v1/traces", content=span_body(), headers=headers)
    assert js.status_code == 403 and js.json()["code"] == code_pb2.PERMISSION_DENIED
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]


def test_allowed_hosts_add_names_to_a_loopback_receiver(
    receiver_factory: Callable[..., ReceiverServer], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = receiver_factory(allowed_hosts="glia.example.org, *.corp.example")
    url = f"{receiver.url}/healthz"
    for host in ("glia.example.org", "GLIA.example.org:443", "node1.corp.example", "localhost", "127.0.0.1"):
        assert httpx.get(url, headers={"host": host}).status_code == 200, host
    for host in ("example.org", "corp.example", "evil.glia.example.org", "glia.example.org.evil"):
        assert httpx.get(url, headers={"host": host}).status_code == 403, host
    refusals = [r for r in caplog.records if r.name == "glia.guard" and r.levelno == logging.WARNING]
    assert refusals and "example.org" in refusals[0].getMessage() and "127.0.0.1" in refusals[0].getMessage()


# --- item 13: refused authentication is logged, rate-limited, without the key --------------------------------------


def test_failed_authentication_is_logged_once_per_interval_without_the_key(
    receiver_factory: Callable[..., ReceiverServer],
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ingest = create_key(capsys, database_url, "node-1", "ingest")
    read = create_key(capsys, database_url, "dashboard", "read")
    receiver = receiver_factory(key_cache_seconds=0, rejection_log_seconds=1.0)
    traces = f"{receiver.url}/v1/traces"
    guessed = "glia_" + "guessedsecretvalue" * 2

    def post(token: str | None) -> int:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.post(traces, content=span_body(), headers=headers).status_code

    with caplog.at_level(logging.INFO):
        assert [post(None), post(guessed), post(read), post(guessed), post(guessed)] == [401, 401, 403, 401, 401]
        assert post(ingest) == 200
        first = [r for r in caplog.records if r.name == "glia.auth" and r.levelno == logging.WARNING]
        assert len(first) == 1, [r.getMessage() for r in first]
        message = first[0].getMessage()
        assert "127.0.0.1" in message and "/v1/traces" in message and "401" in message
        time.sleep(1.1)
        assert httpx.get(f"{receiver.url}/api/runs", headers={"authorization": f"Bearer {ingest}"}).status_code == 403
    warnings = [r.getMessage() for r in caplog.records if r.name == "glia.auth" and r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "4 more" in warnings[1] and "127.0.0.1" in warnings[1]
    assert "/api/runs" in warnings[2] and "403" in warnings[2]
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in (ingest, read, guessed):
        # not the key, nor its stored prefix, nor any 8 characters of its secret part
        assert all(secret[i : i + 8] not in logged for i in range(len("glia_"), len(secret) - 7)), secret
