"""`glia run --keep-stderr`: the command's stderr passed through, its last lines stored as a log record of the run
(in `log_records`, linked to the run's span), redacted; and a command never harmed by glia dying while it writes.

Both readers are tested: glia's spawner (the usual case) and the Python tee used where the spawner cannot be built.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env, glia_run

READERS = ["spawner", "python-tee"]


def env_for(reader: str, receiver: ReceiverServer | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = client_env(receiver.url if receiver else None, tmp_path / "spool", **extra)
    if reader == "python-tee":
        # no compiler: glia cannot build its spawner and forks the command itself (wait4-python)
        env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), CC="/nonexistent/cc")
    return env


def the_run(sql: Sql) -> dict[str, Any]:
    (run,) = sql("SELECT trace_id, span_id, exit_code, peak_rss_method FROM spans")
    return run


def records(sql: Sql) -> list[dict[str, Any]]:
    return sql("SELECT trace_id, span_id, body #>> '{}' AS body, attributes, event_name FROM log_records")


@pytest.mark.parametrize("reader", READERS)
def test_a_failed_commands_stderr_tail_is_passed_through_and_stored_with_its_run(
    reader: str, receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    script = (
        'for i in $(seq 1 100); do echo "progress $i" >&2; done; echo to-stdout;'
        " echo 'connect --password hunter2 AWS_SECRET_ACCESS_KEY=abc postgres://ada:pw@db/x' >&2; exit 3"
    )
    proc = glia_run(["--keep-stderr", "--", "sh", "-c", script], env_for(reader, receiver, tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "to-stdout\n"
    # passed through as it came, all of it
    passed = [line for line in proc.stderr.splitlines() if line.startswith(("progress", "connect"))]
    assert passed == [f"progress {i}" for i in range(1, 101)] + [
        "connect --password hunter2 AWS_SECRET_ACCESS_KEY=abc postgres://ada:pw@db/x"
    ]
    run = the_run(sql)
    assert run["exit_code"] == 3
    assert run["peak_rss_method"] == ("wait4" if reader == "spawner" else "wait4-python")
    (record,) = records(sql)
    assert (record["trace_id"], record["span_id"]) == (run["trace_id"], run["span_id"])
    lines = record["body"].split("\n")
    assert len(lines) == 64
    assert lines[:-1] == [f"progress {i}" for i in range(38, 101)]
    assert lines[-1] == "connect --password [REDACTED] AWS_SECRET_ACCESS_KEY=[REDACTED] postgres://ada:[REDACTED]@db/x"
    assert "hunter2" not in record["body"] and "abc" not in record["body"]
    attributes = json.loads(record["attributes"])
    total = sum(len(f"progress {i}\n") for i in range(1, 101)) + len(passed[-1]) + 1
    assert attributes == {
        "log.iostream": "stderr",
        "glia.stderr.lines": 64,
        "glia.stderr.bytes": total,
        "glia.stderr.truncated": True,
    }
    assert record["event_name"] == "glia.run.stderr"


@pytest.mark.parametrize("reader", READERS)
def test_the_tail_is_at_most_16_kib_of_whole_lines(
    reader: str, receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    script = "for i in $(seq 1 40); do printf 'L%02d%01000d\\n' $i 0 >&2; done; exit 1"
    proc = glia_run(["--keep-stderr", "--", "sh", "-c", script], env_for(reader, receiver, tmp_path))
    assert proc.returncode == 1, proc.stderr
    (record,) = records(sql)
    lines = record["body"].split("\n")
    assert len(record["body"].encode()) <= 16 * 1024
    # 16 KiB holds 16 lines of 1004 bytes and the end of another, which is dropped: whole lines only
    assert [line[:3] for line in lines] == [f"L{i:02d}" for i in range(25, 41)]
    assert all(len(line) == 1003 for line in lines)


def test_a_successful_command_keeps_nothing_unless_always(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> None:
    env = env_for("spawner", receiver, tmp_path)
    assert glia_run(["--keep-stderr", "--", "sh", "-c", "echo fine >&2"], env).returncode == 0
    assert records(sql) == []
    assert glia_run(["--keep-stderr=always", "--", "sh", "-c", "echo fine >&2"], env).returncode == 0
    assert [r["body"] for r in records(sql)] == ["fine"]
    # the environment switches it on too, and the option wins over it
    env_always = {**env, "GLIA_KEEP_STDERR": "always"}
    assert glia_run(["--", "sh", "-c", "echo from-env >&2"], env_always).returncode == 0
    assert glia_run(["--keep-stderr=never", "--", "sh", "-c", "echo not-kept >&2"], env_always).returncode == 0
    assert sorted(r["body"] for r in records(sql)) == ["fine", "from-env"]
    # a failed command that wrote nothing to stderr: no record
    assert glia_run(["--keep-stderr", "--", "sh", "-c", "exit 2"], env).returncode == 2
    assert len(records(sql)) == 2


def test_without_the_switch_stderr_is_the_commands_own(receiver: ReceiverServer, tmp_path: Path) -> None:
    """The command's fd 2 is glia's own (here a file) unless --keep-stderr makes it a pipe."""
    env = env_for("spawner", receiver, tmp_path)
    target = tmp_path / "stderr.txt"
    for options, expect in (([], str(target)), (["--keep-stderr"], "pipe:")):
        with target.open("w") as err:
            proc = subprocess.run(
                [GLIA, "run", *options, "--", "readlink", "/proc/self/fd/2"],
                env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=60,
            )  # fmt: skip
        assert proc.returncode == 0
        assert proc.stdout.startswith(expect), (options, proc.stdout)


def test_a_bad_value_is_a_usage_error_or_said_once(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> None:
    env = env_for("spawner", receiver, tmp_path)
    proc = glia_run(["--keep-stderr=sometimes", "--", "true"], env)
    assert proc.returncode == 2 and "--keep-stderr='sometimes'" in proc.stderr
    proc = glia_run(["--", "sh", "-c", "echo x >&2; exit 1"], {**env, "GLIA_KEEP_STDERR": "maybe"})
    assert proc.returncode == 1
    assert "GLIA_KEEP_STDERR='maybe'" in proc.stderr and "left as it is" in proc.stderr
    # the first was refused before running anything; the second ran, recorded, its stderr left alone
    assert len(sql("SELECT * FROM spans")) == 1 and records(sql) == []


@pytest.mark.parametrize("reader", READERS)
def test_the_command_outlives_a_killed_glia_and_keeps_writing_to_stderr(reader: str, tmp_path: Path) -> None:
    """SIGKILL of glia while the command writes to stderr: no SIGPIPE, no EPIPE, every line still arrives."""
    marker, failed, out = tmp_path / "done", tmp_path / "failed", tmp_path / "stderr.txt"
    script = f"for i in $(seq 1 40); do echo line $i >&2 || echo $i >> {failed}; sleep 0.05; done; echo ok > {marker}"
    env = env_for(reader, None, tmp_path)
    with out.open("w") as err:
        glia = subprocess.Popen([GLIA, "run", "--keep-stderr", "--", "sh", "-c", script], env=env, stderr=err)
    deadline = time.monotonic() + 30
    while "line 5\n" not in out.read_text():
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.02)
    glia.send_signal(signal.SIGKILL)
    assert glia.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, f"the command did not finish: {out.read_text()[-300:]}"
        time.sleep(0.05)
    time.sleep(0.2)  # the last line, passed on by the reader after the command's end
    assert not failed.exists(), f"writes failed after glia died: {failed.read_text()}"
    lines = [line for line in out.read_text().splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1, 41)]


@pytest.mark.parametrize("reader", READERS)
def test_a_descendant_still_writing_after_the_command_is_passed_through(
    reader: str, receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    """glia does not wait for a background process holding stderr, and that process is never cut off."""
    marker, out = tmp_path / "late-done", tmp_path / "stderr.txt"
    script = f"(sleep 2; echo late >&2 && echo ok > {marker}) & echo early >&2; exit 5"
    started = time.monotonic()
    with out.open("w") as err:
        proc = subprocess.run(
            [GLIA, "run", "--keep-stderr", "--", "sh", "-c", script],
            env=env_for(reader, receiver, tmp_path), stderr=err, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 5
    assert time.monotonic() - started < 2.0, "glia waited for the background process"
    assert [r["body"] for r in records(sql)] == ["early"]
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.05)
    time.sleep(0.1)
    assert [line for line in out.read_text().splitlines() if line in ("early", "late")] == ["early", "late"]


def test_a_kept_tail_waits_in_the_spool_and_glia_flush_posts_it_to_v1_logs(
    receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    down = env_for("spawner", None, tmp_path)
    assert glia_run(["--keep-stderr", "--", "sh", "-c", "echo spooled >&2; exit 1"], down).returncode == 1
    names = sorted(p.name.split("-", 1)[0] for p in (tmp_path / "spool").iterdir() if p.name != ".lock")
    assert names == ["logs", "traces"]
    proc = subprocess.run([GLIA, "flush"], env=client_env(receiver.url, tmp_path / "spool"), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = the_run(sql)
    (record,) = records(sql)
    assert (record["body"], record["span_id"]) == ("spooled", run["span_id"])
    assert not [p for p in (tmp_path / "spool").iterdir() if p.name != ".lock"]
