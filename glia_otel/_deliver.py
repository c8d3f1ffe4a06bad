"""Deliver an OTLP request body within a timeout, or put its exact bytes in the spool."""

from __future__ import annotations

from . import _spool
from ._config import Settings
from ._export import ENDPOINT_PROBLEM, NO_ANSWER, RETRYABLE, compress, describe_failure, post, report_rejected
from ._log import warn_once


def deliver(settings: Settings, signal: str, body: bytes, timeout: float) -> bool:
    """Post an (uncompressed) protobuf body; spool it unless delivered. True if delivered.

    Down, busy or misconfigured (401/403/404/405/407/408): spooled, resent later. Rejected for what it is
    (400, 413, 415, ...): kept in the spool as `.rejected`, resent only by `glia flush --retry-rejected`.
    """
    url, headers, compression, _ = settings.target(signal)
    gzipped = compression == "gzip"
    data = compress(body, compression)
    status, detail = post(url, data, "application/x-protobuf", headers, timeout, gzipped)
    if 200 <= status < 300:
        return True
    if status == NO_ANSWER or status in RETRYABLE or status in ENDPOINT_PROBLEM:
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
    """Put an (uncompressed) body straight into the spool."""
    compression = settings.target(signal)[2]
    if _spool.write(settings, signal, compress(body, compression), "pb", compression == "gzip") is not None:
        warn_once(
            f"spooled-deadline:{signal}",
            "export did not finish within the %d ms exit deadline; kept in the spool %s",
            settings.export_deadline_s * 1000,
            settings.spool_dir,
        )
