"""The collector configs, run on a real collector built from collector-config/builder-config.yaml.

The binary is $GLIA_OTELCOL_BIN, else what `bash collector-config/build.sh` leaves in .build/collector/;
without it these tests skip (fail under CI=true). The receiver here is a stand-in HTTP server that records
what the collector sends, so the collector's own promises are tested alone: gzip protobuf with the bearer
token, and a persistent queue that survives the collector being killed while the receiver answers 503.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.collector import CONFIG_DIR, DEFAULT_BINARY, Collector, loopback_env
from tests.conftest import REPO

MANIFEST = CONFIG_DIR / "builder-config.yaml"


def collector_configs() -> list[Path]:
    """Every collector config in the repo: YAML under collector-config/ except the builder manifest."""
    return sorted(p for pattern in ("*.yaml", "*.yml") for p in CONFIG_DIR.rglob(pattern) if p != MANIFEST)


def test_built_collector_is_current_and_a_second_build_reuses_it(otelcol_bin: Path) -> None:
    """The binary was built from this manifest, and build.sh with an unchanged manifest only prints its path."""
    if otelcol_bin != DEFAULT_BINARY:
        pytest.skip("GLIA_OTELCOL_BIN names another binary; build.sh is not involved")
    stamp = (DEFAULT_BINARY.parent / "builder-config.sha256").read_text().strip()
    assert stamp == hashlib.sha256(MANIFEST.read_bytes()).hexdigest(), (
        "the collector was built from another builder-config.yaml: run `bash collector-config/build.sh`"
    )
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(CONFIG_DIR / "build.sh")], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == str(DEFAULT_BINARY)
    assert "up to date" in result.stderr
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("config", collector_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_config_passes_the_collector_validate_command(otelcol_bin: Path, config: Path, tmp_path: Path) -> None:
    """Valid with every default (as compose runs it) and with the loopback settings the tests use."""
    defaults = {k: v for k, v in os.environ.items() if not k.startswith("GLIA_")}
    for env in (defaults, loopback_env(tmp_path / "queue") | {"GLIA_INGEST_KEY": "k"}):
        result = subprocess.run(
            [str(otelcol_bin), "validate", f"--config={config}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_validate_rejects_a_broken_config(otelcol_bin: Path, tmp_path: Path) -> None:
    """The validate test can fail: an unknown key is an error.

    Not in every component: in v0.162.0 the otlp_http exporter ignores unknown keys (its HTTP client settings
    are decoded leniently), so test_pipelines_... checks the exporter's keys by name.
    """
    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    config["processors"]["memory_limiter"]["check_intervl"] = "1s"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(otelcol_bin), "validate", f"--config={broken}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "check_intervl" in result.stderr


def test_manifest_builds_exactly_the_components_the_config_uses(otelcol_bin: Path) -> None:
    built = yaml.safe_load(
        subprocess.run([str(otelcol_bin), "components"], capture_output=True, text=True, check=True).stdout
    )
    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    for kind in ("receivers", "processors", "exporters", "extensions"):
        used = {component_id.split("/")[0] for component_id in config.get(kind) or {}}
        have = {component["name"] for component in built.get(kind) or []}
        assert used == have, f"{kind}: config uses {sorted(used)}, the manifest builds {sorted(have)}"


def test_pipelines_put_memory_limiter_first_and_use_the_persistent_queue() -> None:
    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for pipeline in pipelines.values():
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["exporters"] == ["otlp_http/glia"]
    exporter = config["exporters"]["otlp_http/glia"]
    assert exporter["compression"] == "gzip"
    assert exporter["retry_on_failure"]["max_elapsed_time"] == 0
    storage = exporter["sending_queue"]["storage"]
    assert storage.startswith("file_storage") and storage in config["service"]["extensions"]
    assert "health_check" in config["service"]["extensions"]


@dataclass
class Exchange:
    """One request the stand-in receiver got, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class StandInReceiver:
    """An HTTP server that records requests and answers with `status` (503 comes with Retry-After: 1)."""

    url: str
    status: int = 200
    exchanges: list[Exchange] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[Exchange], bool], timeout: float = 30.0) -> Exchange:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for exchange in list(self.exchanges):
                if predicate(exchange):
                    return exchange
            time.sleep(0.05)
        seen = [(e.path, e.status) for e in self.exchanges]
        raise AssertionError(f"no matching request within {timeout} s; saw {seen}")

    def wait_for_count(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.exchanges) < count:
            assert time.monotonic() < deadline, f"fewer than {count} requests within {timeout} s"
            time.sleep(0.05)


@pytest.fixture
def stand_in_receiver() -> Iterator[StandInReceiver]:
    state = StandInReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state.status
            state.exchanges.append(Exchange(self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            if status == 503:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def start_collector(otelcol_bin: Path, tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Collector]]:
    started: list[Collector] = []

    def start(env: dict[str, str]) -> Collector:
        collector = Collector(otelcol_bin, env, tmp_path / "collector.log")
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.stop(signal.SIGKILL)


def trace_request(name: str) -> tuple[bytes, bytes]:
    """An OTLP trace request with one span named `name`, and that span's trace id."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="t")))
    now = time.time_ns()
    trace_id = os.urandom(16)
    resource_spans.scope_spans.add().spans.add(
        trace_id=trace_id,
        span_id=os.urandom(8),
        name=name,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1,
    )
    return request.SerializeToString(), trace_id


def spans_in(exchange: Exchange) -> list[tuple[bytes, str]]:
    request = ExportTraceServiceRequest.FromString(gzip.decompress(exchange.body))
    return [
        (span.trace_id, span.name)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def test_collector_forwards_gzip_protobuf_with_the_bearer_token(
    start_collector: Callable[[dict[str, str]], Collector], stand_in_receiver: StandInReceiver, tmp_path: Path
) -> None:
    env = loopback_env(tmp_path / "queue", stand_in_receiver.url) | {"GLIA_INGEST_KEY": "k3y"}
    collector = start_collector(env)
    body, trace_id = trace_request("forwarded")
    assert collector.post("/v1/traces", body) == 200

    metrics = ExportMetricsServiceRequest()
    gauge = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="glia.test.gauge")
    gauge.gauge.data_points.add(as_int=7, time_unix_nano=time.time_ns())
    assert collector.post("/v1/metrics", metrics.SerializeToString()) == 200

    traces = stand_in_receiver.wait_for(lambda e: e.path == "/v1/traces")
    assert traces.headers["Content-Encoding"] == "gzip"
    assert traces.headers["Content-Type"] == "application/x-protobuf"
    assert traces.headers["Authorization"] == "Bearer k3y"
    assert spans_in(traces) == [(trace_id, "forwarded")]

    sent_metrics = stand_in_receiver.wait_for(lambda e: e.path == "/v1/metrics")
    decoded = ExportMetricsServiceRequest.FromString(gzip.decompress(sent_metrics.body))
    assert decoded.resource_metrics[0].scope_metrics[0].metrics[0].name == "glia.test.gauge"

    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=time.time_ns()).body.string_value = "l1"
    assert collector.post("/v1/logs", logs.SerializeToString()) == 200
    sent_logs = stand_in_receiver.wait_for(lambda e: e.path == "/v1/logs")
    assert sent_logs.headers["Authorization"] == "Bearer k3y"
    decoded_logs = ExportLogsServiceRequest.FromString(gzip.decompress(sent_logs.body))
    assert decoded_logs.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "l1"


def test_queued_spans_survive_a_killed_collector_while_the_receiver_answers_503(
    start_collector: Callable[[dict[str, str]], Collector], stand_in_receiver: StandInReceiver, tmp_path: Path
) -> None:
    env = loopback_env(tmp_path / "queue", stand_in_receiver.url)
    stand_in_receiver.status = 503
    first = start_collector(env)
    body, trace_id = trace_request("kept")
    # 200 here means the span is in the persistent queue on disk, not yet at the receiver.
    assert first.post("/v1/traces", body) == 200
    stand_in_receiver.wait_for(lambda e: e.path == "/v1/traces" and e.status == 503)
    # Still retrying after a refusal: max_elapsed_time 0 never gives up.
    stand_in_receiver.wait_for_count(len(stand_in_receiver.exchanges) + 1)
    first.stop(signal.SIGKILL)

    stand_in_receiver.status = 200
    start_collector(env)
    delivered = stand_in_receiver.wait_for(lambda e: e.path == "/v1/traces" and e.status == 200)
    assert spans_in(delivered) == [(trace_id, "kept")]
