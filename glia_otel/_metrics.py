"""Periodic process samples for long runs (`process.memory.usage`, `process.cpu.time`, ...) to `/v1/metrics`.

Sampling starts only once a run has lasted one interval (`OTEL_METRIC_EXPORT_INTERVAL`, glia default 10 s), so
short blocks never pay for it. The points share the run's resource (`service.instance.id`), which links them
to the process's runs; their timestamps place them inside a run's span. `OTEL_METRICS_EXPORTER=none` or
`configure(metrics=False)` turns sampling off.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._config import Settings
from ._log import warn_once

PROCESS_METRICS: dict[str, list[str] | None] = {
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.disk.io": ["read", "write"],
    "process.thread.count": None,
}

_lock = threading.Lock()
_settings: Settings | None = None
_resource: dict[str, Any] = {}
_active = 0
_timer: threading.Timer | None = None
_provider: Any = None
_instrumentor: Any = None
# While stopping: the monotonic time by which the last points must be delivered or spooled.
_exit_deadline: float | None = None
# Metric requests being posted, by id: spooled at exit if their post has not finished by the deadline.
_inflight: dict[int, tuple[Settings, bytes]] = {}
_EXIT_MARGIN_S = 0.03  # spool before the reader's join gives up on the exporting thread
# (trace id, span id) of the runs in progress, oldest first: points are linked to the outermost one.
_runs: list[tuple[str, str]] = []


def _after_fork_in_child() -> None:
    """Fresh lock, no timer thread, and the child's own pid and instance id on its samples."""
    global _lock, _timer, _resource
    _lock = threading.Lock()
    _timer = None
    if _resource:
        from ._resource import with_own_identity

        _resource = with_own_identity(_resource)


os.register_at_fork(after_in_child=_after_fork_in_child)


def reconfigure(settings: Settings, resource: Mapping[str, Any]) -> None:
    """Remember the settings and resource for when sampling starts."""
    global _settings, _resource
    with _lock:
        _settings = settings
        _resource = dict(resource)


def run_started(trace_id: str, span_id: str) -> None:
    """A run began: arm the timer that starts sampling if runs are still going one interval later."""
    global _active, _timer
    with _lock:
        _active += 1
        _runs.append((trace_id, span_id))
        if _settings is None or not _settings.metrics_enabled or _provider is not None or _timer is not None:
            return
        _timer = threading.Timer(_settings.metrics_interval_s, _start_sampling)
        _timer.daemon = True
        _timer.name = "glia-metrics-start"
        _timer.start()


def run_ended(trace_id: str, span_id: str) -> None:
    """A run ended: with none left and sampling not yet started, disarm the timer."""
    global _active, _timer
    with _lock:
        _active = max(0, _active - 1)
        if (trace_id, span_id) in _runs:
            _runs.remove((trace_id, span_id))
        if _active == 0 and _timer is not None:
            _timer.cancel()
            _timer = None


def is_sampling() -> bool:
    """Whether process samples are being exported."""
    return _provider is not None


def _start_sampling() -> None:
    global _provider, _instrumentor, _timer
    with _lock:
        _timer = None
        settings = _settings
        if settings is None or _active == 0 or _provider is not None:
            return
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        reader = PeriodicExportingMetricReader(
            _exporter(settings), export_interval_millis=settings.metrics_interval_s * 1000
        )
        provider = MeterProvider(resource=Resource(_resource), metric_readers=[reader], shutdown_on_exit=False)
        instrumentor = SystemMetricsInstrumentor(config=PROCESS_METRICS)
        instrumentor.instrument(meter_provider=provider)
        with _lock:
            _provider, _instrumentor = provider, instrumentor
        provider.force_flush()  # a first point now, not one interval later
    except Exception as e:
        warn_once("metrics-start", "could not start process sampling: %s: %s", type(e).__name__, e)


def _outermost_run() -> tuple[str, str] | None:
    with _lock:
        return _runs[0] if _runs else None


def _exporter(settings: Settings, link: Callable[[], tuple[str, str] | None] = _outermost_run) -> Any:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

    from ._deliver import deliver, spool_body

    class GliaMetricExporter(MetricExporter):
        """Posts metric requests; spools them when the endpoint is down."""

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            try:
                request = encode_metrics(metrics_data)
                ids = link()
                if ids is not None:
                    link_points(request, *ids)
                body = request.SerializeToString()
                deadline = _exit_deadline
                timeout = settings.metrics_timeout_s
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic() - _EXIT_MARGIN_S)
                    if timeout <= 0:
                        spool_body(settings, "metrics", body)
                        return MetricExportResult.FAILURE
                key = id(body)
                with _lock:
                    _inflight[key] = (settings, body)
                try:
                    ok = deliver(settings, "metrics", body, timeout)
                finally:
                    with _lock:
                        _inflight.pop(key, None)
            except Exception as e:
                warn_once("metrics-export", "metric export failed: %s: %s", type(e).__name__, e)
                return MetricExportResult.FAILURE
            return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    return GliaMetricExporter()


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


def _stop_provider(provider: Any, deadline: float) -> None:
    """Shut a MeterProvider down by `deadline`, spooling what its last export could not deliver in time."""
    global _exit_deadline
    _exit_deadline = deadline
    try:
        provider.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)
    except Exception as e:
        warn_once("metrics-shutdown", "could not stop process sampling: %s: %s", type(e).__name__, e)
    finally:
        with _lock:
            left = list(_inflight.values())
            _inflight.clear()
        _exit_deadline = None
    if left:
        from ._deliver import spool_body

        for settings, body in left:
            spool_body(settings, "metrics", body)


def shutdown(deadline: float | None = None) -> None:
    """Stop sampling, exporting a last point by `deadline` (default: the exit deadline from now); spool the rest."""
    global _provider, _instrumentor, _timer
    with _lock:
        if _timer is not None:
            _timer.cancel()
            _timer = None
        provider, instrumentor = _provider, _instrumentor
        _provider = _instrumentor = None
    if provider is None:
        return
    if deadline is None:
        deadline = time.monotonic() + (_settings.export_deadline_s if _settings else 0.25)
    try:
        instrumentor.uninstrument()
    except Exception as e:
        warn_once("metrics-uninstrument", "could not stop process sampling: %s: %s", type(e).__name__, e)
    _stop_provider(provider, deadline)


class CommandSampler:
    """Samples of a `glia run` command's process tree: `process.memory.usage` (RSS summed over the tree) and
    `process.thread.count`, linked to the command's span. Started only once the command has run one interval."""

    def __init__(self, settings: Settings, resource: Mapping[str, Any], pid: int, trace_id: str, span_id: str):
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        self._settings = settings
        ids = (trace_id, span_id)

        def tree() -> list[Any]:
            import psutil

            try:
                root = psutil.Process(pid)
                return [root, *root.children(recursive=True)]
            except psutil.Error:
                return []

        def memory(options: CallbackOptions) -> Iterable[Observation]:
            total = 0
            for proc in tree():
                try:
                    total += proc.memory_info().rss
                except Exception:
                    continue
            return [Observation(total, {"glia.scope": "tree"})] if total else []

        def threads(options: CallbackOptions) -> Iterable[Observation]:
            count = 0
            for proc in tree():
                try:
                    count += proc.num_threads()
                except Exception:
                    continue
            return [Observation(count, {"glia.scope": "tree"})] if count else []

        reader = PeriodicExportingMetricReader(
            _exporter(settings, lambda: ids), export_interval_millis=settings.metrics_interval_s * 1000
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

    def shutdown(self, deadline: float | None = None) -> None:
        """Stop, exporting what was sampled by `deadline` (default: the exit deadline from now); spool the rest."""
        _stop_provider(
            self._provider, time.monotonic() + self._settings.export_deadline_s if deadline is None else deadline
        )


def start_command_sampling(
    settings: Settings, resource: Mapping[str, Any], pid: int, trace_id: str, span_id: str
) -> CommandSampler | None:
    """Start sampling a command's tree; None (and one warning) if that cannot be done."""
    try:
        sampler = CommandSampler(settings, resource, pid, trace_id, span_id)
        sampler._provider.force_flush()  # a first point now, not one interval later
        return sampler
    except Exception as e:
        warn_once("metrics-start", "could not start process sampling: %s: %s", type(e).__name__, e)
        return None
