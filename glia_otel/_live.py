"""Live runs: a run still going after `LIVE_AFTER_S` sends a start record, then a heartbeat every
`GLIA_HEARTBEAT_INTERVAL_MS` (30 s by default) until it ends (docs/attributes.md, "Live runs").

Both are spans with the final span's trace id, span id, name and start time, `glia.run.state` `started` (the start
record) or `running` (a heartbeat), the time they were made in `glia.run.heartbeat_unix_nano`, and no end
(`end_time_unix_nano` 0): the receiver stores the run as running, and the final span replaces that row. A heartbeat
adds what the run has used so far: its memory now (`glia.memory.rss_bytes`) and its CPU seconds. A run that ends
before `LIVE_AFTER_S` sends neither, and nothing of this module runs for it (`glia run` does not even import it).

Records are posted from a thread of their own, never from the run's: the start record goes through `_deliver.send`
(spooled when the endpoint is down, so a run killed meanwhile is still found lost later), heartbeats are posted once
and dropped on failure (the next one says the same, later). Nothing here raises into the run or delays its exit.

`CommandBeats` is `glia run`'s, driven by its wait loop; `LiveRuns` a Python process's `track` runs, one thread for
all of them.
"""

from __future__ import annotations

import _thread
import os
import resource
import time

from ._log import warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from ._config import Settings
    from ._span import Span

LIVE_AFTER_S = 1.0  # glia run's wait loop has its own copy (importing this module would cost every command)
STARTED, RUNNING = "started", "running"
SCOPE = "glia_otel.live"


def record(span: Any, state: str, attributes: Mapping[str, Any], figures: Mapping[str, Any] | None = None) -> Any:
    """The start record (`state` started) or a heartbeat (running) of `span`, a `_otlp.SpanData` or glia `Span`: its
    ids, name, kind, parent and start, `attributes`, the state and the time, and `figures`; no end, no events."""
    from ._otlp import SpanData

    attrs = {**attributes, **(figures or {})}
    attrs["glia.run.state"] = state
    attrs["glia.run.heartbeat_unix_nano"] = time.time_ns()
    return SpanData(
        trace_id=span.trace_id,
        span_id=span.span_id,
        name=span.name,
        start_ns=span.start_ns,
        end_ns=0,
        parent_span_id=span.parent_span_id,
        kind=span.kind,
        attributes=attrs,
        trace_state=span.trace_state,
        flags=span.flags,
    )


def _post(settings: Settings, body: bytes, keep: bool) -> None:
    """Post a request of live records; the start record (`keep`) is spooled unless delivered, a heartbeat dropped."""
    try:
        if keep:
            from ._deliver import send

            send(settings, "traces", body)
            return
        from ._export import SENT, compress, outcome, post

        url, headers, compression, timeout = settings.target("traces")
        status, detail = post(
            url, compress(body, compression), "application/x-protobuf", headers, timeout, compression == "gzip"
        )
        if outcome(status) != SENT:
            warn_once(f"heartbeat:{url}", "a heartbeat of a running run was not delivered (%s); dropped", detail)
    except Exception as e:
        warn_once("live-post", "could not send a live run's record: %s: %s", type(e).__name__, e)


class _Sender:
    """One post at a time from a raw `_thread` (no `threading` import; `glia run` may end with a post in flight: its
    final span wins at the receiver whatever arrives later). A request offered while one is in flight replaces any
    waiting one: only the newest heartbeat matters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = _thread.allocate_lock()
        self._busy = False
        self._waiting: tuple[bytes, bool] | None = None

    def offer(self, body: bytes, keep: bool) -> None:
        with self._lock:
            if self._busy:
                # a waiting start record must not be dropped for a heartbeat: keep says so
                keep = keep or (self._waiting is not None and self._waiting[1])
                self._waiting = (body, keep)
                return
            self._busy = True
        try:
            _thread.start_new_thread(self._loop, (body, keep))
        except Exception as e:  # no thread to spare: the run goes on without its live records
            with self._lock:
                self._busy = False
            warn_once("live-thread", "could not start sending live records: %s: %s", type(e).__name__, e)

    def _loop(self, body: bytes, keep: bool) -> None:
        while True:
            _post(self.settings, body, keep)
            with self._lock:
                if self._waiting is None:
                    self._busy = False
                    return
                (body, keep), self._waiting = self._waiting, None


# --- glia run ------------------------------------------------------------------------------------------------------


class CommandBeats:
    """`glia run`'s start record and heartbeats, sent when its wait loop calls `beat()` (at `due`)."""

    def __init__(
        self,
        settings: Settings,
        resource_attrs: Mapping[str, Any],
        span: Any,
        attributes: Mapping[str, Any],
        read: Callable[[], Mapping[str, Any]],
        interval_s: float,
    ) -> None:
        self._resource = dict(resource_attrs)
        self._span = span
        self._attributes = dict(attributes)
        self._read = read
        self._interval = interval_s
        self._sender = _Sender(settings)
        self._started = False
        self.due = 0.0

    def beat(self) -> float:
        """Send the start record the first time, a heartbeat with the tree's figures after; returns when the next
        one is due (monotonic s). Never raises."""
        from ._otlp import encode_request
        from ._version import __version__

        self.due = time.monotonic() + self._interval
        try:
            if self._started:
                figures = self._read()
                live = record(self._span, RUNNING, self._attributes, figures)
            else:
                live = record(self._span, STARTED, self._attributes)
            body = encode_request([(self._resource, SCOPE, __version__, [live])])
            self._sender.offer(body, keep=not self._started)
            self._started = True
        except Exception as e:
            warn_once("live-beat", "could not send a live run's record: %s: %s", type(e).__name__, e)
        return self.due


def command_beats(
    settings: Settings,
    resource_attrs: Mapping[str, Any],
    span: Any,
    attributes: Mapping[str, Any],
    read: Callable[[], Mapping[str, Any]],
) -> CommandBeats | None:
    """`glia run`'s live records (None, said once, if they cannot be made)."""
    try:
        return CommandBeats(settings, resource_attrs, span, attributes, read, settings.heartbeat_interval_s)
    except Exception as e:
        warn_once("live-start", "could not start a live run's records: %s: %s", type(e).__name__, e)
        return None


# --- track runs in a Python process ---------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("cpu0", "due", "span", "started")

    def __init__(self, span: Span, due: float, cpu0: tuple[float, float]) -> None:
        self.span = span
        self.due = due
        self.cpu0 = cpu0
        self.started = False


def _process_figures(cpu0: tuple[float, float]) -> dict[str, Any]:
    """This process's memory now and the CPU seconds (user, system: every thread) it used since `cpu0`."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    figures: dict[str, Any] = {
        "glia.cpu.user_seconds": max(0.0, ru.ru_utime - cpu0[0]),
        "glia.cpu.system_seconds": max(0.0, ru.ru_stime - cpu0[1]),
    }
    rss = _self_rss()
    if rss is not None:
        figures["glia.memory.rss_bytes"] = rss
    return figures


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _self_rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:
            return None


class LiveRuns:
    """The `track` runs of this process in progress: one daemon thread sends the start record of each that passes
    `LIVE_AFTER_S` and heartbeats of all of them every interval, in one request. A run's start costs a lock and a
    dict entry; the thread is woken only when it has nothing to wait for."""

    def __init__(self, settings: Settings) -> None:
        import threading

        self._settings = settings
        self._cond = threading.Condition(threading.Lock())
        self._runs: dict[int, _Entry] = {}
        self._thread: threading.Thread | None = None
        self._sleeping_until: float | None = None  # when the waiting thread wakes; None: at a notify only
        self._sender = _Sender(settings)

    def reconfigure(self, settings: Settings) -> None:
        """Use these settings from now on."""
        with self._cond:
            self._settings = settings
            self._sender.settings = settings

    def run_started(self, span: Span) -> None:
        """A run began: its start record is due `LIVE_AFTER_S` from now. Never raises."""
        try:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            entry = _Entry(span, time.monotonic() + LIVE_AFTER_S, (ru.ru_utime, ru.ru_stime))
            with self._cond:
                self._runs[id(span)] = entry
                if self._thread is None:
                    import threading

                    self._thread = threading.Thread(target=self._loop, name="glia-live", daemon=True)
                    self._thread.start()
                elif self._sleeping_until is None or entry.due < self._sleeping_until:
                    # asleep with nothing to wait for, or until later than this run's start record is due
                    self._cond.notify()
        except Exception as e:
            warn_once("live-start", "could not follow a live run: %s: %s", type(e).__name__, e)

    def run_ended(self, span: Span) -> None:
        """A run ended: no more records for it (the final span is on its way)."""
        with self._cond:
            self._runs.pop(id(span), None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [e for e in self._runs.values() if e.due <= now]
                if not due:
                    wake = min((e.due for e in self._runs.values()), default=None)
                    self._sleeping_until = wake
                    self._cond.wait(None if wake is None else wake - now)
                    self._sleeping_until = None
                    continue
                interval = self._settings.heartbeat_interval_s
                for entry in due:
                    entry.due = now + interval
            self._send(due)

    def _send(self, due: list[_Entry]) -> None:
        from ._otlp import encode_request
        from ._resource import with_own_identity
        from ._version import __version__

        try:
            groups: dict[int, tuple[Mapping[str, Any], list[Any]]] = {}
            keep = False
            for entry in due:
                span = entry.span
                if span.ended:
                    continue
                attributes = {k: v for k, v in span.attributes.items() if isinstance(k, str)}
                if entry.started:
                    live = record(span, RUNNING, attributes, _process_figures(entry.cpu0))
                else:
                    live = record(span, STARTED, attributes)
                    entry.started = keep = True
                group = groups.setdefault(id(span.resource), (with_own_identity(span.resource), []))
                group[1].append(live)
            if groups:
                body = encode_request((res, SCOPE, __version__, spans) for res, spans in groups.values())
                self._sender.offer(body, keep)
        except Exception as e:
            warn_once("live-beat", "could not send a live run's record: %s: %s", type(e).__name__, e)

    def after_fork_in_child(self) -> None:
        """The parent's runs and thread are not the child's."""
        import threading

        self._cond = threading.Condition(threading.Lock())
        self._runs = {}
        self._thread = None
        self._sleeping_until = None
        self._sender = _Sender(self._settings)
