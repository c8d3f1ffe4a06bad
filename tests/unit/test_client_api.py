"""The public surface of glia_otel is exactly what was intended."""

from __future__ import annotations

import subprocess
import sys

import glia_otel


def test_public_surface_is_pinned() -> None:
    assert sorted(glia_otel.__all__) == ["Run", "configure", "force_flush", "shutdown", "track"]
    for name in glia_otel.__all__:
        assert getattr(glia_otel, name).__doc__, f"{name} needs a docstring"
    # Besides __all__, only the hooks IPython looks up for `%load_ext glia_otel` (not for `import *`)
    public = {n for n in vars(glia_otel) if not n.startswith("_")} - {"TYPE_CHECKING", *glia_otel.__all__}
    assert public == {"load_ipython_extension", "unload_ipython_extension"}
    for name in public:
        assert getattr(glia_otel, name).__doc__, f"{name} needs a docstring"


def test_import_does_not_load_opentelemetry() -> None:
    # `glia run` imports the package; the SDK must not come with it.
    code = (
        "import sys, glia_otel, glia_otel._run\n"
        "print(any(m.startswith(('opentelemetry', 'google.protobuf')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_version_is_written_once() -> None:
    # glia_otel/_version.py is what the build reads (pyproject's [tool.hatch.version]) and what the code prints.
    from importlib.metadata import version

    from glia_otel._version import __version__

    assert version("glia") == __version__
    code = (
        "import sys\nfrom glia_otel._cli import main\nmain(['--version'])\nprint('importlib.metadata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == [f"glia {__version__}", "False"]
