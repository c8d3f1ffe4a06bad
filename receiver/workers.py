"""`glia serve --workers N`: N receiver processes on one listening socket.

The receiver's CPU per span (decode and flatten, in Python) is what bounds one process; N processes use N cores. The
parent binds the socket, builds the application and freezes what is alive (gc.freeze: shared copy-on-write with the
children and never walked by their collections), then forks the workers. Each worker runs its own uvicorn server on
the inherited socket, with its own pool and its own lifespan: its own maintenance loops too, which are safe to run
side by side (as for two receivers behind a load balancer, docs/deploy.md).

The parent only supervises. A worker that exits after having served (killed, say) is started again; one whose
server never started (the database away, the schema not at head) exits with EXIT_NOT_STARTED, and the parent stops
the others and exits non-zero, as a single `glia serve` would. SIGTERM or SIGINT to the parent stops every worker
the way uvicorn stops (in-flight requests finish within its graceful timeout), then the parent returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time

import uvicorn

from .server import BoundedHttpProtocol, ConnectionShare

log = logging.getLogger("glia.serve")

# What a worker exits with when its server never started (its lifespan failed): restarting it would only fail again.
EXIT_NOT_STARTED = 3
# How often the parent looks for a worker that exited.
POLL_SECONDS = 0.2
# After the workers are told to stop: how long they have before they are killed (uvicorn's graceful timeout + 5 s).
STOP_MARGIN_SECONDS = 5.0


class Workers:
    """Forks and supervises `count` uvicorn workers serving `config` (an application already built)."""

    def __init__(self, config: uvicorn.Config, count: int) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1 (got {count})")
        self.config = config
        self.count = count
        self.share = ConnectionShare(count)
        self.started: dict[int, tuple[int, float]] = {}  # pid -> its slot in `share`, the monotonic time it started
        self.failed: str | None = None  # why the workers were stopped, when it was not asked for

    def run(self, sock: socket.socket) -> int:
        """Serve until SIGTERM or SIGINT (KeyboardInterrupt in this, the main thread): 0 once stopped so, 1 when a
        worker could not start (`failed` says how)."""
        try:
            for slot in range(self.count):
                self._fork(sock, slot)
            while True:
                pid, status = self._next_exit()
                slot, began = self.started.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                if code == EXIT_NOT_STARTED:
                    self.failed = f"worker {pid} could not start (after {time.monotonic() - began:.1f} s)"
                    return 1
                log.warning("worker %d exited with %d; starting another", pid, code)
                self.share.add_at(slot, -self.share.count_at(slot))  # what the dead worker held is closed
                self._fork(sock, slot)
        except KeyboardInterrupt:
            return 0
        finally:
            self._stop()

    def _next_exit(self) -> tuple[int, int]:
        """(pid, wait status) of the next worker to exit. Only the workers are waited for, by pid: the process may
        have other children (pg_ctl, and the embedded postmaster it reaps as a subreaper) whose exits are not ours
        to collect."""
        while True:
            for pid in self.started:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return done, status
            time.sleep(POLL_SECONDS)

    def _fork(self, sock: socket.socket, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            self.share.index = slot
            protocol = self.config.http
            if isinstance(protocol, type) and issubclass(protocol, BoundedHttpProtocol):
                protocol.share = self.share
            server = uvicorn.Server(self.config)
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass  # the SIGTERM or SIGINT uvicorn handled, raised again once it has shut down
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(0 if server.started else EXIT_NOT_STARTED)
        self.started[pid] = (slot, time.monotonic())
        log.info("started worker %d", pid)

    def _stop(self) -> None:
        for pid in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        graceful = self.config.timeout_graceful_shutdown or 0
        deadline = time.monotonic() + graceful + STOP_MARGIN_SECONDS
        while self.started and time.monotonic() < deadline:
            for pid in list(self.started):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    del self.started[pid]
            time.sleep(0.05)
        for pid in self.started:
            log.warning("worker %d did not stop in time; killing it", pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.started.clear()
