"""Deliver an OTLP request body before a deadline, or put its exact bytes in the spool: the one place that decides.

Every path that sends (the span processor, `glia run`, process samples) calls `send`.
"""

from __future__ import annotations

import time

from . import _spool
from ._config import Settings
from ._export import KEEP, SENT, compress, describe_failure, outcome, post, report_rejected
from ._log import warn_once


def send(settings: Settings, signal: str, body: bytes, deadline: float | None = None) -> bool:
    """Post an (uncompressed) protobuf body within the signal's timeout and never past `deadline` (a monotonic time;
    None: the timeout alone); spool it unless delivered. True if delivered.

    Nothing left before the deadline: spooled without a try. An interrupt (Ctrl-C, a signal handler raising) in the
    middle of the post: spooled, then the interrupt goes on.
    """
    timeout = settings.target(signal)[3]
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
    if timeout <= 0:
        spool_body(settings, signal, body)
        return False
    try:
        return _deliver(settings, signal, body, timeout)
    except BaseException:
        spool_body(settings, signal, body)
        raise


def _deliver(settings: Settings, signal: str, body: bytes, timeout: float) -> bool:
    """Down, busy or misconfigured (401/403/404/405/407/408): spooled, resent later. Rejected for what it is
    (400, 413, 415, ...): kept in the spool as `.rejected`, resent only by `glia flush --retry-rejected`."""
    url, headers, compression, _ = settings.target(signal)
    gzipped = compression == "gzip"
    data = compress(body, compression)
    status, detail = post(url, data, "application/x-protobuf", headers, timeout, gzipped)
    verdict = outcome(status)
    if verdict == SENT:
        return True
    if verdict == KEEP:
        if _spool.write(settings, signal, data, "pb", gzipped) is not None:
            warn_once(
                f"spooled:{url}",
                "%s; runs are kept in the spool %s and resent later (or by `glia flush`)",
                describe_failure(url, status, detail),
                settings.spool_dir,
            )
    else:
        report_rejected(url, status, detail, _spool.write(settings, signal, data, "pb", gzipped, rejected=True))
    return False


def spool_body(settings: Settings, signal: str, body: bytes) -> None:
    """Put an (uncompressed) body straight into the spool: its time to be sent is up."""
    compression = settings.target(signal)[2]
    if _spool.write(settings, signal, compress(body, compression), "pb", compression == "gzip") is not None:
        warn_once(
            f"spooled-deadline:{signal}",
            "export did not finish within the %d ms exit deadline; kept in the spool %s",
            settings.export_deadline_s * 1000,
            settings.spool_dir,
        )
