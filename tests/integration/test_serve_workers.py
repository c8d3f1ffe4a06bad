"""`glia serve --workers 2` as a user runs it: two worker processes under one supervising parent on one port, on a
real PostgreSQL. Both serve; a killed worker is replaced while the other keeps serving; SIGTERM stops them all;
workers that cannot start make `glia serve` exit with 1."""

from __future__ import annotations

import secrets
import signal
import threading
import time
from urllib.parse import urlsplit

import httpx
import psutil

from tests.conftest import PgServer, run_sql
from tests.helpers import poll
from tests.serving import interrupt, send_span, serve_env, span_body, start_serve, stored, wait_ready

SPANS = 120
JSON = {"Content-Type": "application/json"}


def workers(pid: int) -> set[int]:
    return {child.pid for child in psutil.Process(pid).children()}


def send_many(url: str, tag: str, count: int) -> list[str]:
    """`count` one-span requests from four threads (connections); each span id once it was answered 200."""
    sent: list[str] = []

    def sender(part: int) -> None:
        for i in range(count // 4):
            while True:
                status, span_id = send_span(url, f"{tag}-{part}-{i}")
                if status == 200:
                    sent.append(span_id)
                    break
                time.sleep(0.1)  # a refused connection while a worker is replaced: sent again, as a client would

    threads = [threading.Thread(target=sender, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return sent


def test_two_workers_serve_one_port_and_a_killed_one_is_replaced(database_url: str) -> None:
    proc, url = start_serve("--workers", "2", "--database-url", database_url, env=serve_env())
    try:
        wait_ready(url, proc)
        first = poll(lambda: workers(proc.pid) if len(workers(proc.pid)) == 2 else None, 30)
        for pid in first:
            assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        sent = send_many(url, "before", SPANS)
        assert len(sent) == SPANS and all(stored(database_url, s) for s in sent)

        killed = sorted(first)[0]
        psutil.Process(killed).send_signal(signal.SIGKILL)
        replaced = poll(lambda: workers(proc.pid) if len(workers(proc.pid) - first) == 1 else None, 30)
        assert killed not in replaced and len(replaced) == 2
        wait_ready(url, proc)
        after = send_many(url, "after", SPANS)
        assert len(after) == SPANS and all(stored(database_url, s) for s in after)
    finally:
        _, err = interrupt(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert f"worker {killed} exited with -9; starting another" in err
    assert not any(psutil.pid_exists(pid) for pid in first | replaced)


def test_workers_that_cannot_start_stop_serve_with_1(database_url: str, pg_server: PgServer) -> None:
    # a role that may read the schema (the parent's check passes) but not make the temp tables each worker's pool
    # makes on its connections: every worker's lifespan fails
    role = f"glia_no_temp_{secrets.token_hex(4)}"
    database = urlsplit(database_url).path.lstrip("/")
    run_sql(pg_server.admin_url, f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        run_sql(database_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        run_sql(pg_server.admin_url, f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        parts = urlsplit(database_url)
        url = parts._replace(netloc=f"{role}:pw@{parts.hostname}:{parts.port}").geturl()
        proc, _ = start_serve("--workers", "2", "--database-url", url, env=serve_env())
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 1, err
        assert "could not start" in err, err
    finally:
        run_sql(database_url, f"DROP OWNED BY {role}")  # its grants in this database
        run_sql(pg_server.admin_url, f"DROP ROLE {role}")


def test_keep_alive_connections_end_up_shared_between_the_workers(database_url: str) -> None:
    # four connections opened at once may all be taken by one worker: the one over its share asks its clients to
    # reconnect (connection: close) until each worker holds two
    proc, url = start_serve("--workers", "2", "--database-url", database_url, env=serve_env())
    port = int(url.rsplit(":", 1)[1])
    try:
        wait_ready(url, proc)
        pids = poll(lambda: workers(proc.pid) if len(workers(proc.pid)) == 2 else None, 30)
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(4)]
        closes = 0
        for _ in range(20):
            answers = [client.post("/v1/traces", content=span_body("kept")[0], headers=JSON) for client in clients]
            assert all(a.status_code == 200 for a in answers)
            closes += sum(a.headers.get("connection") == "close" for a in answers)
        held = {pid: served(pid, port) for pid in pids}
        assert sorted(held.values()) == [2, 2], (held, closes)
        for client in clients:
            client.close()
    finally:
        interrupt(proc, signal.SIGTERM)


def served(pid: int, port: int) -> int:
    """How many established connections to `port` worker `pid` holds."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )
