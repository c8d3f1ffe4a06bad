"""Shared fixtures: a real PostgreSQL, a migrated template database cloned per test, a real uvicorn receiver.

PostgreSQL is the embedded wheel's (the same code as `glia serve`), or the server at GLIA_TEST_ADMIN_URL when set
(an admin URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres). Under CI=true, a test that would skip for a
missing tool fails instead: see `need`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from receiver.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
TEMPLATE = "glia_template"


def pytest_configure(config: pytest.Config) -> None:
    # registered here, not in pyproject.toml, beside the reason it exists (.ci/run, docs/testing.md)
    config.addinivalue_line(
        "markers",
        "no_coverage: asserts a figure of a process's own (time, memory, the modules it imports) that coverage's"
        " tracer changes; .ci/run runs it outside the coverage pass",
    )


def need(condition: object, reason: str) -> None:
    """Skip the test unless `condition`; under CI a missing tool is a failure, not a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def run_sql(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Run one query on a fresh connection and return its rows as dicts."""

    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


# --- PostgreSQL -----------------------------------------------------------------------------------------------


@dataclass
class PgServer:
    """A running PostgreSQL server; `admin_url` points at its `postgres` database."""

    admin_url: str
    embedded: Any = None

    def stop(self) -> None:
        self.embedded.stop()

    def start(self) -> None:
        self.embedded.start()


def _embedded_server(data_dir: Path) -> PgServer:
    from receiver.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(data_dir, preferred_port=free_port())
    pg.start()
    return PgServer(admin_url=pg.url(), embedded=pg)


def service_dir(prefix: str) -> Path:
    """A new directory for an embedded PostgreSQL, outside pytest's basetemp, that the service user can enter.

    As root the embedded PostgreSQL runs as the system user `glia`, and glia never widens a directory it did not
    create: like a user preparing a directory for a service, the test opens its own to traversal (not to listing).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """An empty directory for an embedded PostgreSQL, outside pytest's basetemp.

    pytest takes group and other permissions off its basetemp root whenever a session starts, and as root the
    embedded PostgreSQL runs as another user who must traverse the path: a concurrent session would lock it out.
    """
    data_dir = service_dir("glia-test-data-")
    yield data_dir
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session."""
    admin = os.environ.get("GLIA_TEST_ADMIN_URL")
    if admin:
        yield PgServer(admin_url=admin)
        return
    # not under pytest's basetemp: pytest prunes old basetemps, which would pull the data directory out from
    # under a concurrent session's server
    data_dir = service_dir("glia-test-pg-")
    server = _embedded_server(data_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_server: PgServer) -> str:
    """A database migrated to head, the template every test database is cloned from."""
    from receiver.migrate import upgrade

    run_sql(pg_server.admin_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    run_sql(pg_server.admin_url, f'CREATE DATABASE "{TEMPLATE}"')
    url = with_database(pg_server.admin_url, TEMPLATE)
    upgrade(url)
    return url


def clone_database(pg_server: PgServer, template_url: str) -> str:
    """A new database cloned from the migrated template; returns its URL."""
    del template_url  # the template must exist; the fixture dependency makes sure of it
    name = f"test_{uuid.uuid4().hex[:12]}"
    run_sql(pg_server.admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return with_database(pg_server.admin_url, name)


@pytest.fixture
def database_url(pg_server: PgServer, template_url: str) -> Iterator[str]:
    """A fresh migrated database for this test, dropped afterwards."""
    url = clone_database(pg_server, template_url)
    yield url
    name = url.rpartition("/")[2]
    run_sql(pg_server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sql(database_url: str) -> Callable[..., list[dict[str, Any]]]:
    """`sql(query, *args)` runs against this test's database and returns rows as dicts."""

    def query(q: str, *args: Any) -> list[dict[str, Any]]:
        return run_sql(database_url, q, *args)

    return query


@pytest.fixture
def private_pg(template_url: str) -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own, its `glia` database migrated, that the test may stop and start."""
    del template_url  # migrations must work before a private server is worth making
    from receiver.migrate import upgrade

    data_dir = service_dir("glia-test-private-pg-")
    server = _embedded_server(data_dir)
    upgrade(with_database(server.admin_url, "glia"))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the receiver ---------------------------------------------------------------------------------------------


@dataclass
class ReceiverServer:
    """A real uvicorn serving the receiver app in a thread, on a fixed loopback port across restarts."""

    database_url: str
    overrides: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import uvicorn

        from receiver import server
        from receiver.app import create_app

        settings = Settings(database_url=self.database_url, host="127.0.0.1", port=self.port, **self.overrides)
        # the configuration `glia serve` runs, so the tests exercise its timeouts, bounds and protocol
        self._server = uvicorn.Server(server.config(create_app(settings, self.database_url), settings))
        self._thread = threading.Thread(target=self._server.run, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"receiver on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=20)
            self._server = None
            self._thread = None


@pytest.fixture
def receiver_factory(database_url: str) -> Iterator[Callable[..., ReceiverServer]]:
    """Start receivers with setting overrides: `receiver_factory(max_body_bytes=1024)`."""
    started: list[ReceiverServer] = []

    def make(database: str | None = None, **overrides: Any) -> ReceiverServer:
        server = ReceiverServer(database or database_url, overrides)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def receiver(receiver_factory: Callable[..., ReceiverServer]) -> ReceiverServer:
    """A real receiver on a loopback port, storing into this test's database."""
    return receiver_factory()


# --- the collector --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def otelcol_bin() -> Path:
    """The test collector binary (skips locally, fails under CI, when it has not been built)."""
    from tests.collector import collector_binary  # tests/collector.py imports this module

    return collector_binary()
