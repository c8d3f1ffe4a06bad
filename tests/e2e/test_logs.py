"""Logs end to end: the stock OpenTelemetry Python SDK (LoggingHandler + OTLP/HTTP log exporter) -> the built
collector (config.yaml's logs pipeline) -> the receiver -> `log_records` in PostgreSQL, linked to the run (span) the
records were written in; and through a receiver outage, every record stored exactly once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.collector import Collector
from tests.conftest import ReceiverServer
from tests.e2e.conftest import Sql, wait_for_spans, wait_until

# The SDK's own handler is deprecated in favour of a package this project does not install; it is still what an
# application using the SDK has.
pytestmark = pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")


@contextmanager
def sdk_logging(endpoint: str, service: str) -> Iterator[tuple[logging.Logger, TracerProvider]]:
    """A logger whose records go through the SDK's LoggingHandler and OTLP/HTTP log exporter (gzip protobuf), and a
    tracer provider sending spans to the same endpoint; both flushed and shut down at the end."""
    resource = Resource.create({"service.name": service})
    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", compression=Compression.Gzip), schedule_delay_millis=100
        )
    )
    traces = TracerProvider(resource=resource)
    traces.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    logger = logging.getLogger(f"e2e.{service}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=logs))
    try:
        yield logger, traces
    finally:
        assert logs.force_flush(timeout_millis=30_000) and traces.force_flush(timeout_millis=30_000)
        logger.handlers.clear()
        logs.shutdown()
        traces.shutdown()


def wait_for_records(sql: Sql, service: str, expected: int, timeout: float = 60.0) -> None:
    seen = [0]

    def check() -> bool:
        seen[0] = sql("SELECT count(*) AS n FROM log_records WHERE service_name = $1", service)[0]["n"]
        return bool(seen[0] >= expected)

    wait_until(check, timeout, lambda: f"PostgreSQL has {seen[0]} of {expected} log records of {service}")


def test_sdk_logs_through_the_collector_are_stored_and_linked_to_their_run(
    receiver: ReceiverServer, collector_factory: Callable[..., Collector], sql: Sql
) -> None:
    collector = collector_factory(receiver.url)
    with sdk_logging(collector.http_url, "e2e-logs") as (logger, traces):
        logger.info("starting without a span")
        with traces.get_tracer("e2e").start_as_current_span("train") as span:
            span.set_attribute("glia.run.kind", "block")
            logger.warning("loss is %s", "nan")
            try:
                raise ValueError("bad batch 17")
            except ValueError:
                logger.exception("step failed")
        run_id = format(span.get_span_context().span_id, "016x")
    wait_for_records(sql, "e2e-logs", 3)
    wait_for_spans(sql, 1, where="name = 'train'", collector=collector)
    rows = sql(
        "SELECT l.body #>> '{}' AS body, l.severity_text, l.span_id, l.attributes, s.name AS run_name"
        " FROM log_records l LEFT JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id"
        " WHERE l.service_name = 'e2e-logs' ORDER BY l.time"
    )
    assert [(r["body"], r["severity_text"]) for r in rows] == [
        ("starting without a span", "INFO"),
        ("loss is nan", "WARN"),
        ("step failed", "ERROR"),
    ]
    assert [r["run_name"] for r in rows] == [None, "train", "train"]
    assert rows[1]["span_id"] == run_id
    attributes = json.loads(rows[2]["attributes"])
    assert attributes["exception.type"] == "ValueError" and attributes["exception.message"] == "bad batch 17"
    assert "bad batch 17" in attributes["exception.stacktrace"]


def test_records_queued_through_a_receiver_outage_are_stored_once(
    receiver: ReceiverServer, collector_factory: Callable[..., Collector], sql: Sql
) -> None:
    collector = collector_factory(receiver.url)
    receiver.stop()
    with sdk_logging(collector.http_url, "e2e-outage") as (logger, _):
        for i in range(200):
            logger.info("line %d", i)
    # the collector holds them in its queue, retrying; the receiver comes back on the same port
    receiver.start()
    wait_for_records(sql, "e2e-outage", 200)
    (counts,) = sql(
        "SELECT count(*) AS n, count(DISTINCT body) AS bodies FROM log_records WHERE service_name = 'e2e-outage'"
    )
    assert counts == {"n": 200, "bodies": 200}
