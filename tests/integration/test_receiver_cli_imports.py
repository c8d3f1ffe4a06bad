"""The database commands (`glia runs`, `show`, `keys`, `retention`) import no web framework: they share the query
layer with the API (`receiver/query.py`), not the API itself, so they start without FastAPI, Starlette or pydantic.

Each case runs the real command in a fresh interpreter against a seeded database and lists, at its end, the
top-level packages it loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO
from tests.helpers import run_id, seed_runs

WEB = frozenset({"fastapi", "starlette", "pydantic", "pydantic_core", "pydantic_settings", "uvicorn"})

CASE = """
import atexit, sys
atexit.register(lambda: print("IMPORTED", *sorted({m.split(".")[0] for m in sys.modules})))
from glia_otel._cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.exit(code)
"""


def imported(*argv: str) -> tuple[set[str], str]:
    """The top-level packages `glia ARGV...` loaded, and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLIA_")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CASE), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTED")]
    return set(line.split()[1:]), proc.stdout


@pytest.fixture
def seeded_url(database_url: str) -> str:
    seed_runs(database_url, n=3, months=1)
    return database_url


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "--format", "json"],
        ["runs", "--since", "30d", "--attr", "pipeline=wgs", "--sort=-wall_seconds"],
        ["show", run_id(1)],
        ["keys", "list"],
        ["retention", "--show-policy"],
    ],
    ids=["runs", "runs-filtered", "show", "keys", "retention"],
)
def test_database_commands_import_no_web_framework(seeded_url: str, argv: list[str]) -> None:
    got, out = imported(*argv, "--database-url", seeded_url)
    assert got & WEB == set(), f"glia {argv[0]} imports a web framework"
    assert "asyncpg" in got  # the case ran against the database
    if argv[0] == "show":
        assert out.startswith(f"run {run_id(1)}")
