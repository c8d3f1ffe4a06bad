"""Glia's Python client: every tracked block, function or command becomes one OpenTelemetry span.

    import glia_otel

    with glia_otel.track("train", dataset="cifar10") as run:
        ...
        run.set(accuracy=0.93)

In IPython or Jupyter, `%load_ext glia_otel` gives `%%track` (one cell as a run) and `%glia_autotrack on|off`.

Importing this package is cheap: the API is loaded on first use, so `glia run` starts its command at once.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._track import Run, configure, force_flush, shutdown, track

__all__ = ["Run", "configure", "force_flush", "shutdown", "track"]


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext glia_otel`: gives `%%track [NAME] [k=v ...]` and `%glia_autotrack on|off` (docs/integrations.md)."""
    from ._notebook import load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """`%unload_ext glia_otel`: removes them; a cell run still open ends."""
    from ._notebook import unload

    unload(ipython)


def __getattr__(name: str) -> object:
    if name in __all__:
        from . import _track

        value = getattr(_track, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'glia_otel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
