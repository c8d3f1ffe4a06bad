"""Several glia processes on one data directory, and an embedded PostgreSQL that dies under a running receiver.

Real `glia serve` processes on a private data directory: one serve at a time, commands that never stop a PostgreSQL
another process is using, and a postmaster killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.cli import database
from receiver.embedded import EmbeddedPostgres
from receiver.settings import Settings
from tests.conftest import run_sql
from tests.serving import embedded_url, interrupt, send_span, serve_env, start_serve, stored, wait_exit, wait_ready


@pytest.fixture
def data_dir(pg_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data directory of this test's own; its PostgreSQL is stopped afterwards whatever the test left."""
    monkeypatch.delenv("GLIA_DATABASE_URL", raising=False)
    path = pg_data_dir / "glia-data"
    yield path
    EmbeddedPostgres(path).stop()


@contextlib.contextmanager
def serving(data_dir: Path, **env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = start_serve("--data-dir", str(data_dir), env=serve_env(**env))
    try:
        wait_ready(url, proc)
        yield proc, url
    finally:
        interrupt(proc)


def postmaster_pid(data_dir: Path) -> int:
    """The running postmaster's pid, read as PostgreSQL writes it."""
    return int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def wait_stored(url: str, database_url: str, timeout: float) -> tuple[bool, float]:
    """Send spans until one is stored; whether one was, and after how many seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status, span_id = send_span(url, "after-the-crash")
        if status == 200 and stored(database_url, span_id):
            return True, time.monotonic() - start
        time.sleep(0.25)
    return False, timeout


def test_a_second_serve_on_the_same_data_directory_refuses_and_the_first_keeps_storing(data_dir: Path) -> None:
    with serving(data_dir) as (first, url):
        second, _ = start_serve("--data-dir", str(data_dir))
        wait_exit(second, 30)
        _, err = interrupt(second)  # on refusal it has exited already; otherwise this stops it as Ctrl-C would

        assert second.returncode == 1, f"the second glia serve must refuse: {err}"
        assert f"another glia serve (pid {first.pid}, {url}) is running on the data directory {data_dir}" in err
        status, span_id = send_span(url, "after-the-second-serve")
        assert status == 200
        assert stored(embedded_url(data_dir), span_id)
        assert EmbeddedPostgres(data_dir).running()
    assert first.returncode == 0
    assert not EmbeddedPostgres(data_dir).running()


def test_a_command_never_stops_the_postgres_a_serve_attached_to(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    with database(settings, migrate=True):  # a `glia runs`: PostgreSQL started on demand for it
        proc, url = start_serve("--data-dir", str(data_dir))
        try:
            wait_ready(url, proc)
        except BaseException:
            interrupt(proc)
            raise
    # the command is done, the receiver that attached meanwhile is still using PostgreSQL
    try:
        assert EmbeddedPostgres(data_dir).running()
        status, span_id = send_span(url, "after-the-command")
        assert status == 200
        assert stored(embedded_url(data_dir), span_id)
    finally:
        _, err = interrupt(proc)
    assert proc.returncode == 0, err
    assert not EmbeddedPostgres(data_dir).running(), "the receiver, last out, stops it"


def test_the_last_command_out_stops_the_postgres_started_for_commands(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    with contextlib.ExitStack() as first, contextlib.ExitStack() as second:
        url = first.enter_context(database(settings, migrate=False))  # starts PostgreSQL
        second.enter_context(database(settings, migrate=False))  # a second command, attached to it
        first.close()  # the command that started it ends first
        assert EmbeddedPostgres(data_dir).running(), "a command must not stop PostgreSQL another is using"
        assert run_sql(url, "SELECT 1 AS one") == [{"one": 1}]
    assert not EmbeddedPostgres(data_dir).running(), "the last one out stops what glia started on demand"

    # a PostgreSQL started by other means (by hand, or a serve killed with SIGKILL long ago) is left alone
    EmbeddedPostgres(data_dir).start()
    with database(settings, migrate=False):
        pass
    assert EmbeddedPostgres(data_dir).running()


def test_serve_restarts_its_postgres_after_the_postmaster_is_killed(data_dir: Path) -> None:
    proc, url = start_serve("--data-dir", str(data_dir))
    try:
        wait_ready(url, proc)
        status, _ = send_span(url, "before-the-crash")
        assert status == 200
        pid = postmaster_pid(data_dir)
        os.kill(pid, signal.SIGKILL)

        recovered, _ = wait_stored(url, embedded_url(data_dir), timeout=45)
        assert recovered, "spans must be stored again once the receiver has restarted its PostgreSQL"
        assert postmaster_pid(data_dir) != pid
    finally:
        _, err = interrupt(proc)
    assert proc.returncode == 0, err
    assert f"embedded PostgreSQL died (postmaster pid {pid})" in err and "embedded PostgreSQL restarted" in err
    assert not EmbeddedPostgres(data_dir).running()


def test_serve_exits_non_zero_when_its_postgres_dies_and_no_restart_is_allowed(data_dir: Path) -> None:
    proc, url = start_serve("--data-dir", str(data_dir), env=serve_env(GLIA_EMBEDDED_RESTARTS="0"))
    try:
        wait_ready(url, proc)
        pid = postmaster_pid(data_dir)
        os.kill(pid, signal.SIGKILL)
        wait_exit(proc, 30)
    finally:
        _, err = interrupt(proc)
    assert proc.returncode == 1, "a receiver without its database must exit non-zero so a supervisor can act"
    assert "glia serve: the embedded PostgreSQL died" in err


def test_serve_exits_non_zero_when_restarting_its_postgres_fails(data_dir: Path) -> None:
    proc, url = start_serve("--data-dir", str(data_dir), env=serve_env(GLIA_EMBEDDED_RESTARTS="1"))
    squatter = socket.socket()
    # as PostgreSQL binds: the receiver's closed connections in TIME_WAIT do not keep the port busy
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        wait_ready(url, proc)
        port = int((data_dir / "port").read_text())
        os.kill(postmaster_pid(data_dir), signal.SIGKILL)
        # another program takes the port before the restart (1 s later): the restart cannot succeed there
        deadline = time.monotonic() + 1
        while True:
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        squatter.listen()
        wait_exit(proc, 30)
    finally:
        squatter.close()
        _, err = interrupt(proc)
    assert proc.returncode == 1, err
    assert f"port {port} is taken" in err
    assert "glia serve: the embedded PostgreSQL died and 1 restarts" in err
