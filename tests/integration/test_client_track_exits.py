"""Tracked blocks at their edges, in a real interpreter against a real receiver: `sys.exit` inside a block, a block
without a name, a malformed `TRACEPARENT`, and `force_flush` through an application's own TracerProvider."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env, run_python

EXITS = """
import sys
import glia_otel

for name, code in (("none", None), ("zero", 0), ("three", 3), ("message", "disk full")):
    try:
        with glia_otel.track(name):
            sys.exit(code)
    except SystemExit as e:
        assert e.code == code  # re-raised unchanged
"""


def test_sys_exit_inside_a_block_records_its_code(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(tmp_path, EXITS, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in sql("SELECT name, exit_code, status_code, status_message FROM spans")}
    assert rows["none"]["exit_code"] == 0 and rows["none"]["status_code"] != 2
    assert rows["zero"]["exit_code"] == 0 and rows["zero"]["status_code"] != 2, "SystemExit(0) is not a failure"
    assert rows["three"]["exit_code"] == 3 and rows["three"]["status_code"] == 2
    # a message instead of a code exits 1, as the interpreter does with it
    assert rows["message"]["exit_code"] == 1 and rows["message"]["status_code"] == 2
    assert rows["message"]["status_message"] == "SystemExit: disk full"


NAMELESS = """
import glia_otel
with glia_otel.track():
    pass
"""


def test_a_block_without_a_name_is_named_after_the_service(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    assert run_python(tmp_path, NAMELESS, env, name="prepare_reads.py").returncode == 0
    configured = "import glia_otel\nglia_otel.configure(service_name='qc')\n" + NAMELESS
    assert run_python(tmp_path, configured, env).returncode == 0
    # the service named in the environment, with no configure() call: the block is configured on first use
    assert run_python(tmp_path, NAMELESS, {**env, "OTEL_SERVICE_NAME": "align"}, name="other.py").returncode == 0
    rows = sql("SELECT name, service_name FROM spans ORDER BY start_time")
    assert rows == [
        {"name": "prepare_reads", "service_name": "prepare_reads"},
        {"name": "qc", "service_name": "qc"},
        {"name": "align", "service_name": "align"},
    ]


def test_a_malformed_traceparent_is_ignored_with_one_warning(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    script = "import glia_otel\nfor _ in range(2):\n    with glia_otel.track('step'):\n        pass\n"
    env = client_env(receiver.url, tmp_path / "spool", TRACEPARENT="00-not-a-trace-01")
    proc = run_python(tmp_path, script, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("ignoring malformed TRACEPARENT='00-not-a-trace-01'") == 1, proc.stderr
    rows = sql("SELECT trace_id, parent_span_id FROM spans")
    assert len(rows) == 2 and all(r["parent_span_id"] is None for r in rows), "each run is a root of its own"
    assert rows[0]["trace_id"] != rows[1]["trace_id"]


APP_PROVIDER = """
import os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

provider = TracerProvider()
# a long delay: only a flush sends the span before the process is gone
exporter = OTLPSpanExporter(endpoint="{url}/v1/traces")
provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60000))
trace.set_tracer_provider(provider)

import glia_otel
with glia_otel.track("flushed"):
    pass
print(glia_otel.force_flush(10000), flush=True)
os._exit(0)  # no atexit: what is not flushed by now is lost
"""


def test_force_flush_goes_through_the_applications_provider(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(tmp_path, APP_PROVIDER.format(url=receiver.url), client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n"
    assert [r["name"] for r in sql("SELECT name FROM spans")] == ["flushed"]
