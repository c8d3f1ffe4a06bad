"""`track` (block, decorator) and `configure`: one span per run, usage measured at its edges.

Glia never raises into user code: any failure of its own is logged once and the run carries on untracked.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import inspect
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._attrs import flatten
from ._config import Settings, load_settings
from ._log import get_logger, warn_once
from ._measure import BlockUsage

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from ._pipeline import GliaSpanProcessor

F = TypeVar("F", bound=Callable[..., Any])

_SCOPE = "glia_otel"
_lock = threading.RLock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _State:
    """What `configure()` set up; replaced as a whole on reconfiguration."""

    def __init__(self) -> None:
        self.configured = False
        self.disabled = False
        self.settings: Settings | None = None
        self.tracer: Tracer | None = None
        self.processor: GliaSpanProcessor | None = None
        self.own_provider: Any = None
        self.atexit_registered = False
        self.sampling = False  # whether long runs get process samples (glia's own pipeline, metrics on)
        self.has_traceparent = False
        self.block_name = ""


_state = _State()


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
    adds its attributes; otherwise glia installs one that exports to OTLP/HTTP with spooling.
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
    with _lock:
        _install(settings)


def _install(settings: Settings) -> None:
    _state.settings = settings
    _state.has_traceparent = bool(os.environ.get("TRACEPARENT"))
    _state.block_name = ""
    _state.sampling = False
    _state.configured = True
    _state.disabled = settings.disabled
    if settings.disabled:
        _state.tracer = None
        return

    from opentelemetry import trace

    from . import _metrics, _spool
    from ._resource import python_process_attributes

    current = trace.get_tracer_provider()
    if _state.own_provider is None and not isinstance(current, trace.ProxyTracerProvider):
        # The application owns the pipeline; glia only adds attributes to its spans.
        _state.tracer = current.get_tracer(_SCOPE, _version())
        return

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from ._pipeline import GliaSpanProcessor

    resource = Resource(
        python_process_attributes(settings.record_args, settings.service_name, settings.resource_attributes)
    )
    # One processor for the process's life: the global provider (set once) and any later one share it, so a
    # reconfiguration reaches spans of other instrumentation too.
    processor = _state.processor
    if processor is None:
        processor = _state.processor = GliaSpanProcessor(settings)
    else:
        processor.reconfigure(settings)
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    if _state.own_provider is None:
        trace.set_tracer_provider(provider)
    _state.own_provider = provider
    _state.tracer = provider.get_tracer(_SCOPE, _version())
    _metrics.reconfigure(settings, dict(resource.attributes))
    _state.sampling = settings.metrics_enabled
    if not _state.atexit_registered:
        atexit.register(shutdown)
        _state.atexit_registered = True
    _spool.start_background_flush(settings)


def _version() -> str:
    return "0.1.0"


def _ensure_configured() -> Tracer | None:
    if _state.configured:
        return _state.tracer
    with _lock:
        if not _state.configured:
            try:
                configure()
            except ValueError as e:
                get_logger().error("glia: %s; runs are not recorded in this process", e)
                _state.configured = True
                _state.disabled = True
            except Exception as e:
                warn_once(
                    "configure",
                    "could not set up tracing (%s: %s); runs are not recorded",
                    type(e).__name__,
                    e,
                )
                _state.configured = True
                _state.disabled = True
    return _state.tracer


def force_flush(timeout_ms: int = 30000) -> bool:
    """Export every finished run now; what cannot be delivered is spooled. True if all was delivered."""
    try:
        if _state.processor is not None:
            return _state.processor.force_flush(timeout_ms)
        if _state.tracer is not None:
            from opentelemetry import trace

            provider = trace.get_tracer_provider()
            flush = getattr(provider, "force_flush", None)
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
        from . import _metrics

        # One deadline for everything: the runs first, process samples with what time remains.
        settings = _state.settings
        deadline = time.monotonic() + (settings.export_deadline_s if settings is not None else 0.25)
        if _state.processor is not None:
            _state.processor.shutdown(deadline)
        _metrics.shutdown(deadline)
    except Exception as e:
        warn_once("shutdown", "export at exit failed: %s: %s", type(e).__name__, e)


def _traceparent_context() -> Context | None:
    """A parent context from the `TRACEPARENT` variable that `glia run` passes to its child."""
    from ._config import parse_traceparent

    value = os.environ.get("TRACEPARENT", "").strip()
    if not value:
        return None
    parsed = parse_traceparent(value)
    if parsed is None:
        warn_once("traceparent", "ignoring malformed TRACEPARENT=%r", value)
        return None
    trace_id, span_id, flags = parsed
    from opentelemetry import trace

    ctx = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


class Run:
    """One tracked run: `set()` adds custom values while it runs."""

    __slots__ = ("_kind", "_mono0", "_span", "_token", "_usage", "_wall0", "name")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self._kind = kind
        self._span: Span | None = None
        self._usage: BlockUsage | None = None
        self._token: object = None
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
        return f"{self._span.get_span_context().trace_id:032x}" if self._span is not None else ""

    @property
    def span_id(self) -> str:
        """The run's span id as 16 hex digits (empty when not recorded)."""
        return f"{self._span.get_span_context().span_id:016x}" if self._span is not None else ""

    def _start(self, custom: Mapping[str, Any]) -> None:
        tracer = _ensure_configured()
        if tracer is None:
            return
        try:
            from opentelemetry import context, trace

            parent: Context | None = None
            if _state.has_traceparent and not trace.get_current_span().get_span_context().is_valid:
                parent = _traceparent_context()
            attrs: dict[str, Any] = flatten(custom) if custom else {}
            attrs["glia.run.kind"] = self._kind
            self._wall0 = time.time_ns()
            span = tracer.start_span(self.name, context=parent, attributes=attrs, start_time=self._wall0)
            self._span = span
            self._token = context.attach(trace.set_span_in_context(span))
            if _state.sampling:
                from . import _metrics

                _metrics.run_started(self.trace_id, self.span_id)
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
            from opentelemetry.trace import Status, StatusCode

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
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
        except Exception as e:
            warn_once("finish", "could not finish a run: %s: %s", type(e).__name__, _describe(e))
        finally:
            # Whatever failed above, the context is restored and the span ends: a run is never left open.
            self._span = None
            try:
                from opentelemetry import context

                context.detach(self._token)  # type: ignore[arg-type]
            except Exception:
                pass
            if _state.sampling:
                try:
                    from . import _metrics

                    _metrics.run_ended(
                        f"{span.get_span_context().trace_id:032x}", f"{span.get_span_context().span_id:016x}"
                    )
                except Exception:
                    pass
            try:
                span.end(end_time=self._wall0 + (mono1 - self._mono0))
            except Exception as e:
                warn_once("end", "could not end a run: %s: %s", type(e).__name__, _describe(e))


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
        settings = _state.settings
        if settings is not None and settings.service_name:
            _state.block_name = settings.service_name
        else:
            import sys

            from ._resource import service_name_for

            _state.block_name = service_name_for(sys.argv[0]) if sys.argv and sys.argv[0] else "block"
    return _state.block_name


@overload
def track(func: F, /) -> F: ...


@overload
def track(name: str | None = None, /, **custom: Any) -> _Tracker: ...


def track(name: Any = None, /, **custom: Any) -> Any:
    """Track a run: `with track("name", **custom) as run:`, `@track` or `@track("name", **custom)`."""
    if callable(name):
        return _Tracker(None, {})(name)
    return _Tracker(name, custom)
