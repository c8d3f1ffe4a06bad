"""The span processor glia installs when the application has none: it exports ended spans in the background and, at
exit, within a short deadline, spooling every request it could not deliver.

Replaces the stock BatchSpanProcessor + OTLPSpanExporter, which with the endpoint down block a script's exit
for seconds and then drop its spans. It works on glia's own spans (`_span.Span`), so no SDK is involved.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from ._config import Settings
from ._deliver import send, spool_body
from ._log import warn_once
from ._otlp import encode_request
from ._resource import with_own_identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from ._span import Span

_MAX_BATCH = 512
_LINGER_S = 0.2  # exit and force_flush() do not wait for it


def encode_spans(spans: Sequence[Span]) -> bytes:
    """An ExportTraceServiceRequest for glia's spans, grouped by resource and scope."""
    groups: dict[tuple[int, str, str], tuple[Mapping[str, Any], list[Span]]] = {}
    for span in spans:
        key = (id(span.resource), *span.scope)
        if key not in groups:
            # A forked child's spans carry the parent's resource: give them the child's pid and instance id.
            groups[key] = (with_own_identity(span.resource), [])
        groups[key][1].append(span)
    return encode_request((res, name, version, data) for (_, name, version), (res, data) in groups.items())


class GliaSpanProcessor:
    """Exports ended spans in a background thread; at shutdown, within the exit deadline, spooling."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cond = threading.Condition()
        self._pending: list[Span] = []
        # Batches taken from the queue and not yet delivered or spooled: registered in the same critical section
        # that takes them, so `shutdown` never sees a batch that is in nobody's hands.
        self._inflight: dict[int, Sequence[Span]] = {}
        self._next_id = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        # In a forked child each run is exported (or spooled) as it ends: children often end by `os._exit`
        # (multiprocessing workers do), which runs no atexit handler, so nothing may be left to linger.
        self._forked = False
        self._finalizer_pid = 0

    def on_end(self, span: Span) -> None:
        """Queue the span and wake the exporter thread (in a forked child, export a finished run now)."""
        with self._cond:
            if self._stopped:
                return
            self._pending.append(span)
            now = self._forked and span.attributes.get("glia.run.kind") is not None
            if not now:
                if self._thread is None or not self._thread.is_alive():
                    self._start_thread()
                if len(self._pending) == 1 or len(self._pending) >= _MAX_BATCH:
                    self._cond.notify()
        if self._forked:
            self._register_finalizer()
        if now:
            self._export_pending(time.monotonic() + self._settings.export_deadline_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything pending now (spooling what fails)."""
        deadline = time.monotonic() + timeout_millis / 1000
        self._export_pending(deadline)
        return self._wait_inflight(deadline)

    def reconfigure(self, settings: Settings) -> None:
        """Export what is queued under the old settings (within their exit deadline), then use the new ones."""
        self.force_flush(int(self._settings.export_deadline_s * 1000))
        with self._cond:
            self._settings = settings
            self._stopped = False

    def shutdown(self, deadline: float | None = None) -> None:
        """Export what is left by `deadline` (default: the exit deadline from now); spool whatever did not make it."""
        if deadline is None:
            deadline = time.monotonic() + self._settings.export_deadline_s
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
        self._export_pending(deadline)
        if not self._wait_inflight(deadline):
            with self._cond:
                leftovers = list(self._inflight.values())
                self._inflight.clear()
            for batch in leftovers:
                spool_body(self._settings, "traces", encode_spans(batch))

    # fork: called in this order by the one fork hook of `_track` ----------------------------------------------
    def before_fork(self) -> None:
        """Hold the lock across fork(), so the child never inherits it taken by a thread that does not exist there."""
        self._cond.acquire()

    def after_fork_in_parent(self) -> None:
        """Release what `before_fork` took."""
        self._cond.release()

    def after_fork_in_child(self) -> None:
        """The parent exports what was queued or in flight at the fork; the child starts empty, with no thread."""
        self._cond = threading.Condition()
        self._pending = []
        self._inflight = {}
        self._thread = None
        self._forked = True

    def _register_finalizer(self) -> None:
        """Flush at a multiprocessing worker's end (it exits by `os._exit`, skipping atexit)."""
        if self._finalizer_pid == os.getpid() or "multiprocessing" not in sys.modules:
            return
        self._finalizer_pid = os.getpid()
        try:
            from multiprocessing import util

            util.Finalize(None, self._flush_at_exit, exitpriority=10)
        except Exception as e:
            warn_once("mp-finalize", "could not hook multiprocessing's exit: %s: %s", type(e).__name__, e)

    def _flush_at_exit(self) -> None:
        try:
            self.force_flush(int(self._settings.export_deadline_s * 1000))
        except Exception as e:
            warn_once("mp-flush", "export at a worker's exit failed: %s: %s", type(e).__name__, e)

    # internals ---------------------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="glia-export", daemon=True)
        self._thread.start()

    def _take(self) -> tuple[int, bytes] | None:
        """Take up to one batch from the queue, encoded, registered as in flight. Caller holds no lock."""
        with self._cond:
            if not self._pending:
                return None
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self._next_id += 1
            batch_id = self._next_id
            self._inflight[batch_id] = batch
        try:
            return batch_id, encode_spans(batch)
        except BaseException:
            self._done(batch_id)
            raise

    def _done(self, batch_id: int) -> None:
        with self._cond:
            self._inflight.pop(batch_id, None)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                # Linger to gather a batch: a loop of short runs then costs a few requests, not one per run,
                # and the exporting thread does not keep taking the GIL from the application.
                linger_until = time.monotonic() + _LINGER_S
                while len(self._pending) < _MAX_BATCH and not self._stopped:
                    left = linger_until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stopped:
                    return
            try:
                taken = self._take()
                if taken is None:
                    continue
                batch_id, body = taken
                try:
                    send(self._settings, "traces", body)
                finally:
                    self._done(batch_id)
            except Exception as e:
                warn_once("export-thread", "span export failed: %s: %s", type(e).__name__, e)

    def _export_pending(self, deadline: float) -> None:
        while True:
            try:
                taken = self._take()
            except Exception as e:
                warn_once("encode", "could not encode spans: %s: %s", type(e).__name__, e)
                return
            if taken is None:
                return
            batch_id, body = taken
            try:
                send(self._settings, "traces", body, deadline)
            finally:
                self._done(batch_id)

    def _wait_inflight(self, deadline: float) -> bool:
        with self._cond:
            while self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
