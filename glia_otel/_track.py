"""`track` (block, decorator) and `configure`: one span per run, usage measured at its edges.

How a run is recorded depends on what the application has set up when glia is configured (docs/client.md):
- nothing of OpenTelemetry's: glia's own spans (`_span.py`), encoded by `_otlp.py` and exported by `_pipeline.py`;
  neither the OpenTelemetry API nor its SDK is imported. If the application imports the API later, `_bridge.py`
  makes glia's the global TracerProvider at that moment, so spans it creates nest under the run they start in;
- the API but no TracerProvider: the same, bridged from the start;
- its own TracerProvider: a run is a span of the application's tracer and goes where its spans go.

Glia never raises into user code: any failure of its own is logged once and the run carries on untracked.
"""

from __future__ import annotations

import _thread
import atexit
import contextvars
import os
import sys
import time

from . import _log, _measure, _span
from ._attrs import flatten
from ._config import Settings, load_settings
from ._log import get_logger, warn_once
from ._measure import BlockUsage
from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import ModuleType, TracebackType
    from typing import Any, TypeVar, overload

    from ._bridge import AppSpan, GliaTracerProvider
    from ._live import LiveRuns
    from ._metrics import ProcessSampling
    from ._pipeline import GliaSpanProcessor

    F = TypeVar("F", bound="Callable[..., Any]")

SCOPE = ("glia_otel", __version__)
_API = "opentelemetry.trace"
_lock = _thread.RLock()


class _State:
    """What `configure()` set up, owned here for the process's life; reconfiguration replaces its parts."""

    def __init__(self) -> None:
        self.configured = False
        self.settings: Settings | None = None
        self.tracer: _span.Tracer | None = None  # glia's own spans (None: disabled, or the application's tracer)
        self.app_tracer: Any = None  # the application's own tracer, when it has a TracerProvider
        self.processor: GliaSpanProcessor | None = None
        self.metrics: ProcessSampling | None = None  # process samples of long runs (glia's pipeline, metrics on)
        self.live: LiveRuns | None = None  # start records and heartbeats of runs past 1 s (glia's pipeline, live on)
        self.provider: GliaTracerProvider | None = None  # the global TracerProvider glia set for the API
        self.bridged = False  # glia's provider is the API's global one: runs are also the API's current span
        self.bridge_refused = False  # the API already had another global provider: glia's spans stay glia's own
        self.watching = False  # waiting for the application to import the API
        self.atexit_registered = False
        self.remote_parent: _span.Parent | None = None  # from TRACEPARENT
        self.block_name = ""

    # The one fork hook: what the process owns is reset in the child in order, logging and measuring first.
    def before_fork(self) -> None:
        if self.processor is not None:
            self.processor.before_fork()

    def after_fork_in_parent(self) -> None:
        if self.processor is not None:
            self.processor.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        global _lock
        _log.after_fork_in_child()
        _measure.after_fork_in_child()
        _lock = _thread.RLock()
        if self.processor is not None:
            self.processor.after_fork_in_child()
        if self.metrics is not None:
            self.metrics.after_fork_in_child()
        if self.live is not None:
            self.live.after_fork_in_child()


_state = _State()
os.register_at_fork(
    before=lambda: _state.before_fork(),
    after_in_parent=lambda: _state.after_fork_in_parent(),
    after_in_child=lambda: _state.after_fork_in_child(),
)


def configure(
    *,
    endpoint: str | None = None,
    service_name: str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    export_deadline_ms: float | None = None,
    record_args: bool | None = None,
    metrics: bool | None = None,
    metrics_interval_ms: float | None = None,
) -> None:
    """Set glia up from arguments and the `OTEL_*`/`GLIA_*` environment; ValueError if one is malformed.

    Called implicitly on first use. If the application already set a TracerProvider, glia uses it and only
    adds its attributes; otherwise glia exports its runs itself to OTLP/HTTP, with spooling.
    """
    settings = load_settings(
        endpoint=endpoint,
        service_name=service_name,
        spool_dir=spool_dir,
        export_deadline_ms=export_deadline_ms,
        record_args=record_args,
        metrics=metrics,
        metrics_interval_ms=metrics_interval_ms,
    )
    if _API in sys.modules:
        # Loaded before the lock: an import of the API still running in another thread would otherwise wait for
        # the lock (its hook takes it) while this thread waits for that import.
        from . import _bridge  # noqa: F401
    with _lock:
        _install(settings)


def _install(settings: Settings) -> None:
    _state.settings = settings
    _state.block_name = ""
    _state.configured = True
    _state.remote_parent = _traceparent()
    if settings.disabled:
        _state.tracer = _state.app_tracer = None
        return

    if _API in sys.modules:
        from . import _bridge

        app = _bridge.application_provider()
        if app is not None:
            # The application owns the pipeline; glia's runs are spans of its tracer, with glia's attributes.
            _state.app_tracer = app.get_tracer(*SCOPE)
            _state.tracer = None
            return

    from . import _spool
    from ._metrics import ProcessSampling
    from ._pipeline import GliaSpanProcessor
    from ._resource import python_process_attributes

    resource = python_process_attributes(settings.record_args, settings.service_name, settings.resource_attributes)
    # One processor for the process's life: a reconfiguration first exports what is queued under the old settings.
    if _state.processor is None:
        _state.processor = GliaSpanProcessor(settings)
    else:
        _state.processor.reconfigure(settings)
    tracer = _span.Tracer(resource, SCOPE, _state.processor.on_end)
    if _state.bridged:
        from ._bridge import ApiSpan

        tracer.span_class = ApiSpan
    _state.tracer, _state.app_tracer = tracer, None
    if _state.metrics is None:
        _state.metrics = ProcessSampling(settings, resource)
    else:
        _state.metrics.reconfigure(settings, resource)
    if not settings.live:
        _state.live = None
    elif _state.live is None:
        from ._live import LiveRuns

        _state.live = LiveRuns(settings)
    else:
        _state.live.reconfigure(settings)
    if _API in sys.modules:
        _bridge_api()
    elif not _state.watching:
        _watch_for_api()
    if not _state.atexit_registered:
        atexit.register(shutdown)
        _state.atexit_registered = True
    _spool.start_background_flush(settings)


def _bridge_api() -> None:
    """Make glia's TracerProvider the API's global one (unless the application has its own): from now on spans
    created with the API are glia's, and runs are also the API's current span. Caller holds the lock."""
    from . import _bridge

    if _state.tracer is None:
        return
    if _state.provider is None:
        _state.provider = _bridge.GliaTracerProvider(lambda: _state.tracer, force_flush, shutdown)
    if _bridge.install(_state.provider):
        _state.bridged = True
        _state.tracer.span_class = _bridge.ApiSpan
    else:
        _state.bridge_refused = True
        warn_once("bridge", "another TracerProvider is the global one: spans made with the API are not glia's")


class _ApiWatcher:
    """An import hook that bridges glia to the OpenTelemetry API the moment the application imports it, so spans
    created with the API inside a run that began without it still nest under that run."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _API:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_bridge(module: ModuleType) -> None:
            exec_module(module)
            self.unwatch()
            try:
                _late_bridge()
            except Exception as e:
                warn_once("bridge", "could not hand the OpenTelemetry API to glia: %s: %s", type(e).__name__, e)

        try:  # noqa: SIM105 - contextlib is not imported on this path
            loader.exec_module = exec_then_bridge
        except AttributeError:  # a loader that takes no attributes: the next run's start bridges instead
            pass
        return spec

    def unwatch(self) -> None:
        try:  # noqa: SIM105 - contextlib is not imported on this path
            sys.meta_path.remove(self)
        except ValueError:
            pass
        _state.watching = False


def _late_bridge() -> None:
    """Bridge now to an API the import hook did not see imported (its loader took no hook, or a race)."""
    from . import _bridge  # noqa: F401 - loaded before the lock, as in configure()

    with _lock:
        if _state.tracer is not None and not _state.bridged and not _state.bridge_refused:
            _bridge_api()


def _watch_for_api() -> None:
    sys.meta_path.insert(0, _ApiWatcher())
    _state.watching = True


def _traceparent() -> _span.Parent | None:
    """The parent a root run takes from the `TRACEPARENT` variable that `glia run` passes to its child."""
    from ._config import parse_traceparent

    value = os.environ.get("TRACEPARENT", "").strip()
    if not value:
        return None
    parsed = parse_traceparent(value)
    if parsed is None:
        warn_once("traceparent", "ignoring malformed TRACEPARENT=%r", value)
        return None
    trace_id, span_id, flags = parsed
    return trace_id, span_id, flags, True, ""


def _ensure_configured() -> _State | None:
    """The configured state, configuring on first use; None when runs are not recorded."""
    if not _state.configured:
        if _API in sys.modules:
            from . import _bridge  # noqa: F401 - loaded before the lock, as in configure()
        with _lock:
            if not _state.configured:
                try:
                    configure()
                except ValueError as e:
                    get_logger().error("glia: %s; runs are not recorded in this process", e)
                    _state.configured = True
                    _state.tracer = _state.app_tracer = None
                except Exception as e:
                    warn_once(
                        "configure",
                        "could not set up tracing (%s: %s); runs are not recorded",
                        type(e).__name__,
                        e,
                    )
                    _state.configured = True
                    _state.tracer = _state.app_tracer = None
    return _state if _state.tracer is not None or _state.app_tracer is not None else None


def force_flush(timeout_ms: int = 30000) -> bool:
    """Export every finished run now; what cannot be delivered is spooled. True if all was delivered."""
    try:
        if _state.processor is not None:
            return _state.processor.force_flush(timeout_ms)
        if _state.app_tracer is not None and _API in sys.modules:
            from opentelemetry import trace

            flush = getattr(trace.get_tracer_provider(), "force_flush", None)
            return bool(flush(timeout_ms)) if flush else True
    except Exception as e:
        warn_once("force-flush", "flush failed: %s: %s", type(e).__name__, e)
        return False
    return True


def shutdown() -> None:
    """Export what is left within the exit deadline (`GLIA_EXPORT_DEADLINE_MS`) and spool the rest.

    Runs at interpreter exit on its own; call it only to end glia earlier.
    """
    try:
        # One deadline for everything: the runs first, process samples with what time remains.
        settings = _state.settings
        deadline = time.monotonic() + (settings.export_deadline_s if settings is not None else 0.25)
        if _state.processor is not None:
            _state.processor.shutdown(deadline)
        if _state.metrics is not None:
            _state.metrics.shutdown(deadline)
    except Exception as e:
        warn_once("shutdown", "export at exit failed: %s: %s", type(e).__name__, e)


class Run:
    """One tracked run: `set()` adds custom values while it runs."""

    __slots__ = (
        "_api_token", "_kind", "_live", "_mono0", "_sampling", "_span", "_token", "_usage", "_wall0", "name",
    )  # fmt: skip

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self._kind = kind
        self._span: _span.Span | AppSpan | None = None
        self._usage: BlockUsage | None = None
        self._token: contextvars.Token[_span.Span | None] | None = None
        self._api_token: object = None
        self._sampling: ProcessSampling | None = None
        self._live: LiveRuns | None = None
        self._wall0 = 0
        self._mono0 = 0

    def set(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Add custom values: scalars and lists of scalars; a nested mapping flattens to dotted keys."""
        span = self._span
        if span is None:
            return
        try:
            attrs = flatten({**(values or {}), **more})
            if attrs:
                span.set_attributes(attrs)
        except Exception as e:
            warn_once("set", "could not record custom values: %s: %s", type(e).__name__, e)

    @property
    def trace_id(self) -> str:
        """The run's trace id as 32 hex digits (empty when not recorded)."""
        return f"{self._span.trace_id:032x}" if self._span is not None else ""

    @property
    def span_id(self) -> str:
        """The run's span id as 16 hex digits (empty when not recorded)."""
        return f"{self._span.span_id:016x}" if self._span is not None else ""

    def _start(self, custom: Mapping[str, Any]) -> None:
        state = _ensure_configured()
        if state is None:
            return
        try:
            attrs: dict[str, Any] = flatten(custom) if custom else {}
            attrs["glia.run.kind"] = self._kind
            self._wall0 = time.time_ns()
            tracer = state.tracer
            if tracer is None:
                from . import _bridge

                app = _bridge.start_app_span(state.app_tracer, self.name, attrs, self._wall0, state.remote_parent)
                self._span = app
                self._api_token = _bridge.attach(app.span)
            else:
                if not state.bridged and not state.bridge_refused and _API in sys.modules:
                    _late_bridge()
                if state.bridged:
                    from . import _bridge

                    parent = _bridge.parent()
                else:
                    inner = _span.current.get()
                    parent = inner.as_parent() if inner is not None else None
                span = tracer.start(self.name, parent or state.remote_parent, attrs, start_ns=self._wall0)
                self._span = span
                self._token = _span.current.set(span)
                if state.live is not None and span.recording:
                    self._live = state.live
                    self._live.run_started(span)
                if state.bridged:
                    self._api_token = _bridge.attach(span)  # type: ignore[arg-type]
            settings = state.settings
            if state.metrics is not None and tracer is not None and settings is not None and settings.metrics_enabled:
                self._sampling = state.metrics
                self._sampling.run_started((self.trace_id, self.span_id), self._wall0)
            self._usage = BlockUsage()
            self._usage.start()
            self._mono0 = time.monotonic_ns()
        except Exception as e:
            warn_once("start", "could not start a run: %s: %s", type(e).__name__, e)
            self._span = None

    def _finish(self, exc: BaseException | None) -> None:
        span = self._span
        if span is None:
            return
        mono1 = time.monotonic_ns()
        try:
            attrs: dict[str, Any] = self._usage.stop() if self._usage is not None else {}
            code = 0
            if exc is not None:
                code = 1
                if isinstance(exc, SystemExit):
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            attrs["process.exit.code"] = code
            span.set_attributes(attrs)
            if exc is not None and code != 0:
                message = _describe(exc)
                try:
                    span.record_exception(exc, escaped=True)
                except Exception:  # the exception's own __str__ or traceback failed
                    span.add_event(
                        "exception",
                        {"exception.type": type(exc).__name__, "exception.message": message, "exception.escaped": True},
                    )
                span.set_status_code(_span.STATUS_ERROR, f"{type(exc).__name__}: {message}")
        except Exception as e:
            warn_once("finish", "could not finish a run: %s: %s", type(e).__name__, _describe(e))
        finally:
            # Whatever failed above, the context is restored and the span ends: a run is never left open.
            ids = (self.trace_id, self.span_id)
            self._span = None
            self._detach()
            if self._live is not None:
                self._live.run_ended(span)  # type: ignore[arg-type]
            if self._sampling is not None:
                try:  # noqa: SIM105 - contextlib is not imported on this path
                    self._sampling.run_ended(ids, self._wall0 + (mono1 - self._mono0))
                except Exception:
                    pass
            try:
                span.end(end_time=self._wall0 + (mono1 - self._mono0))
            except Exception as e:
                warn_once("end", "could not end a run: %s: %s", type(e).__name__, _describe(e))

    def _detach(self) -> None:
        if self._api_token is not None:
            try:
                from . import _bridge

                _bridge.detach(self._api_token)
            except Exception:
                pass
        if self._token is not None:
            try:  # noqa: SIM105 - contextlib is not imported on this path
                _span.current.reset(self._token)
            except ValueError:
                pass  # ended in another context than it began in (the API's own detach fails alike)


def _describe(exc: BaseException) -> str:
    """`str(exc)`, or its repr, or a placeholder: an exception's `__str__` may itself raise."""
    try:
        return str(exc)
    except Exception:
        pass
    try:
        return repr(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


class _Tracker:
    """What `track("name", **custom)` returns: a context manager (sync and async) and a decorator."""

    def __init__(self, name: object, custom: Mapping[str, Any]) -> None:
        self._name = None if name is None else str(name)
        self._custom = custom
        # The runs this object has entered, per thread and per asyncio task: one `track(...)` object may be
        # entered by several of them at once.
        self._runs: contextvars.ContextVar[tuple[Run, ...]] = contextvars.ContextVar("glia_runs", default=())

    def __enter__(self) -> Run:
        run = Run(self._name or _default_block_name(), "block")
        run._start(self._custom)
        self._runs.set((*self._runs.get(), run))
        return run

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        runs = self._runs.get()
        if runs:
            self._runs.set(runs[:-1])
            runs[-1]._finish(exc)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, exc, tb)

    def __call__(self, func: F) -> F:
        import functools
        import inspect

        name = str(self._name or getattr(func, "__qualname__", None) or getattr(func, "__name__", "function"))
        custom = self._custom

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                run = Run(name, "function")
                run._start(custom)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as e:
                    run._finish(e)
                    raise
                run._finish(None)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = Run(name, "function")
            run._start(custom)
            try:
                result = func(*args, **kwargs)
            except BaseException as e:
                run._finish(e)
                raise
            run._finish(None)
            return result

        return wrapper  # type: ignore[return-value]


def _default_block_name() -> str:
    if not _state.block_name:
        _ensure_configured()  # the service name may come from OTEL_SERVICE_NAME: read the settings first
        settings = _state.settings
        if settings is not None and settings.service_name:
            _state.block_name = settings.service_name
        else:
            from ._resource import service_name_for

            _state.block_name = service_name_for(sys.argv[0]) if sys.argv and sys.argv[0] else "block"
    return _state.block_name


if TYPE_CHECKING:  # the overloads are for the type checker: importing `typing` costs a tracked script milliseconds

    @overload
    def track(func: F, /) -> F: ...

    @overload
    def track(name: str | None = None, /, **custom: Any) -> _Tracker: ...


def track(name: Any = None, /, **custom: Any) -> Any:
    """Track a run: `with track("name", **custom) as run:`, `@track` or `@track("name", **custom)`."""
    if callable(name):
        return _Tracker(None, {})(name)
    return _Tracker(name, custom)
