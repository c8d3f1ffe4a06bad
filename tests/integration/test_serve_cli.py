"""`glia serve` and `glia migrate` as a user runs them: real processes, the embedded default, psql on the URL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver.embedded import EmbeddedPostgres, bin_dir
from tests.conftest import PgServer, free_port, run_sql, with_database

GLIA = str(Path(sys.executable).parent / "glia")

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


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"glia serve exited with {proc.returncode}: {err}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("glia serve did not become ready")


@pytest.fixture
def serve(pg_data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port = free_port()
    data_dir = pg_data_dir / "glia-data"
    env = {k: v for k, v in os.environ.items() if k != "GLIA_DATABASE_URL"}
    proc = subprocess.Popen(
        [GLIA, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}", data_dir
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

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    match = re.search(r"embedded PostgreSQL: (postgresql://\S+)", out)
    assert match, out
    database_url = match.group(1)
    assert (data_dir / "database-url").read_text().strip() == database_url
    assert not EmbeddedPostgres(data_dir).running(), "Ctrl-C must stop the embedded PostgreSQL"

    # the user's next step: psql on the printed URL (PostgreSQL started again for the look)
    EmbeddedPostgres(data_dir).start()
    psql = subprocess.run(
        [str(bin_dir() / "psql"), database_url, "-At", "-c", "SELECT run_name, program_name, attributes FROM runs"],
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
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_sigterm_stops_the_receiver_and_the_embedded_postgres(
    serve: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, url, data_dir = serve
    wait_ready(url, proc)
    assert EmbeddedPostgres(data_dir).running()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "embedded PostgreSQL stopped" in err
    assert not EmbeddedPostgres(data_dir).running(), "SIGTERM must stop the embedded PostgreSQL too"
