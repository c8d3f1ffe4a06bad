"""Glia's own spans: a run (or any span) as the very fields the OTLP encoder writes, and the context that nests them.

With no TracerProvider of the application's, every run is one of these, so a tracked block imports neither the
OpenTelemetry API nor its SDK (about 100 ms of imports). `_bridge.py` puts the same objects behind the API once the
application imports it, so spans it creates with the API nest under glia's runs and are exported with them.
"""

from __future__ import annotations

import contextvars
import os
import time

from ._otlp import SpanData

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    # (trace id, span id, W3C trace flags, remote, W3C tracestate header): what a child needs of its parent.
    Parent = tuple[int, int, int, bool, str]

KIND_INTERNAL = 1  # OTLP's SPAN_KIND_INTERNAL
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_SAMPLED = 0x01
_HAS_IS_REMOTE = 0x100  # OTLP span flags, bit 8: whether the parent is remote is known; bit 9: it is
_IS_REMOTE = 0x200
MAX_EVENTS = 128  # the SDK's default limits, so a long-lived span cannot grow without bound
MAX_LINKS = 128

# The innermost span glia started in this thread or task (contextvars: asyncio tasks inherit it, threads start
# without), the parent of the next one.
current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("glia_otel_current_span", default=None)


def new_id(nbytes: int) -> int:
    """A random non-zero id of `nbytes` bytes (16: trace id, 8: span id)."""
    return int.from_bytes(os.urandom(nbytes), "big") or 1


class Span(SpanData):
    """One span as glia records it: started by `Tracer.start`, handed to the processor once by `end`."""

    __slots__ = ("_on_end", "ended", "recording", "resource", "scope", "w3c_flags")

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent: Parent | None,
        kind: int,
        attributes: dict[str, Any],
        links: Sequence[tuple[int, int, Mapping[str, Any]]],
        start_ns: int,
        resource: Mapping[str, Any],
        scope: tuple[str, str],
        on_end: Callable[[Span], None],
    ) -> None:
        flags = parent[2] if parent is not None else _SAMPLED
        otlp_flags = (flags & 0xFF) | _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent[3] else 0)
        super().__init__(
            trace_id=trace_id,
            span_id=span_id,
            name=name,
            start_ns=start_ns,
            end_ns=0,
            parent_span_id=parent[1] if parent is not None else 0,
            kind=kind,
            attributes=attributes,
            events=[],
            links=list(links[:MAX_LINKS]),
            trace_state=parent[4] if parent is not None else "",
            flags=otlp_flags,
        )
        self.w3c_flags = flags & 0xFF
        # A parent that is not sampled (`TRACEPARENT=...-00`) means: record nothing below it, as the SDK's default
        # sampler does.
        self.recording = bool(flags & _SAMPLED)
        self.ended = False
        self.resource = resource
        self.scope = scope
        self._on_end = on_end

    def as_parent(self) -> Parent:
        """What a child span takes from this one."""
        return self.trace_id, self.span_id, self.w3c_flags, False, self.trace_state

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes (values already valid: glia's own, or checked by the bridge)."""
        if not self.ended:
            self.attributes.update(attributes)  # type: ignore[attr-defined]

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        """Add an event (the oldest goes beyond `MAX_EVENTS`)."""
        if self.ended:
            return
        events: list[Any] = self.events  # type: ignore[assignment]
        if len(events) >= MAX_EVENTS:
            del events[0]
        events.append((name, time.time_ns() if timestamp is None else timestamp, dict(attributes or {})))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event with the attributes the SDK gives it (type, message, stacktrace, escaped)."""
        import traceback  # only when something failed: it costs milliseconds to import

        kind = type(exception)
        module = kind.__module__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def set_status_code(self, code: int, message: str = "") -> None:
        """Set the status as the SDK does: OK is final, UNSET is ignored, a message goes only with ERROR."""
        if self.ended or self.status_code == STATUS_OK or code == STATUS_UNSET:
            return
        self.status_code = code
        self.status_message = message if code == STATUS_ERROR else ""

    def end(self, end_time: int | None = None) -> None:
        """End the span (once) and hand it to the processor if it is recorded."""
        if self.ended:
            return
        self.end_ns = time.time_ns() if end_time is None else end_time
        self.ended = True
        if self.recording:
            self._on_end(self)


class Tracer:
    """Starts glia's spans for one resource and scope, handing each ended span to `on_end` (the processor)."""

    def __init__(
        self,
        resource: Mapping[str, Any],
        scope: tuple[str, str],
        on_end: Callable[[Span], None],
        span_class: type[Span] = Span,
    ) -> None:
        self.resource = resource
        self.scope = scope
        self.on_end = on_end
        self.span_class = span_class  # `_bridge.ApiSpan` once the application uses the OpenTelemetry API

    def start(
        self,
        name: str,
        parent: Parent | None,
        attributes: dict[str, Any] | None = None,
        kind: int = KIND_INTERNAL,
        links: Sequence[tuple[int, int, Mapping[str, Any]]] = (),
        start_ns: int | None = None,
        scope: tuple[str, str] | None = None,
    ) -> Span:
        """A new span, a child of `parent` (a new trace without one)."""
        return self.span_class(
            name,
            parent[0] if parent is not None else new_id(16),
            new_id(8),
            parent,
            kind,
            attributes if attributes is not None else {},
            links,
            time.time_ns() if start_ns is None else start_ns,
            self.resource,
            scope or self.scope,
            self.on_end,
        )
