"""How the receiver is served: the uvicorn configuration `glia serve` and the tests both run.

uvicorn bounds the time between requests on a kept-alive connection, but not the time a request takes to arrive: a
client trickling its headers or its body, or one that connects and sends nothing, holds a connection (and a file
descriptor) for as long as it likes, and a few hundred of them took the receiver down. `BoundedHttpProtocol`
bounds the time WITHOUT PROGRESS instead of the total, so a slow but honest collector still gets through:

- while a request is coming in (from the connection's start, or a request's first byte, until its last byte),
  a connection on which no byte arrives for `request_idle_timeout` seconds is closed. Stalled headers get a 408
  first; a stalled body gets no answer, because an exporter retries a dropped connection while a 408 is final for
  the Collector. Time when the receiver itself is not reading (flow control, a pipelined request waiting its turn)
  or when the client waits for our `100 Continue` is not the client's silence and does not count.
- at most `max_connections` connections are open: the next is answered 503 at once, before anything is read, and
  closed. uvicorn's own `limit_concurrency` counts the same connections but only refuses a request once its headers
  are complete, so a connection that never finishes its headers would still be accepted and hold a descriptor.
- request headers are bounded in size (431), since the parser itself does not bound them.
- what the protocol answers itself (408, 431, 503) is followed by a lingering close, so the client reads the answer
  instead of a connection reset.
- the soft limit on open files is raised so that `max_connections` fit (`open_files`).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import resource
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .ratelog import RateLimitedLog
from .settings import Settings

log = logging.getLogger("glia.server")

# Descriptors the process needs besides its client connections and its pool: the listening sockets, the event
# loop's own, log files, the embedded PostgreSQL's pipes, the modules and libraries Python keeps open.
FD_HEADROOM = 128
MAX_HEADER_BYTES = 64 * 1024
# A connection answered and closed by the protocol itself is read (and what comes discarded) for up to this long
# after its answer, so that the client reads the answer rather than a reset; at most this many at once.
LINGER_SECONDS = 2.0
MAX_LINGERING = 64


@dataclass(frozen=True)
class EdgeLimits:
    """What BoundedHttpProtocol enforces, fixed when the server is configured."""

    idle_timeout: float
    max_connections: int
    retry_after: int
    log: RateLimitedLog
    lingering: set[BoundedHttpProtocol] = field(default_factory=set, compare=False)


def _plain_response(status: str, message: str, extra: str = "") -> bytes:
    body = message.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
        f"x-content-type-options: nosniff\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionShare:
    """Open connections per worker of `glia serve --workers`, in memory the workers share (an anonymous mapping made
    before they are forked: one slot each, written by its worker, and cleared by the parent when it replaces the
    worker after its death).

    Workers accept from one socket, and whichever is woken first takes every connection waiting: four collector
    connections opened at once could all land on one worker while the other idles. A worker holding more than
    its share (the total over the workers, rounded up) answers its next request with `connection: close`, as
    nginx does after `keepalive_requests`; the client opens a new connection, which the less busy worker is the
    likelier to take. A balanced set of connections is never closed."""

    def __init__(self, workers: int) -> None:
        self.memory = mmap.mmap(-1, 8 * workers)
        self.workers = workers
        self.index = 0

    def count_at(self, index: int) -> int:
        """The connections worker `index` holds open."""
        return int(struct.unpack_from("q", self.memory, 8 * index)[0])

    def add_at(self, index: int, delta: int) -> None:
        struct.pack_into("q", self.memory, 8 * index, self.count_at(index) + delta)

    def add(self, delta: int) -> None:
        """Count a connection this worker opened (1) or closed (-1)."""
        self.add_at(self.index, delta)

    def over(self) -> bool:
        """Whether this worker holds more than its share of the connections."""
        total = sum(self.count_at(i) for i in range(self.workers))
        return self.count_at(self.index) > -(-total // self.workers)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (what `http="auto"` picks with uvicorn[standard]) with the bounds above."""

    limits: ClassVar[EdgeLimits]
    share: ClassVar[ConnectionShare | None] = None  # set in each worker of `glia serve --workers`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # waiting for a request's bytes: from the connection's start, or a request's first byte, to its last
        self._waiting = False
        self._begun = False  # some of the current request has arrived
        self._headers_done = False
        self._header_bytes = 0
        self._progress = 0.0  # loop time of the last byte received (or of the last moment silence was ours)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closing = False  # answered by this protocol: what still arrives is read and dropped
        self._linger_timer: asyncio.TimerHandle | None = None
        self._shared = False  # counted in `share`

    # --- connection --------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse_busy()
            return
        if self.share is not None:
            self.share.add(1)
            self._shared = True
        self._waiting = True
        self._progress = self.loop.time()
        self._arm(self.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shared and self.share is not None:
            self.share.add(-1)
            self._shared = False
        for timer in (self._idle_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._linger_timer = None
        self.limits.lingering.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._progress = self.loop.time()
        # bytes before the end of the headers count towards their bound (a chunk that ends them is not counted)
        counting = not self._headers_done
        super().data_received(data)
        if counting and self._waiting and not self._headers_done:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self._close_with(_plain_response("431 Request Header Fields Too Large", "request headers over 64 KiB"))

    # --- parser callbacks: where a request starts and ends ------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._waiting = self._begun = True
        self._headers_done = False
        self._header_bytes = 0
        self._arm(self.limits.idle_timeout)

    def on_headers_complete(self) -> None:
        self._headers_done = True
        super().on_headers_complete()
        if self.share is not None and self.cycle is not None and self.share.over():
            self.cycle.keep_alive = False  # answered with `connection: close`, then closed (ConnectionShare)

    def on_message_complete(self) -> None:
        self._waiting = self._begun = self._headers_done = False
        super().on_message_complete()

    # --- the idle timer -----------------------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        # one timer per connection, re-armed for what remains when it fires: cheaper than a new timer per packet
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if not self._waiting or self.transport.is_closing():
            return
        now = self.loop.time()
        waits_for_us = self._headers_done and self.cycle is not None and self.cycle.waiting_for_100_continue
        if self.flow.read_paused or waits_for_us:
            self._progress = now
        idle = now - self._progress
        timeout = self.limits.idle_timeout
        if idle < timeout:
            self._arm(timeout - idle)
            return
        client = self.client[0] if self.client else "unknown"
        if not self._begun:
            # nothing sent at all: browsers open such connections ahead of need, so this is no client's fault
            log.debug("closed the connection from %s: nothing sent in %.0f s", client, idle)
            self.transport.close()
            return
        part = "request body" if self._headers_done else "request headers"
        self.limits.log.warning(
            client,
            "closed the connection from %s: no bytes for %.0f s while reading the %s (GLIA_REQUEST_IDLE_TIMEOUT)",
            client,
            idle,
            part,
        )
        # a 408 only where no response can be under way on this connection (a pipelined request's might be)
        if not self._headers_done and (self.cycle is None or self.cycle.response_complete):
            self._close_with(_plain_response("408 Request Timeout", f"no bytes for {idle:.0f} s"))
        else:
            self.transport.close()

    def _close_with(self, response: bytes) -> None:
        """Send `response` and close: after our FIN, until the client's (or LINGER_SECONDS), read and drop what comes,
        since closing a socket with unread bytes resets it and the client might lose the response."""
        self._waiting = False
        self._closing = True
        self.transport.write(response)
        if len(self.limits.lingering) >= MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # sent once the response is out; the client's EOF then closes the transport
        self.limits.lingering.add(self)
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _refuse_busy(self) -> None:
        self.connections.discard(self)  # it closes by itself, and must not count against the connections served
        limit = self.limits.max_connections
        client = self.client[0] if self.client else "unknown"
        self.limits.log.warning(
            client, "refused a connection from %s: %d connections are open (GLIA_MAX_CONNECTIONS)", client, limit
        )
        message = f"the receiver has {limit} connections open, its limit (GLIA_MAX_CONNECTIONS); retry later"
        self._close_with(
            _plain_response("503 Service Unavailable", message, f"retry-after: {self.limits.retry_after}\r\n")
        )


def protocol_class(limits: EdgeLimits) -> type[BoundedHttpProtocol]:
    """BoundedHttpProtocol bound to `limits` (uvicorn makes each connection's protocol from a class)."""
    return cast(type[BoundedHttpProtocol], type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"limits": limits}))


def open_files(max_connections: int, pool_size: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one until `max_connections` fit; returns how many fit.

    When the hard limit is too low, the receiver serves as many connections as fit (and answers 503 past them)
    rather than fail to accept, which would take /readyz and every other request down with it.
    """
    needed = max_connections + pool_size + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    fit = max(1, soft - pool_size - FD_HEADROOM)
    log.warning(
        "the open files limit is %d (hard limit %s): room for %d client connections, not GLIA_MAX_CONNECTIONS=%d; "
        "serving at most %d (raise the limit: ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=)",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        fit,
        max_connections,
        fit,
    )
    return fit


def config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration for `app` as `settings` say: address, timeouts, connection bound."""
    limits = EdgeLimits(
        idle_timeout=settings.request_idle_timeout,
        max_connections=open_files(settings.max_connections, settings.pool_max_size),
        retry_after=settings.retry_after_seconds,
        log=RateLimitedLog(log, settings.rejection_log_seconds, "refused or timed-out connections"),
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(limits),
        ws="none",  # no WebSocket routes; an upgrade would hand the connection to a protocol without these bounds
        log_config=None,
        access_log=False,
        server_header=False,  # no "server: uvicorn": nothing to gain from naming the stack, a header less to send
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
