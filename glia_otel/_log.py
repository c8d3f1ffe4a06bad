"""`warn_once`: a repeated failure is logged once, clearly, on the `glia_otel` logger.

`logging` is imported only when there is something to log: `glia run` must start fast.
"""

from __future__ import annotations

import _thread
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

_seen: set[str] = set()
_lock = _thread.allocate_lock()


def after_fork_in_child() -> None:
    """A fresh lock: the thread that held it at the fork does not exist in the child."""
    global _lock
    _lock = _thread.allocate_lock()


def get_logger() -> logging.Logger:
    """The client's logger."""
    import logging

    return logging.getLogger("glia_otel")


def warn_once(key: str, message: str, *args: object) -> None:
    """Log `message` at WARNING the first time `key` is seen in this process."""
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
    if "logging" not in sys.modules:
        # Nobody configured logging, so it would print exactly this through its last-resort handler; writing it
        # directly spares `glia run` the import.
        try:  # noqa: SIM105 - contextlib is not imported on this path
            sys.stderr.write(("glia: " + message) % args + "\n")
        except Exception:
            pass
        return
    get_logger().warning("glia: " + message, *args)
