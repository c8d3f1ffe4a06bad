"""What `glia run` and a tracked block import, pinned by name, so that a regression in their start-up cost fails here
by the module that brought it rather than in a benchmark by a few milliseconds.

Each case runs in a fresh interpreter and lists the modules loaded after start-up, at its very end (after glia's own
exit work); anything outside the allowed set fails the test with its name. The figures in docs/benchmarks.md are
what these sets cost.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ReceiverServer
from tests.helpers import client_env

# Modules a run loads besides glia's own: C modules and a few small pure-Python ones. Not `typing` (it brings `re`,
# `enum`, `contextlib`), `logging`, `socket`, `importlib` or anything of OpenTelemetry; `glia run` not even `threading`.
RUN_IMPORTS = frozenset(
    {
        "__future__",
        "_sha256",  # the spawner's source hash, its name in the cache (the built-in module, not OpenSSL's hashlib)
        "_socket",
        "_struct",
        "errno",
        "fcntl",  # the spool's flush lock, when the next run resends what is there
        "pwd",
        "resource",
        "struct",
        "zlib",
        *(
            f"glia_otel.{m}"
            for m in ("_cgroup", "_cli", "_config", "_deliver", "_export", "_log", "_measure", "_otlp", "_redact")
        ),
        *(f"glia_otel.{m}" for m in ("_resource", "_run", "_scheduler", "_spawner", "_spool", "_version")),
        "glia_otel",
    }
)
BLOCK_IMPORTS = frozenset(
    {
        "__future__",
        "_contextvars",
        "_sha256",  # the script's hash
        "_socket",
        "_struct",
        "contextvars",
        "errno",
        "fcntl",
        "math",
        # `threading` for the export thread, imported by the thread that configures glia (a thread of glia's own must
        # never be the first to import it: `threading` would take that thread for the main one and wait for it at exit)
        "threading",
        *("_collections", "_functools", "_operator", "_weakrefset", "collections", "collections.abc", "functools"),
        *("itertools", "keyword", "operator", "reprlib", "types"),
        "pwd",
        "resource",
        "struct",
        "zlib",
        "glia_otel",
        *(f"glia_otel.{m}" for m in ("_attrs", "_config", "_deliver", "_export", "_live", "_log", "_measure")),
        "glia_otel._metrics",
        *(f"glia_otel.{m}" for m in ("_otlp", "_pipeline", "_redact", "_resource", "_scheduler", "_span", "_spool")),
        "glia_otel._track",
        "glia_otel._version",
    }
)
# Over what the application's own OpenTelemetry imports brought: the bridge, and nothing of the SDK's.
BRIDGE_IMPORTS = BLOCK_IMPORTS | {"glia_otel._bridge"}
APP_PROVIDER_IMPORTS = frozenset(
    {
        "glia_otel",
        *(f"glia_otel.{m}" for m in ("_attrs", "_bridge", "_config", "_log", "_measure", "_span", "_track")),
        "glia_otel._otlp",
        "glia_otel._version",
    }
)

# Printed at exit, after glia's own atexit export (atexit runs handlers last-registered first).
REPORT = """
import atexit, sys
loaded = set(sys.modules)
def mark():
    global loaded
    loaded = set(sys.modules)
atexit.register(lambda: print("IMPORTED", *sorted(set(sys.modules) - loaded)))
"""


def imported(code: str, env: dict[str, str], tmp: Path) -> set[str]:
    """The modules loaded by `code` after the interpreter's start (or after its call of `mark()`)."""
    script = tmp / "case.py"
    script.write_text(textwrap.dedent(REPORT) + textwrap.dedent(code))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTED")]
    return set(line.split()[1:])


@pytest.fixture(params=["up", "down"])
def endpoint(request: pytest.FixtureRequest) -> str | None:
    if request.param == "down":
        return None
    receiver: ReceiverServer = request.getfixturevalue("receiver")
    return receiver.url


def test_glia_run_imports_only_what_a_run_needs(tmp_path: Path, endpoint: str | None) -> None:
    code = "from glia_otel._cli import main\nassert main(['run', '--', 'true']) == 0\n"
    got = imported(code, client_env(endpoint, tmp_path / "spool"), tmp_path)
    assert got - RUN_IMPORTS == set(), "glia run imports more than it needs"
    assert "glia_otel._run" in got and "glia_otel._otlp" in got  # the case ran


def test_a_tracked_block_imports_neither_the_api_nor_the_sdk(tmp_path: Path, endpoint: str | None) -> None:
    code = "import glia_otel\nwith glia_otel.track('job', n=1):\n    sum(range(1000))\n"
    got = imported(code, client_env(endpoint, tmp_path / "spool"), tmp_path)
    assert got - BLOCK_IMPORTS == set(), "a tracked block imports more than it needs"
    assert "glia_otel._pipeline" in got


def test_with_the_api_imported_glia_adds_its_bridge_and_not_the_sdk(tmp_path: Path) -> None:
    code = """
    from opentelemetry import trace
    mark()
    import glia_otel
    with glia_otel.track("job"):
        with trace.get_tracer("lib").start_as_current_span("child"):
            pass
    """
    got = imported(code, client_env(None, tmp_path / "spool"), tmp_path)
    assert got - BRIDGE_IMPORTS == set(), "glia imports more than its bridge for an application using the API"
    assert "glia_otel._bridge" in got


def test_with_the_applications_provider_glia_adds_only_its_own_modules(tmp_path: Path) -> None:
    code = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with trace.get_tracer("warm").start_as_current_span("warm"):
        pass
    mark()
    import glia_otel
    with glia_otel.track("job"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["warm", "job"]
    """
    got = imported(code, client_env(None, tmp_path / "spool"), tmp_path)
    assert got - APP_PROVIDER_IMPORTS == set(), "glia imports more than its own modules on the application's provider"
    assert "glia_otel._bridge" in got
