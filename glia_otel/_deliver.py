"""Deliver an OTLP request body within a timeout, or put its exact bytes in the spool."""

from __future__ import annotations

from . import _spool
from ._config import Settings
from ._export import NO_ANSWER, RETRYABLE, compress, describe_failure, post, report_permanent
from ._log import warn_once


def deliver(settings: Settings, signal: str, body: bytes, timeout: float) -> bool:
    """Post an (uncompressed) protobuf body; spool it if the endpoint is down or busy. True if delivered."""
    if signal == "metrics":
        url, headers, compression = (
            settings.metrics_endpoint,
            settings.metrics_headers,
            settings.metrics_compression,
        )
    else:
        url, headers, compression = (
            settings.traces_endpoint,
            settings.traces_headers,
            settings.traces_compression,
        )
    gzipped = compression == "gzip"
    data = compress(body, compression)
    status, detail = post(url, data, "application/x-protobuf", headers, timeout, gzipped)
    if 200 <= status < 300:
        return True
    if status == NO_ANSWER or status in RETRYABLE:
        if _spool.write(settings, signal, data, "pb", gzipped) is not None:
            warn_once(
                f"spooled:{url}",
                "%s; runs are kept in the spool %s and resent later (or by `glia flush`)",
                describe_failure(url, status, detail),
                settings.spool_dir,
            )
    else:
        report_permanent(url, status, detail)
    return False


def spool_body(settings: Settings, signal: str, body: bytes) -> None:
    """Put an (uncompressed) body straight into the spool."""
    compression = settings.metrics_compression if signal == "metrics" else settings.traces_compression
    if _spool.write(settings, signal, compress(body, compression), "pb", compression == "gzip") is not None:
        warn_once(
            f"spooled-deadline:{signal}",
            "export did not finish within the %d ms exit deadline; kept in the spool %s",
            settings.export_deadline_s * 1000,
            settings.spool_dir,
        )
