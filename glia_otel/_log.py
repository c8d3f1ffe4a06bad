"""One logger for the client, and `warn_once` so that a repeated failure is logged once, clearly."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("glia_otel")
_seen: set[str] = set()
_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object) -> None:
    """Log `message` at WARNING the first time `key` is seen in this process."""
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
    logger.warning("glia: " + message, *args)


def reset_warnings() -> None:
    """Forget which warnings were given (tests)."""
    with _lock:
        _seen.clear()
