"""`glia serve` and `glia migrate` as a user runs them: real processes, the embedded default, psql on the URL."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from receiver.embedded import EmbeddedPostgres, bin_dir
from tests.conftest import PgServer, free_port, run_sql, with_database
from tests.serving import GLIA, embedded_url, interrupt, send_span, serve_env, start_serve, stored, wait_ready

SEND_SPAN = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
with trace.get_tracer("quickstart").start_as_current_span("hello-glia") as span:
    span.set_attribute("sample", "S1")
provider.shutdown()
"""


@pytest.fixture
def serve(pg_data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    data_dir = pg_data_dir / "glia-data"
    proc, url = start_serve("--data-dir", str(data_dir))
    try:
        yield proc, url, data_dir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        EmbeddedPostgres(data_dir).stop()


def test_serve_embedded_default_stores_a_stock_sdk_span_visible_in_psql(
    serve: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, url, data_dir = serve
    wait_ready(url, proc)
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "quickstart-demo",
    }
    subprocess.run([sys.executable, "-c", SEND_SPAN], env=env, check=True, timeout=60)

    out, err = interrupt(proc)
    assert proc.returncode == 0, err
    assert not EmbeddedPostgres(data_dir).running(), "Ctrl-C must stop the embedded PostgreSQL"

    # the banner names the file with the full URL, and never prints the password itself
    password = (data_dir / "password").read_text().strip()
    assert password not in out and password not in err
    assert f"postgresql://glia:***@127.0.0.1:{(data_dir / 'port').read_text().strip()}/glia" in out
    assert f"full URL in {data_dir / 'database-url'}" in out

    # the user's next step, as the README says: psql on the URL in that file (PostgreSQL started again for the look)
    EmbeddedPostgres(data_dir).start()
    psql = subprocess.run(
        [
            str(bin_dir() / "psql"),
            embedded_url(data_dir),
            "-At",
            "-c",
            "SELECT run_name, program_name, attributes FROM runs",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert psql.stdout.strip() == 'hello-glia|quickstart-demo|{"sample": "S1"}'


def test_serve_refuses_a_database_behind_until_migrated(pg_server: PgServer) -> None:
    run_sql(pg_server.admin_url, 'DROP DATABASE IF EXISTS "behind" WITH (FORCE)')
    run_sql(pg_server.admin_url, 'CREATE DATABASE "behind"')
    database_url = with_database(pg_server.admin_url, "behind")
    port = free_port()
    argv = [GLIA, "serve", "--port", str(port), "--database-url", database_url]

    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "run 'glia migrate'" in refused.stderr

    migrated = subprocess.run(
        [GLIA, "migrate", "--database-url", database_url], capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stderr
    assert run_sql(database_url, "SELECT count(*) AS n FROM runs") == [{"n": 0}]

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        interrupt(proc)
    assert proc.returncode == 0


def test_sigterm_stops_the_receiver_and_the_embedded_postgres(
    serve: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, url, data_dir = serve
    wait_ready(url, proc)
    assert EmbeddedPostgres(data_dir).running()
    _, err = interrupt(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    assert "embedded PostgreSQL stopped" in err
    assert not EmbeddedPostgres(data_dir).running(), "SIGTERM must stop the embedded PostgreSQL too"


# --- secrets: a password in a database URL is never printed or logged ---------------------------------------------


@pytest.fixture
def secret_database(pg_server: PgServer) -> Iterator[tuple[str, str, str]]:
    """A migrated database owned by a role with a password of its own; yields its URL, the role and the password."""
    from receiver.migrate import upgrade

    role = f"serve_{secrets.token_hex(4)}"
    password = f"PW{secrets.token_hex(12)}"
    admin = urlsplit(pg_server.admin_url)
    # identifiers and the password are made here, not taken from input
    run_sql(pg_server.admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    run_sql(pg_server.admin_url, f"CREATE DATABASE {role} OWNER {role}")
    url = f"postgresql://{role}:{password}@{admin.hostname}:{admin.port}/{role}"
    upgrade(url)
    try:
        yield url, role, password
    finally:
        run_sql(pg_server.admin_url, f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
        run_sql(pg_server.admin_url, f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("given_as", ["--database-url", "GLIA_DATABASE_URL"])
def test_serve_never_prints_the_password_of_its_database_url(
    secret_database: tuple[str, str, str], given_as: str
) -> None:
    url, role, password = secret_database
    if given_as == "--database-url":
        proc, base = start_serve("--database-url", url, "--log-level", "debug")
    else:
        proc, base = start_serve("--log-level", "debug", env=serve_env(GLIA_DATABASE_URL=url))
    try:
        wait_ready(base, proc)
        status, span_id = send_span(base, "secret-test")
        assert status == 200
        assert stored(url, span_id)
    finally:
        out, err = interrupt(proc)
    assert proc.returncode == 0, err
    assert password not in out and password not in err
    admin = urlsplit(url)
    assert f"PostgreSQL: postgresql://{role}:***@{admin.hostname}:{admin.port}/{role}" in out
    # where the full URL is, for the psql line
    assert given_as in out


UNREACHABLE = "postgresql://glia:pw-0a1b2c3d@127.0.0.1:{port}/glia"
# An unencoded '/' in the password: the URL parser takes the part before it for a port and says so in its error.
UNENCODED = "postgresql://glia:pw-0a1b2c3d/e4f5a6b7@127.0.0.1:{port}/glia"
PORT_OUT_OF_RANGE = "postgresql://glia:pw-0a1b2c3d@127.0.0.1:99999/glia"


@pytest.mark.parametrize(
    ("command", "url", "says"),
    [
        ("serve", UNREACHABLE, "cannot reach PostgreSQL at postgresql://glia:***@127.0.0.1:"),
        ("serve", UNENCODED, "percent-encoded"),
        ("serve", PORT_OUT_OF_RANGE, "port 99999"),
        ("migrate", UNENCODED, "percent-encoded"),
        ("migrate", PORT_OUT_OF_RANGE, "port 99999"),
        ("runs", UNENCODED, "percent-encoded"),
    ],
)
def test_database_errors_never_print_the_password(command: str, url: str, says: str) -> None:
    url = url.format(port=free_port())
    result = subprocess.run(
        [GLIA, command, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=serve_env(GLIA_CONNECT_TIMEOUT="1"),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for part in ("pw-0a1b2c3d", "e4f5a6b7"):
        assert part not in output
    assert "Traceback" not in output
    assert f"glia {command}: " in result.stderr and says in result.stderr, result.stderr
