"""`glia`, `glia run` and `glia flush` given bad arguments or bad settings: the exit code, the message, and that
the user's command still runs (untracked) when the settings are wrong."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env, glia_run


def glia(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GLIA, *args], env=env, capture_output=True, text=True, timeout=60)


def test_glia_version_is_the_installed_distributions(tmp_path: Path) -> None:
    proc = glia(["--version"], client_env(None, tmp_path / "spool"))
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"glia {version('glia')}\n"


def test_glia_run_help_and_usage_errors(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    helped = glia_run(["--help"], env)
    assert helped.returncode == 0 and helped.stderr == ""
    assert helped.stdout.startswith("usage: glia run ") and "--attr KEY=VALUE" in helped.stdout

    cases = {
        (): "glia run: no command given",
        ("--",): "glia run: no command given",
        ("--attr",): "glia run: --attr needs KEY=VALUE",
        ("--attr", "=v", "--", "true"): "glia run: --attr '=v': expected KEY=VALUE",
        ("--name",): "glia run: --name needs a value",
        ("--verbose", "true"): "glia run: unknown option '--verbose' (put the command after --)",
    }
    for args, message in cases.items():
        proc = glia_run(list(args), env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
        first, blank, usage = proc.stderr.split("\n", 2)
        assert (first, blank) == (message, ""), (args, proc.stderr)
        assert usage.startswith("usage: glia run "), (args, proc.stderr)
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}], "no run for a command that never ran"


def test_name_and_attr_in_their_equals_forms(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    proc = glia_run(["--name=align", "--attr=sample=S9", "--", "true"], env)
    assert proc.returncode == 0, proc.stderr
    (row,) = sql("SELECT name, attributes->>'sample' AS sample, exit_code FROM spans")
    assert row == {"name": "align", "sample": "S9", "exit_code": 0}


def test_bad_settings_run_the_command_untracked_with_its_exit_code(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    spool = tmp_path / "spool"
    env = client_env(receiver.url, spool, GLIA_EXPORT_DEADLINE_MS="soon")
    proc = glia_run(["--", "sh", "-c", "echo out; echo err >&2; exit 4"], env)
    assert proc.returncode == 4
    assert proc.stdout == "out\n"
    assert proc.stderr == (
        "glia run: GLIA_EXPORT_DEADLINE_MS='soon': expected a number of milliseconds; running the command untracked\n"
        "err\n"
    )
    missing = glia_run(["--", str(tmp_path / "no-such-program")], env)
    assert missing.returncode == 127
    assert missing.stderr.endswith(f"glia run: {tmp_path / 'no-such-program'}: command not found\n"), missing.stderr
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
    assert not spool.exists(), "an untracked command leaves nothing to resend"


def test_glia_flush_with_bad_settings_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    proc = glia(["flush"], client_env(None, tmp_path / "spool", GLIA_SPOOL_MAX_BYTES="lots"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("glia flush: GLIA_SPOOL_MAX_BYTES='lots'"), proc.stderr


def test_glia_flush_without_a_spool_has_nothing_to_send(tmp_path: Path, receiver: ReceiverServer) -> None:
    spool = tmp_path / "never-made"
    proc = glia(["flush"], client_env(receiver.url, spool))
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("glia flush: sent 0 request(s), 0 span(s), 0 bytes to "), proc.stdout
    assert not spool.exists(), "flush does not make the spool it was asked to read"


def test_help_into_a_closed_pipe_ends_quietly_as_sigpipe_would(tmp_path: Path) -> None:
    """`glia run --help | head -1`: the reader is gone before glia writes; no traceback, the shell's 141."""
    env = client_env(None, tmp_path / "spool")
    for args in (["--help"], ["run", "--help"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader left before the first write
        try:
            proc = subprocess.run([GLIA, *args], env=env, stdout=write_end, stderr=subprocess.PIPE, timeout=60)
        finally:
            os.close(write_end)
        assert proc.returncode == 141, (args, proc.returncode, proc.stderr)
        assert proc.stderr == b"", (args, proc.stderr)
