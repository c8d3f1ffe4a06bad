"""Periodic process samples for long runs (`process.memory.usage`, `process.cpu.time`, ...) to `/v1/metrics`.

Sampling starts only once a run has lasted one interval (`OTEL_METRIC_EXPORT_INTERVAL`, glia default 10 s), so
short blocks never pay for it (the metrics SDK is imported only then). The points share the run's resource
(`service.instance.id`), which links them to the process's runs; their timestamps place them inside a run's span.
`OTEL_METRICS_EXPORTER=none` or `configure(metrics=False)` turns sampling off.

`ProcessSampling` samples a Python process (owned by `_track`'s configured state), `CommandSampler` the process tree of
a `glia run` command; both deliver through one `_Delivery`.
"""

from __future__ import annotations

import threading
import time

from ._config import Settings
from ._deliver import send, spool_body
from ._log import warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    RunIds = tuple[str, str]

PROCESS_METRICS: dict[str, list[str] | None] = {
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.disk.io": ["read", "write"],
    "process.thread.count": None,
}
_EXIT_MARGIN_S = 0.03  # spool before the reader's join gives up on the exporting thread


class _Delivery:
    """Where a metric reader's exports go: posted with `send`, each point linked to a run; at exit, what is still
    being posted when the deadline passes is spooled."""

    def __init__(self, settings: Settings, link: Callable[[], RunIds | None]) -> None:
        self.settings = settings
        self._link = link
        self._lock = threading.Lock()
        self._exit_deadline: float | None = None  # while stopping: when the last points must be delivered or spooled
        self._inflight: dict[int, bytes] = {}

    def export(self, request: Any) -> bool:
        """Link, serialize and send one `ExportMetricsServiceRequest`; True if delivered."""
        ids = self._link()
        if ids is not None:
            link_points(request, *ids)
        body: bytes = request.SerializeToString()
        deadline = self._exit_deadline
        key = id(body)
        with self._lock:
            self._inflight[key] = body
        try:
            return send(self.settings, "metrics", body, None if deadline is None else deadline - _EXIT_MARGIN_S)
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def exporter(self) -> Any:
        """An SDK `MetricExporter` that hands its exports to this delivery."""
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
        from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

        delivery = self

        class GliaMetricExporter(MetricExporter):
            """Posts metric requests; spools them when the endpoint is down."""

            def export(
                self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
            ) -> MetricExportResult:
                try:
                    ok = delivery.export(encode_metrics(metrics_data))
                except Exception as e:
                    warn_once("metrics-export", "metric export failed: %s: %s", type(e).__name__, e)
                    return MetricExportResult.FAILURE
                return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                return None

        return GliaMetricExporter()

    def stop(self, provider: Any, deadline: float) -> None:
        """Shut a MeterProvider down by `deadline`, spooling what its last export could not deliver in time."""
        self._exit_deadline = deadline
        try:
            provider.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)
        except Exception as e:
            warn_once("metrics-shutdown", "could not stop process sampling: %s: %s", type(e).__name__, e)
        finally:
            with self._lock:
                left = list(self._inflight.values())
                self._inflight.clear()
            self._exit_deadline = None
        for body in left:
            spool_body(self.settings, "metrics", body)


def link_points(request: Any, trace_id: str, span_id: str) -> None:
    """Add `glia.trace_id`/`glia.span_id` (the run the samples belong to) to every data point."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    extra = [
        KeyValue(key="glia.trace_id", value=AnyValue(string_value=trace_id)),
        KeyValue(key="glia.span_id", value=AnyValue(string_value=span_id)),
    ]
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    point.attributes.extend(extra)


class ProcessSampling:
    """Samples of this Python process, started once a run has lasted one interval and kept until exit."""

    def __init__(self, settings: Settings, resource: Mapping[str, Any]) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._resource = dict(resource)
        self._runs: list[RunIds] = []  # the runs in progress, oldest first: points are linked to the outermost one
        self._timer: threading.Timer | None = None
        self._provider: Any = None
        self._instrumentor: Any = None
        self._delivery: _Delivery | None = None

    def reconfigure(self, settings: Settings, resource: Mapping[str, Any]) -> None:
        """Use these settings and this resource when sampling starts."""
        with self._lock:
            self._settings = settings
            self._resource = dict(resource)

    def run_started(self, ids: RunIds) -> None:
        """A run began: arm the timer that starts sampling if runs are still going one interval later."""
        with self._lock:
            self._runs.append(ids)
            if not self._settings.metrics_enabled or self._provider is not None or self._timer is not None:
                return
            timer = self._timer = threading.Timer(self._settings.metrics_interval_s, lambda: self._start(timer))
            timer.daemon = True
            timer.name = "glia-metrics-start"
            timer.start()

    def run_ended(self, ids: RunIds) -> None:
        """A run ended: with none left and sampling not yet started, disarm the timer."""
        with self._lock:
            if ids in self._runs:
                self._runs.remove(ids)
            if not self._runs and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def is_sampling(self) -> bool:
        """Whether process samples are being exported."""
        return self._provider is not None

    def _outermost(self) -> RunIds | None:
        with self._lock:
            return self._runs[0] if self._runs else None

    def _start(self, timer: threading.Timer) -> None:
        with self._lock:
            if self._timer is not timer:
                return  # cancelled, or replaced after a fork
            self._timer = None
            settings, resource = self._settings, self._resource
            if not self._runs or self._provider is not None:
                return
        try:
            from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource

            delivery = _Delivery(settings, self._outermost)
            reader = PeriodicExportingMetricReader(
                delivery.exporter(), export_interval_millis=settings.metrics_interval_s * 1000
            )
            provider = MeterProvider(resource=Resource(resource), metric_readers=[reader], shutdown_on_exit=False)
            instrumentor = SystemMetricsInstrumentor(config=PROCESS_METRICS)
            instrumentor.instrument(meter_provider=provider)
            with self._lock:
                self._provider, self._instrumentor, self._delivery = provider, instrumentor, delivery
            provider.force_flush()  # a first point now, not one interval later
        except Exception as e:
            warn_once("metrics-start", "could not start process sampling: %s: %s", type(e).__name__, e)

    def shutdown(self, deadline: float) -> None:
        """Stop sampling, exporting a last point by `deadline`; spool the rest."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            provider, instrumentor, delivery = self._provider, self._instrumentor, self._delivery
            self._provider = self._instrumentor = self._delivery = None
        if provider is None or delivery is None:
            return
        try:
            instrumentor.uninstrument()
        except Exception as e:
            warn_once("metrics-uninstrument", "could not stop process sampling: %s: %s", type(e).__name__, e)
        delivery.stop(provider, deadline)

    def after_fork_in_child(self) -> None:
        """A fresh lock, no timer, and the child's own pid and instance id on its samples."""
        from ._resource import with_own_identity

        self._lock = threading.Lock()
        self._timer = None
        self._resource = with_own_identity(self._resource)


class CommandSampler:
    """Samples of a `glia run` command's process tree: `process.memory.usage` (RSS summed over the tree) and
    `process.thread.count`, linked to the command's span. Started only once the command has run one interval."""

    def __init__(self, settings: Settings, resource: Mapping[str, Any], pid: int, ids: RunIds) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        from ._measure import tree_rss, tree_threads

        self._settings = settings
        self._delivery = _Delivery(settings, lambda: ids)

        def memory(options: CallbackOptions) -> Iterable[Observation]:
            total = tree_rss(pid)
            return [Observation(total, {"glia.scope": "tree"})] if total else []

        def threads(options: CallbackOptions) -> Iterable[Observation]:
            count = tree_threads(pid)
            return [Observation(count, {"glia.scope": "tree"})] if count else []

        reader = PeriodicExportingMetricReader(
            self._delivery.exporter(), export_interval_millis=settings.metrics_interval_s * 1000
        )
        self._provider = MeterProvider(
            resource=Resource(dict(resource)), metric_readers=[reader], shutdown_on_exit=False
        )
        meter = self._provider.get_meter("glia_otel.run")
        meter.create_observable_gauge(
            "process.memory.usage", [memory], unit="By", description="RSS summed over the command's process tree"
        )
        meter.create_observable_gauge(
            "process.thread.count",
            [threads],
            unit="{thread}",
            description="threads summed over the command's process tree",
        )
        self._provider.force_flush()  # a first point now, not one interval later

    def shutdown(self, deadline: float) -> None:
        """Stop, exporting what was sampled by `deadline`; spool the rest."""
        self._delivery.stop(self._provider, deadline)


def start_command_sampling(
    settings: Settings, resource: Mapping[str, Any], pid: int, ids: RunIds
) -> CommandSampler | None:
    """Start sampling a command's tree; None (and one warning) if that cannot be done."""
    try:
        return CommandSampler(settings, resource, pid, ids)
    except Exception as e:
        warn_once("metrics-start", "could not start process sampling: %s: %s", type(e).__name__, e)
        return None
