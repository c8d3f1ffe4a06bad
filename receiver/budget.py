"""The decode budget: the bytes of request bodies between decode and commit, bounded (GLIA_MAX_DECODING_BYTES).

Decoding costs several times a body's size in memory (docs/benchmarks.md), so the receiver decodes and writes only
so many bytes of bodies at once; a request that cannot get its share within GLIA_DECODE_WAIT_SECONDS is answered 503
+ Retry-After (ingest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from .errors import Unavailable


class DecodeBudget:
    """The bytes of request bodies between decode and commit, bounded: decoding costs several times a body's size.

    Waiters are served in arrival order, so a large body is not passed over for ever by small ones; a body larger
    than the whole budget gets all of it once nothing else holds any."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Requests queued for their share now (a waiter that gave up stays in the queue, done, until it is served)."""
        return sum(1 for _, granted in self._waiting if not granted.done())

    @contextlib.asynccontextmanager
    async def hold(self, size: int, wait: float) -> AsyncIterator[None]:
        """Hold `size` bytes of the budget for the block; Unavailable when they cannot be had within `wait` s."""
        size = min(max(size, 1), self.capacity)
        if self._waiting or self.used + size > self.capacity:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((size, granted))
            try:
                await asyncio.wait_for(asyncio.shield(granted), wait)
            except BaseException as exc:
                if granted.done():
                    self._release(size)  # granted as the wait ran out
                else:
                    granted.cancel()
                    self._grant()
                if isinstance(exc, TimeoutError):
                    raise Unavailable(
                        f"the receiver is decoding as many bytes as it may at once ({self.capacity}, "
                        "GLIA_MAX_DECODING_BYTES); retry later"
                    ) from None
                raise
        else:
            self.used += size
        try:
            yield
        finally:
            self._release(size)

    def _release(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            size, granted = self._waiting[0]
            if granted.cancelled():
                self._waiting.popleft()
                continue
            if self.used and self.used + size > self.capacity:
                return
            self._waiting.popleft()
            self.used += size
            granted.set_result(None)
