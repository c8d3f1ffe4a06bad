"""Glia's Python client: every tracked block, function or command becomes one OpenTelemetry span.

    import glia_otel

    with glia_otel.track("train", dataset="cifar10") as run:
        ...
        run.set(accuracy=0.93)

Importing this package is cheap; OpenTelemetry is imported on first use.
"""

from ._track import Run, configure, force_flush, shutdown, track

__all__ = ["Run", "configure", "force_flush", "shutdown", "track"]
