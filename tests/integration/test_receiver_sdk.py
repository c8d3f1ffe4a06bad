"""The stock OpenTelemetry Python SDK exporting to a real receiver: the rows PostgreSQL ends up with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tests.conftest import ReceiverServer

Sql = Callable[..., list[dict[str, Any]]]

GLIA_RESOURCE = {
    "service.name": "align-reads",
    "service.instance.id": "5f0c6b1e-1111-4222-8333-944445555666",
    "host.name": "node17",
    "host.arch": "amd64",
    "os.type": "linux",
    "os.description": "Debian GNU/Linux 12",
    "process.pid": 4242,
    "process.parent_pid": 1,
    "process.executable.name": "python3",
    "process.executable.path": "/usr/bin/python3",
    "process.command_args": ["python3", "align.py", "--threads", "4"],
    "process.owner": "ada",
    "process.working_directory": "/home/ada/work",
    "process.runtime.name": "cpython",
    "process.runtime.version": "3.11.7",
    "glia.script.path": "/home/ada/work/align.py",
    "glia.script.sha256": "ab" * 32,
    "lab": "genomics",
}


@pytest.fixture
def tracer_provider(receiver: ReceiverServer) -> Iterator[TracerProvider]:
    provider = TracerProvider(resource=Resource.create(GLIA_RESOURCE))
    exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces", compression=Compression.Gzip)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def test_glia_span_flattens_into_columns(tracer_provider: TracerProvider, sql: Sql) -> None:
    tracer = tracer_provider.get_tracer("glia-test")
    with tracer.start_as_current_span("align") as span:
        span.set_attributes(
            {
                "glia.run.kind": "block",
                "process.exit.code": 0,
                "glia.cpu.user_seconds": 1.5,
                "glia.cpu.system_seconds": 0.25,
                "glia.cpu.percent": 87.5,
                "glia.memory.peak_rss_bytes": 209715200,
                "glia.memory.peak_rss_method": "hwm-reset",
                "glia.io.read_bytes": 4096,
                "glia.io.write_bytes": 8192,
                "sample": "S1",
                "reads": 1000,
            }
        )
        ctx = span.get_span_context()

    (row,) = sql("SELECT * FROM spans")
    assert row["trace_id"] == format(ctx.trace_id, "032x")
    assert row["span_id"] == format(ctx.span_id, "016x")
    assert row["name"] == "align"
    assert row["service_name"] == "align-reads"
    assert row["host_name"] == "node17"
    assert row["process_pid"] == 4242
    assert row["process_command_args"] == ["python3", "align.py", "--threads", "4"]
    assert row["process_owner"] == "ada"
    assert row["script_sha256"] == "ab" * 32
    assert row["run_kind"] == "block"
    assert row["exit_code"] == 0
    assert row["cpu_user_seconds"] == 1.5
    assert row["cpu_percent"] == 87.5
    assert row["peak_rss_bytes"] == 209715200
    assert row["peak_rss_method"] == "hwm-reset"
    assert row["io_write_bytes"] == 8192
    assert row["duration_ns"] > 0
    assert row["scope_name"] == "glia-test"
    # flattened attributes leave the bag; the rest stay, with their JSON types
    assert sql("SELECT attributes FROM spans")[0]["attributes"] == '{"reads": 1000, "sample": "S1"}'
    resource = sql("SELECT resource->>'lab' AS lab, resource ? 'host.name' AS dup FROM spans")[0]
    assert resource == {"lab": "genomics", "dup": False}

    (run,) = sql("SELECT * FROM runs")
    assert run["run_id"] == row["span_id"]
    assert run["program_name"] == "align-reads"
    assert run["user_name"] == "ada"
    assert run["cpu_seconds"] == 1.75
    assert run["max_rss_kb"] == 204800
    assert run["status"] == "ok"  # the one list of statuses: a span whose status is unset is ok
    assert run["runtime"] == "cpython 3.11.7"


def test_plain_app_spans_and_errors(tracer_provider: TracerProvider, sql: Sql) -> None:
    tracer = tracer_provider.get_tracer("plain-app")
    with tracer.start_as_current_span("request") as root:
        with tracer.start_as_current_span("db-query") as child:
            child.set_attribute("db.system", "postgresql")
        try:
            raise ValueError("boom")
        except ValueError as exc:
            root.record_exception(exc)
            root.set_status(Status(StatusCode.ERROR, "boom"))

    rows = sql("SELECT name, parent_span_id, status_code, status_message, events, attributes FROM spans ORDER BY name")
    assert [r["name"] for r in rows] == ["db-query", "request"]
    child_row, root_row = rows
    assert child_row["parent_span_id"] is not None and root_row["parent_span_id"] is None
    assert child_row["attributes"] == '{"db.system": "postgresql"}'
    assert root_row["status_code"] == 2 and root_row["status_message"] == "boom"
    event = sql("SELECT events->0 AS e FROM spans WHERE name = 'request'")[0]["e"]
    assert '"exception.type": "ValueError"' in event and '"exception.message": "boom"' in event
    # runs shows the root span of a plain app (not its children, which glia did not track)
    runs = sql("SELECT run_name, status FROM runs")
    assert runs == [{"run_name": "request", "status": "error"}]


def test_metrics_are_stored_per_point(receiver: ReceiverServer, sql: Sql) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create(GLIA_RESOURCE), metric_readers=[reader])
    meter = provider.get_meter("glia-test")
    meter.create_counter("jobs.done", unit="1").add(3, {"queue": "short"})
    meter.create_histogram("job.seconds", unit="s").record(2.5)
    data = reader.get_metrics_data()
    assert data is not None
    exporter = OTLPMetricExporter(endpoint=f"{receiver.url}/v1/metrics")
    assert exporter.export(data).name == "SUCCESS"
    exporter.export(data)  # the same points again: stored once
    provider.shutdown()

    rows = sql("SELECT metric_name, metric_type, value, count, unit, attributes, service_instance_id FROM metric_points"
               " ORDER BY metric_name")
    assert [(r["metric_name"], r["metric_type"]) for r in rows] == [("job.seconds", "histogram"), ("jobs.done", "sum")]
    hist, counter = rows
    assert counter["value"] == 3.0 and counter["attributes"] == '{"queue": "short"}'
    assert hist["count"] == 1 and hist["value"] == 2.5 and hist["unit"] == "s"
    assert counter["service_instance_id"] == GLIA_RESOURCE["service.instance.id"]
