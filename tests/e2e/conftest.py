"""End-to-end fixtures: the built collector in front of a real receiver, clients sending through it.

Every wait here is a bounded poll that fails with what it saw ("after 60 s PostgreSQL has 993 of 1000 spans").
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from tests.collector import Collector, loopback_env

Sql = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def collector_factory(otelcol_bin: Path, tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """`collector_factory(receiver_url, **GLIA_COLLECTOR_overrides)`: a collector on loopback ports, its own queue."""
    started: list[Collector] = []

    def make(receiver_url: str, **overrides: str) -> Collector:
        n = len(started)
        env = loopback_env(tmp_path / f"queue{n}", receiver_url, **overrides)
        collector = Collector(otelcol_bin, env, tmp_path / f"collector{n}.log")
        started.append(collector)
        return collector

    yield make
    for collector in started:
        collector.stop(signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    """Poll `check` every 0.1 s; after `timeout` seconds fail with `describe()` (what was seen instead)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s {describe()}")
        time.sleep(0.1)


def wait_for_spans(
    sql: Sql, expected: int, timeout: float = 60.0, where: str = "TRUE", collector: Collector | None = None
) -> None:
    """Wait until `spans` has `expected` rows matching `where` (a constant SQL condition).

    With `collector`, a failure also quotes the batches the collector says it dropped (a non-retryable answer).
    """
    seen = [0]

    def check() -> bool:
        seen[0] = sql(f"SELECT count(*) AS n FROM spans WHERE {where}")[0]["n"]
        return bool(seen[0] >= expected)

    def describe() -> str:
        message = f"PostgreSQL has {seen[0]} of {expected} spans"
        if collector is not None:
            dropped = [line for line in collector.log(tail=10_000_000).splitlines() if "Dropping data" in line]
            message += f"; the collector logged {len(dropped)} dropped batches" + "".join(
                f"\n  {line[line.find('error') :]}" for line in dropped[-5:]
            )
        return message

    wait_until(check, timeout, describe)


def assert_exactly_once(sql: Sql, names: Sequence[str], where: str = "TRUE") -> None:
    """`spans` (rows matching `where`) holds each of `names` exactly once: no span lost, none duplicated."""
    (counts,) = sql(
        f"SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS distinct_ids,"
        f" count(DISTINCT span_id) AS distinct_span_ids FROM spans WHERE {where}"
    )
    assert counts == {"n": len(names), "distinct_ids": len(names), "distinct_span_ids": len(names)}, counts
    stored = sorted(r["name"] for r in sql(f"SELECT name FROM spans WHERE {where}"))
    missing = sorted(set(names) - set(stored))
    extra = sorted(set(stored) - set(names))
    assert stored == sorted(names), f"missing {missing[:10]} ({len(missing)}), unexpected {extra[:10]} ({len(extra)})"


class RecordingExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, remembering each export's result and span count."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[tuple[SpanExportResult, int]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        self.results.append((result, len(spans)))
        return result

    def exported(self) -> int:
        """Spans the endpoint acknowledged with a 2xx."""
        return sum(n for result, n in self.results if result is SpanExportResult.SUCCESS)

    def failed(self) -> int:
        return sum(n for result, n in self.results if result is not SpanExportResult.SUCCESS)


@dataclass
class SdkClient:
    """A stock OpenTelemetry SDK setup: TracerProvider + BatchSpanProcessor + OTLPSpanExporter (gzip protobuf)."""

    endpoint: str
    resource: dict[str, Any] = field(default_factory=lambda: {"service.name": "e2e-sdk"})
    provider: TracerProvider = field(init=False)
    exporter: RecordingExporter = field(init=False)

    def __post_init__(self) -> None:
        self.provider = TracerProvider(resource=Resource.create(self.resource))
        self.exporter = RecordingExporter(endpoint=f"{self.endpoint}/v1/traces", compression=Compression.Gzip)
        # a queue big enough that the SDK never drops a span in these tests
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exporter, max_queue_size=20_000, schedule_delay_millis=100)
        )

    def runs(self, names: Sequence[str]) -> None:
        """One root span (one run, its own trace) per name."""
        tracer = self.provider.get_tracer("e2e")
        for name in names:
            with tracer.start_as_current_span(name) as span:
                span.set_attribute("glia.run.kind", "block")
                span.set_attribute("process.exit.code", 0)

    def flush_all(self, expected: int) -> None:
        """Flush, and assert the endpoint acknowledged exactly `expected` spans and refused none."""
        assert self.provider.force_flush(timeout_millis=60_000), "the SDK did not flush within 60 s"
        assert (self.exporter.exported(), self.exporter.failed()) == (expected, 0), self.exporter.results

    def shutdown(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def sdk_client() -> Iterator[Callable[..., SdkClient]]:
    """`sdk_client(endpoint, resource=...)`: SDK setups shut down after the test."""
    made: list[SdkClient] = []

    def make(endpoint: str, **kwargs: Any) -> SdkClient:
        client = SdkClient(endpoint, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()
