"""Glia behind the OpenTelemetry API, loaded only once the application itself has imported the API.

- With no TracerProvider of the application's, `GliaTracerProvider` becomes the global one: spans other code creates
  with the API are glia's own spans (`ApiSpan`), children of the run they start in, exported by glia's processor. No
  SDK is imported for it.
- With the application's own TracerProvider, a run is a span of the application's tracer (`AppSpan`), so it goes
  wherever the application sends its spans.
"""

from __future__ import annotations

from opentelemetry import context as context_api
from opentelemetry import trace

from . import _span
from ._log import warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any

    from opentelemetry.context import Context
    from opentelemetry.util.types import Attributes, AttributeValue

try:
    from opentelemetry.util._decorator import _agnosticcontextmanager as _contextmanager
except ImportError:  # an API older than the helper: a plain context manager (not usable as a decorator on coroutines)
    from contextlib import contextmanager as _contextmanager  # type: ignore[assignment]

_SCALARS = (str, bool, int, float)


def _clean(key: object, value: object) -> object:
    """An attribute value as the SDK accepts it, or None (with one warning) for one it would drop."""
    if isinstance(key, str) and key:
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        elif isinstance(value, list | tuple):
            kinds = {bool if isinstance(v, bool) else type(v) for v in value if v is not None}
            if len(kinds) <= 1 and kinds <= {str, bool, int, float}:
                return tuple(value)
    warn_once(f"attr:{type(value).__name__}", "dropped an attribute of type %s (key %r)", type(value).__name__, key)
    return None


def _cleaned(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        clean = _clean(key, value)
        if clean is not None:
            out[key] = clean
    return out


class ApiSpan(_span.Span, trace.Span):
    """Glia's span behind the OpenTelemetry API's `Span` (what the SDK's span does, without the SDK)."""

    __slots__ = ("_context", "record_exceptions", "set_status_on_exception")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._context: trace.SpanContext | None = None
        self.record_exceptions = True
        self.set_status_on_exception = True

    def get_span_context(self) -> trace.SpanContext:
        """The span's ids and flags as the API's `SpanContext`."""
        if self._context is None:
            state = trace.TraceState.from_header([self.trace_state]) if self.trace_state else trace.TraceState()
            self._context = trace.SpanContext(
                self.trace_id,
                self.span_id,
                is_remote=False,
                trace_flags=trace.TraceFlags(self.w3c_flags),
                trace_state=state,
            )
        return self._context

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute; a value the SDK would drop is dropped, with one warning."""
        clean = _clean(key, value)
        if clean is not None:
            _span.Span.set_attributes(self, {key: clean})

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set attributes; values the SDK would drop are dropped, with one warning."""
        _span.Span.set_attributes(self, _cleaned(attributes))

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        """Add an event."""
        _span.Span.add_event(self, name, _cleaned(attributes), timestamp)

    def add_link(self, context: trace.SpanContext, attributes: Attributes = None) -> None:
        """Link another span (ignored for an invalid context)."""
        links: list[Any] = self.links  # type: ignore[assignment]
        if not self.ended and context.is_valid and len(links) < _span.MAX_LINKS:
            links.append((context.trace_id, context.span_id, _cleaned(attributes)))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if not self.ended:
            self.name = name

    def is_recording(self) -> bool:
        """Whether the span records (sampled, not yet ended)."""
        return self.recording and not self.ended

    def set_status(self, status: trace.Status | trace.StatusCode, description: str | None = None) -> None:
        """Set the status (the SDK's rules: OK is final, UNSET ignored, a description only with ERROR)."""
        if isinstance(status, trace.Status):
            code, description = status.status_code, status.description
        else:
            code = status
        self.set_status_code(code.value, description or "")

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an exception as an `exception` event."""
        _span.Span.record_exception(self, exception, _cleaned(attributes), timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        """End the span."""
        _span.Span.end(self, end_time)

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        if exc_val is not None and self.is_recording():
            if self.record_exceptions:
                self.record_exception(exc_val, escaped=True)
            if self.set_status_on_exception:
                self.set_status_code(_span.STATUS_ERROR, f"{type(exc_val).__name__}: {exc_val}")
        self.end()


def _parent_of(span: trace.Span) -> _span.Parent | None:
    if isinstance(span, _span.Span):
        return span.as_parent()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.is_remote, ctx.trace_state.to_header()


def parent(context: Context | None = None) -> _span.Parent | None:
    """The parent of a new span: the current span of the API's context, else the innermost glia run.

    A run started before the application imported the API is known only to glia's own context; spans the API
    starts inside it find it there.
    """
    found = _parent_of(trace.get_current_span(context))
    if found is None and context is None:
        run = _span.current.get()
        if run is not None:
            return run.as_parent()
    return found


def attach(span: trace.Span) -> object:
    """Make `span` the API's current span; returns the token for `detach`."""
    return context_api.attach(trace.set_span_in_context(span))


def detach(token: object) -> None:
    """Restore the API's context as it was before `attach`."""
    context_api.detach(token)  # type: ignore[arg-type]


class GliaTracer(trace.Tracer):
    """A tracer of the global `GliaTracerProvider`: glia's spans, exported by glia's processor."""

    def __init__(self, glia_tracer: Callable[[], _span.Tracer | None], scope: tuple[str, str]) -> None:
        self._glia_tracer = glia_tracer
        self._scope = scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """Start a span, a child of the context's current span (or of the innermost glia run)."""
        tracer = self._glia_tracer()
        if tracer is None:  # glia is disabled or shut down
            return trace.INVALID_SPAN
        link_data = [(ln.context.trace_id, ln.context.span_id, _cleaned(ln.attributes)) for ln in links or ()]
        span = tracer.start(
            name,
            parent(context),
            _cleaned(attributes),
            kind.value + 1,  # the API's enum starts at INTERNAL = 0, OTLP's at 1
            [ln for ln in link_data if ln[0] and ln[1]],
            start_time,
            self._scope,
        )
        if isinstance(span, ApiSpan):
            span.record_exceptions = record_exception
            span.set_status_on_exception = set_status_on_exception
        return span  # type: ignore[return-value]

    @_contextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """Start a span and make it current while the `with` block (or decorated function) runs."""
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class GliaTracerProvider(trace.TracerProvider):
    """The global TracerProvider glia sets when the application has none: its tracers make glia's spans."""

    def __init__(
        self,
        glia_tracer: Callable[[], _span.Tracer | None],
        flush: Callable[[int], bool],
        stop: Callable[[], None],
    ) -> None:
        self._glia_tracer = glia_tracer
        self._flush = flush
        self._stop = stop

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        """A tracer whose spans carry this instrumentation scope."""
        return GliaTracer(self._glia_tracer, (instrumenting_module_name or "", instrumenting_library_version or ""))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every ended span now (what cannot be delivered is spooled)."""
        return self._flush(timeout_millis)

    def shutdown(self) -> None:
        """Export what is left within the exit deadline; spool the rest."""
        self._stop()


def install(provider: GliaTracerProvider) -> bool:
    """Make `provider` the global TracerProvider unless one is set already; True if it is the global one now."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return isinstance(trace.get_tracer_provider(), GliaTracerProvider)
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider() is provider


def application_provider() -> trace.TracerProvider | None:
    """The application's own global TracerProvider, if it set one (glia's own does not count)."""
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider | GliaTracerProvider):
        return None
    return current


class AppSpan:
    """A run on the application's TracerProvider: its API span behind the few calls a run makes."""

    __slots__ = ("span", "span_id", "trace_id")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        ctx = span.get_span_context()
        self.trace_id = ctx.trace_id
        self.span_id = ctx.span_id

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes on the application's span."""
        self.span.set_attributes(attributes)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add an event to the application's span."""
        self.span.add_event(name, attributes)

    def record_exception(self, exception: BaseException, escaped: bool = False) -> None:
        """Record an exception on the application's span."""
        self.span.record_exception(exception, escaped=escaped)

    def set_status_code(self, code: int, message: str = "") -> None:
        """Set the status of the application's span."""
        self.span.set_status(trace.Status(trace.StatusCode(code), message or None))

    def end(self, end_time: int | None = None) -> None:
        """End the application's span."""
        self.span.end(end_time=end_time)


def start_app_span(
    tracer: trace.Tracer, name: str, attributes: dict[str, Any], start_ns: int, remote: _span.Parent | None
) -> AppSpan:
    """A run as a span of the application's tracer: a child of its current span, else of `remote` (TRACEPARENT)."""
    context = None
    if remote is not None and not trace.get_current_span().get_span_context().is_valid:
        parent_ctx = trace.SpanContext(remote[0], remote[1], is_remote=True, trace_flags=trace.TraceFlags(remote[2]))
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent_ctx))
    return AppSpan(tracer.start_span(name, context=context, attributes=attributes, start_time=start_ns))
