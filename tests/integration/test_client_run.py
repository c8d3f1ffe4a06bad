"""`glia run` against a real receiver: rows, exit codes, signals, trace context, and memory accuracy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReceiverServer, need
from tests.helpers import GLIA, Sql, client_env, glia_run

MIB = 1024 * 1024


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_a_wrapper_may_call_its_run_a_task(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    """A workflow engine's wrapper marks its run a task; any other kind it names stays a command."""
    env = client_env(receiver.url, tmp_path / "spool")
    for kind in ("task", "workflow"):
        proc = glia_run(["--name", kind, "--attr", f"glia.run.kind={kind}", "--", "true"], env)
        assert proc.returncode == 0, proc.stderr
    kinds = {row["name"]: row["run_kind"] for row in sql("SELECT name, run_kind FROM spans")}
    assert kinds == {"task": "task", "workflow": "command"}


def test_command_row(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    args = ["--name", "step1", "--attr", "sample=S1", "--", "sh", "-c", "echo out $$; echo err >&2; exit 3"]
    proc = subprocess.Popen(
        [GLIA, "run", *args, "--password", "hunter2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    word, child_pid = out.split()
    assert word == "out" and err == "err\n"
    (row,) = sql("SELECT * FROM spans")
    assert row["process_pid"] == int(child_pid)
    assert row["process_parent_pid"] == proc.pid  # glia itself
    assert row["name"] == "step1"
    assert row["run_kind"] == "command"
    assert row["exit_code"] == 3 and row["status_code"] == 2
    assert row["service_name"] == "sh"
    assert row["process_executable_name"] == "sh"
    assert row["process_command_args"][-2:] == ["--password", "[REDACTED]"]
    assert row["peak_rss_method"] in ("wait4", "wait4-python")
    assert row["peak_rss_bytes"] > 0
    assert row["tree_peak_method"] in ("cgroup", "sampled-tree", "wait4", "wait4-python")
    assert row["tree_peak_bytes"] > 0
    attrs = _json(row["attributes"])
    assert attrs["sample"] == "S1"
    assert "glia.memory.child_max_rss_bytes" not in attrs  # now peak_rss_bytes
    assert row["cpu_user_seconds"] is not None and row["io_read_bytes"] is not None


def test_no_args_leaves_arguments_out(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    assert glia_run(["--no-args", "--", "true"], env).returncode == 0
    assert glia_run(["--", "true", "x"], {**env, "GLIA_RECORD_ARGS": "false"}).returncode == 0
    rows = sql("SELECT process_command_args FROM spans")
    assert [r["process_command_args"] for r in rows] == [None, None]


def test_script_is_hashed_and_stdin_passes_through(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    script = tmp_path / "upper.sh"
    script.write_text("#!/bin/sh\ntr a-z A-Z\n")
    script.chmod(0o755)
    env = client_env(receiver.url, tmp_path / "spool")
    proc = glia_run(["--", str(script)], env, input="hello\n")
    assert proc.returncode == 0 and proc.stdout == "HELLO\n"
    (row,) = sql("SELECT * FROM spans")
    import hashlib

    assert row["script_path"] == str(script)
    assert row["script_sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()
    assert row["service_name"] == "upper"


def test_bad_commands_say_so_plainly(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    proc = glia_run([], env)
    assert proc.returncode == 2 and "no command given" in proc.stderr
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 0  # no command, no run
    proc = glia_run(["--", "no-such-command-xyz"], env)
    assert proc.returncode == 127
    assert "no-such-command-xyz: command not found" in proc.stderr
    not_exec = tmp_path / "data.txt"
    not_exec.write_text("x")
    proc = glia_run(["--", str(not_exec)], env)
    assert proc.returncode == 126
    assert "Permission denied" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = sql("SELECT process_executable_name AS exe, exit_code, status_code FROM spans ORDER BY exit_code")
    assert rows == [
        {"exe": "data.txt", "exit_code": 126, "status_code": 2},
        {"exe": "no-such-command-xyz", "exit_code": 127, "status_code": 2},
    ]
    assert not list((tmp_path / "spool").glob("*.pb*"))


def test_leftover_cgroups_of_dead_glia_processes_are_removed(tmp_path: Path) -> None:
    from glia_otel import _cgroup

    probe = _cgroup.create("probe")
    need(probe is not None, "no memory cgroup can be made here")
    assert probe is not None
    probe.remove()
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = Path(probe.path).with_name(f"glia-{dead.pid}-dead00")
    leftover.mkdir()
    env = client_env(None, tmp_path / "spool", GLIA_EXPORT_DEADLINE_MS="50")
    assert glia_run(["--", "true"], env).returncode == 0
    assert not leftover.exists()


def test_signal_is_forwarded_and_exit_is_128_plus_n(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    proc = subprocess.Popen([GLIA, "run", "--", "sleep", "30"], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert time.monotonic() - t0 < 5
    (row,) = sql("SELECT exit_code, status_code FROM spans")
    assert row == {"exit_code": 143, "status_code": 2}


def test_traceparent_makes_a_tracked_script_a_child_span(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    script = tmp_path / "inner.py"
    script.write_text("import glia_otel\nwith glia_otel.track('inner-step'):\n    pass\n")
    env = client_env(receiver.url, tmp_path / "spool")
    assert glia_run(["--name", "outer-cmd", "--", sys.executable, str(script)], env).returncode == 0
    rows = {r["name"]: r for r in sql("SELECT * FROM spans")}
    assert set(rows) == {"outer-cmd", "inner-step"}
    outer, inner = rows["outer-cmd"], rows["inner-step"]
    assert inner["trace_id"] == outer["trace_id"]
    assert inner["parent_span_id"] == outer["span_id"]
    assert outer["script_path"] == str(script)
    assert outer["service_name"] == "inner"


ALLOC = """
import time
x = bytearray({mib} * 1024 * 1024)
for i in range(0, len(x), 4096):
    x[i] = 1
time.sleep({hold})
"""


@pytest.mark.slow
def test_peak_and_tree_peak_match_gnu_time_within_2_percent(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    need(os.access("/usr/bin/time", os.X_OK), "GNU time (/usr/bin/time, Debian package `time`) is not installed")
    prog = tmp_path / "alloc.py"
    prog.write_text(ALLOC.format(mib=300, hold=0))
    gnu = subprocess.run(["/usr/bin/time", "-v", sys.executable, str(prog)], capture_output=True, text=True, check=True)
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", gnu.stderr)
    assert found is not None, gnu.stderr
    gnu_bytes = int(found[1]) * 1024
    env = client_env(receiver.url, tmp_path / "spool")
    assert glia_run(["--", sys.executable, str(prog)], env).returncode == 0
    (row,) = sql("SELECT peak_rss_bytes, tree_peak_bytes FROM spans")
    assert abs(row["peak_rss_bytes"] - gnu_bytes) / gnu_bytes < 0.02, (row, gnu_bytes)
    # one process: its tree's peak is its own, give or take the shared pages a cgroup does not charge
    assert abs(row["tree_peak_bytes"] - gnu_bytes) / gnu_bytes < 0.04, (row, gnu_bytes)


TREE = """
import subprocess, sys
code = ("import time\\nx = bytearray(100 * 1024 * 1024)\\n"
        "for i in range(0, len(x), 4096): x[i] = 1\\ntime.sleep(1.0)")
procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
for p in procs:
    p.wait()
"""


@pytest.mark.slow
@pytest.mark.no_coverage  # the bound counts each interpreter's ~10 MiB: coverage's tracer adds more than that to each
@pytest.mark.parametrize("use_cgroup", ["true", "false"])
def test_tree_of_three_children_reports_about_300_mib(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql, use_cgroup: str
) -> None:
    prog = tmp_path / "tree.py"
    prog.write_text(TREE)
    env = client_env(receiver.url, tmp_path / "spool", GLIA_CGROUP=use_cgroup)
    assert glia_run(["--", sys.executable, str(prog)], env).returncode == 0
    (row,) = sql("SELECT peak_rss_bytes, tree_peak_bytes, tree_peak_method FROM spans")
    # three children of 100 MiB and four interpreters (about 10 MiB each, less where a cgroup charges no shared page)
    assert 300 * MIB <= row["tree_peak_bytes"] <= 360 * MIB, row
    # the largest single process: one child
    assert 100 * MIB <= row["peak_rss_bytes"] < 130 * MIB, row
    if use_cgroup == "false":
        assert row["tree_peak_method"] == "sampled-tree"
    elif Path("/sys/fs/cgroup").exists() and os.geteuid() == 0:
        assert row["tree_peak_method"] == "cgroup"


def test_cpu_of_a_command_matches_getrusage(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    prog = tmp_path / "spin.py"
    prog.write_text(
        textwrap.dedent("""
        import resource, time
        t = time.process_time()
        while time.process_time() - t < 0.5:
            pass
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(ru.ru_utime + ru.ru_stime)
    """)
    )
    env = client_env(receiver.url, tmp_path / "spool")
    proc = glia_run(["--", sys.executable, str(prog)], env)
    assert proc.returncode == 0
    reported = float(proc.stdout)
    (row,) = sql("SELECT cpu_user_seconds, cpu_system_seconds FROM spans")
    total = row["cpu_user_seconds"] + row["cpu_system_seconds"]
    # The child's own getrusage stops just before its exit: allow 5% plus interpreter teardown.
    assert abs(total - reported) <= 0.05 * reported + 0.03, (total, reported)


def test_a_script_without_shebang_runs_under_sh_like_a_shell(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    script = tmp_path / "noshebang"
    script.write_text("echo hi from sh\nexit 4\n")
    script.chmod(0o755)
    proc = glia_run(["--", str(script)], client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == "hi from sh\n"
    (row,) = sql("SELECT exit_code FROM spans")
    assert row["exit_code"] == 4
