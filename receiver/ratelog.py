"""Warnings about refused requests, at most one line per client address per interval.

Anyone who can connect can make the receiver refuse requests; logging each one would let them fill the disk and
bury the lines that matter. The first refusal from an address in an interval is logged; the ones after it are
counted, and the count is logged once the interval is over (with the address's next line, or the next line from
anyone).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

# Past this many addresses in one interval (a scan, or spoofed IPv6 sources), the rest share one window.
MAX_ADDRESSES = 4096
OTHERS = "other addresses"


@dataclass
class _Window:
    started: float
    suppressed: int = 0


@dataclass
class RateLimitedLog:
    """`warning(address, msg, *args)` logs to `logger` unless `address` had a line less than `interval` ago.

    `what` names the refusals in the line that reports how many were left out ("4 more failed authentications").
    Used from the event loop only, so it takes no lock.
    """

    logger: logging.Logger
    interval: float
    what: str
    _windows: dict[str, _Window] = field(default_factory=dict)
    _next_sweep: float = 0.0

    def warning(self, address: str, msg: str, *args: object) -> None:
        """Log `msg % args` for `address`, or count it when `address` was logged within the interval."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        if address not in self._windows and len(self._windows) >= MAX_ADDRESSES:
            address = OTHERS
        window = self._windows.get(address)
        if window is not None and now - window.started < self.interval:
            window.suppressed += 1
            return
        if window is not None:
            self._report(address, window)
        self._windows[address] = _Window(now)
        self.logger.warning(msg, *args)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.interval
        for address, window in list(self._windows.items()):
            if now - window.started >= self.interval:
                self._report(address, window)
                del self._windows[address]

    def _report(self, address: str, window: _Window) -> None:
        if window.suppressed:
            self.logger.warning(
                "%s: %d more %s within %g s (not logged one by one)",
                address,
                window.suppressed,
                self.what,
                self.interval,
            )
