"""`glia run` against GNU time: the accuracy table, the spawner that makes it hold, and what a cgroup adds.

GNU time (`/usr/bin/time -f %M`, Debian package `time`) is the reference: `glia run`'s `peak_rss_bytes` (the runs
view's `max_rss_kb`) must be within max(3%, 1 MiB) of its %M, from a shell builtin to 1 GiB. That needs glia's
spawner (`glia_otel/_spawn.c`), which needs a C compiler: without one these tests skip (fail under CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from glia_otel import _spawner
from tests.conftest import ReceiverServer, need
from tests.helpers import Sql, client_env, glia_run

MIB = 1024 * 1024
GNU_TIME = "/usr/bin/time"

# Touches every page of N MiB, then holds it for S seconds.
TOUCH = "import time\nx = bytearray({mib} * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\ntime.sleep({hold})"

PROGRAMS: dict[str, list[str]] = {
    "sh -c true": ["sh", "-c", "true"],
    "python -c pass": [sys.executable, "-c", "pass"],
    "python 20 MiB": [sys.executable, "-c", TOUCH.format(mib=20, hold=0)],
    "python 20 MiB for 0.1 s": [sys.executable, "-c", TOUCH.format(mib=20, hold=0.1)],
    "python 200 MiB": [sys.executable, "-c", TOUCH.format(mib=200, hold=0)],
}
SLOW_PROGRAMS: dict[str, list[str]] = {
    "python 1 GiB": [sys.executable, "-c", TOUCH.format(mib=1024, hold=0)],
    "python 100 MiB held 10 s": [sys.executable, "-c", TOUCH.format(mib=100, hold=10)],
}


def _has_compiler() -> bool:
    return any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory of this module's own: the spawner is built once for all its tests."""
    need(os.access(GNU_TIME, os.X_OK), "GNU time (/usr/bin/time, Debian package `time`) is not installed")
    need(_has_compiler(), "no C compiler (cc, gcc or clang) to build glia's spawner")
    return tmp_path_factory.mktemp("cache")


def gnu_time_bytes(cmd: list[str]) -> int:
    out = subprocess.run([GNU_TIME, "-f", "%M", *cmd], capture_output=True, text=True, timeout=120, check=True)
    return int(out.stderr.split()[-1]) * 1024


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _check_against_gnu_time(cmd: list[str], tmp_path: Path, cache: Path, receiver: ReceiverServer, sql: Sql) -> None:
    reference = gnu_time_bytes(cmd)
    env = client_env(receiver.url, tmp_path / "spool", XDG_CACHE_HOME=str(cache))
    proc = glia_run(["--", *cmd], env)
    assert proc.returncode == 0, proc.stderr
    (row,) = sql("SELECT peak_rss_bytes, peak_rss_method FROM spans")
    assert row["peak_rss_method"] == "wait4"
    tolerance = max(0.03 * reference, MIB)
    assert abs(row["peak_rss_bytes"] - reference) <= tolerance, (row["peak_rss_bytes"] // 1024, reference // 1024)
    (view,) = sql("SELECT max_rss_kb FROM runs")
    assert abs(view["max_rss_kb"] * 1024 - reference) <= tolerance


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_peak_rss_matches_gnu_time(
    program: str, tmp_path: Path, cache: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    _check_against_gnu_time(PROGRAMS[program], tmp_path, cache, receiver, sql)


@pytest.mark.slow
@pytest.mark.parametrize("program", list(SLOW_PROGRAMS))
def test_peak_rss_matches_gnu_time_large_and_long(
    program: str, tmp_path: Path, cache: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    _check_against_gnu_time(SLOW_PROGRAMS[program], tmp_path, cache, receiver, sql)


def test_the_spawner_is_built_once_into_the_cache_named_by_its_source(tmp_path: Path, cache: Path) -> None:
    fresh = tmp_path / "cache"
    env = client_env(None, tmp_path / "spool", XDG_CACHE_HOME=str(fresh), GLIA_EXPORT_DEADLINE_MS="50")
    assert glia_run(["--", "true"], env).returncode == 0
    name = _spawner.binary_name(Path(_spawner.SOURCE).read_bytes())
    binary = fresh / "glia" / name
    assert binary.is_file() and name.startswith("spawn-")
    assert (binary.stat().st_mode & 0o777) == 0o700 and ((fresh / "glia").stat().st_mode & 0o777) == 0o700
    assert [p.name for p in (fresh / "glia").iterdir()] == [name]  # no temporary file left behind
    first = binary.stat()
    assert glia_run(["--", "true"], env).returncode == 0
    again = binary.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # used, not rebuilt


def test_without_a_compiler_glia_forks_from_python_and_says_so(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    env = client_env(receiver.url, tmp_path / "spool", XDG_CACHE_HOME=str(tmp_path / "cache"), CC="/nonexistent/cc")
    proc = glia_run(["--", "sh", "-c", "exit 3"], env)
    assert proc.returncode == 3
    assert proc.stderr == ""  # nothing to say on every run: the run's record says it
    (row,) = sql("SELECT peak_rss_bytes, peak_rss_method, tree_peak_bytes, attributes FROM spans")
    assert row["peak_rss_method"] == "wait4-python"
    # today's method: the child starts as a copy of glia's Python process, which is several MiB
    assert row["peak_rss_bytes"] > 4 * MIB
    assert "no C compiler" in _json(row["attributes"])["glia.run.spawner_problem"]


def test_a_failed_build_is_said_once_and_not_retried_on_every_run(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    cache_dir = tmp_path / "cache"
    env = client_env(receiver.url, tmp_path / "spool", XDG_CACHE_HOME=str(cache_dir), CC="/bin/false")
    first = glia_run(["--", "true"], env)
    assert first.returncode == 0
    assert "could not build its spawner" in first.stderr and "wait4-python" in first.stderr
    (marker,) = (cache_dir / "glia").glob("*.failed")
    second = glia_run(["--", "true"], env)
    assert second.returncode == 0 and second.stderr == ""
    rows = sql("SELECT peak_rss_method, attributes FROM spans")
    assert [r["peak_rss_method"] for r in rows] == ["wait4-python", "wait4-python"]
    assert all(str(marker) in _json(r["attributes"])["glia.run.spawner_problem"] for r in rows[1:])


def test_spawned_command_sees_what_a_direct_child_sees(tmp_path: Path, cache: Path) -> None:
    """No extra file descriptor, default SIGPIPE, nothing blocked, glia's cgroup, TRACEPARENT."""
    probe = (
        "import os, signal\n"
        "print(sorted(os.listdir('/proc/self/fd')))\n"
        "print(signal.pthread_sigmask(signal.SIG_BLOCK, []))\n"
        "print(open('/proc/self/cgroup').read().count('glia-'))\n"
        "print(os.environ.get('TRACEPARENT', '')[:3])\n"
    )
    env = client_env(None, tmp_path / "spool", XDG_CACHE_HOME=str(cache), GLIA_EXPORT_DEADLINE_MS="50")
    proc = glia_run(["--", sys.executable, "-c", probe], env)
    assert proc.returncode == 0, proc.stderr
    fds, mask, in_cgroup, traceparent = proc.stdout.splitlines()
    assert fds == "['0', '1', '2', '3']"  # stdio and the listing's own
    assert mask == "set()"
    assert traceparent == "00-"
    from glia_otel import _cgroup

    made = _cgroup.create("probe")
    if made is not None:
        made.remove()
        assert in_cgroup == "1"
    # SIGPIPE at its default: `yes` ends quietly when `head` stops reading (ignored, it would print EPIPE errors)
    proc = glia_run(["--", "sh", "-c", "yes | head -n 1"], env)
    assert proc.returncode == 0 and proc.stdout == "y\n" and "Broken pipe" not in proc.stderr


def test_signals_reach_the_command_through_the_spawner(tmp_path: Path, cache: Path) -> None:
    env = client_env(None, tmp_path / "spool", XDG_CACHE_HOME=str(cache), GLIA_EXPORT_DEADLINE_MS="50")
    script = "trap 'echo got USR1; exit 5' USR1; echo ready; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("glia")), "run", "--", "sh", "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 5 and out == "got USR1\n"


# -- the cgroup's OOM-kill count ------------------------------------------------------------------------------------


def _limited_cgroup(limit: int) -> Path | None:
    """A cgroup v1 memory cgroup under this process's own with a memory limit, or None where none can be made."""
    from glia_otel import _cgroup

    probe = _cgroup.create("probe")
    if probe is None or probe.version != 1:
        if probe is not None:
            probe.remove()
        return None
    probe.remove()
    path = Path(probe.path).with_name(f"gliatest-oom-{os.getpid()}")
    try:
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(str(limit))
    except OSError:
        return None
    return path


def test_an_oom_kill_is_counted_and_told_from_another_sigkill(
    tmp_path: Path, cache: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    limited = _limited_cgroup(96 * MIB)
    need(limited is not None, "no cgroup v1 memory cgroup with a limit can be made here (cgroup v2 untested)")
    assert limited is not None
    try:
        env = client_env(receiver.url, tmp_path / "spool", XDG_CACHE_HOME=str(cache))
        glia = str(Path(sys.executable).with_name("glia"))
        # glia runs in the limited cgroup and makes the run's own under it, where the limit applies
        join = f'echo $$ > {limited}/cgroup.procs && exec "$@"'
        hog = subprocess.run(
            [
                "sh",
                "-c",
                join,
                "sh",
                glia,
                "run",
                "--name",
                "hog",
                "--",
                sys.executable,
                "-c",
                TOUCH.format(mib=300, hold=0),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        killed = subprocess.run(
            ["sh", "-c", join, "sh", glia, "run", "--name", "killed", "--", "sh", "-c", "kill -KILL $$"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for _ in range(50):
            try:
                limited.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert hog.returncode == 137 and killed.returncode == 137, (hog.stderr, killed.stderr)
    rows = {r["name"]: r for r in sql("SELECT name, exit_code, oom_kills, tree_peak_bytes FROM spans")}
    assert rows["hog"]["exit_code"] == 137 and rows["hog"]["oom_kills"] == 1
    assert rows["hog"]["tree_peak_bytes"] <= 96 * MIB
    assert rows["killed"]["exit_code"] == 137 and rows["killed"]["oom_kills"] == 0
    (view,) = sql("SELECT oom_kills FROM runs WHERE run_name = 'hog'")
    assert view["oom_kills"] == 1


# -- I/O of descendants that outlive their parent --------------------------------------------------------------------

WRITE_8_MIB = "dd if=/dev/zero of={path} bs=1M count=8 2>/dev/null"


def test_io_of_an_orphan_that_ends_before_the_command_is_counted(
    tmp_path: Path, cache: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    # `( x & )`: the subshell starts x and exits at once, so x is orphaned while the command still runs
    out, done = tmp_path / "orphan.bin", tmp_path / "orphan.done"
    script = f"( ( {WRITE_8_MIB.format(path=out)}; touch {done} ) & ); while [ ! -e {done} ]; do sleep 0.05; done"
    env = client_env(receiver.url, tmp_path / "spool", XDG_CACHE_HOME=str(cache))
    assert glia_run(["--", "sh", "-c", script], env).returncode == 0
    (row,) = sql("SELECT io_write_bytes FROM spans")
    assert out.stat().st_size == 8 * MIB
    assert row["io_write_bytes"] >= 8 * MIB, row


@pytest.mark.parametrize("spawner", ["spawner", "no spawner, cgroup"])
def test_io_of_a_descendant_still_running_when_the_command_ends_is_counted(
    spawner: str, tmp_path: Path, cache: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    out, pid_file = tmp_path / "daemon.bin", tmp_path / "daemon.pid"
    # the background subshell writes, then lives on after `sh` has exited (and holds none of glia's pipes)
    script = (
        f"( {WRITE_8_MIB.format(path=out)}; exec sleep 30 ) </dev/null >/dev/null 2>&1 & echo $! > {pid_file}; "
        f'while [ "$(stat -c %s {out} 2>/dev/null)" != {8 * MIB} ]; do sleep 0.05; done; sleep 0.2'
    )
    extra = {"XDG_CACHE_HOME": str(cache)}
    if spawner != "spawner":
        from glia_otel import _cgroup

        made = _cgroup.create("probe")
        need(made is not None, "no memory cgroup can be made here")
        assert made is not None
        made.remove()
        extra = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "CC": "/nonexistent/cc"}
    env = client_env(receiver.url, tmp_path / "spool", **extra)
    try:
        t0 = time.monotonic()
        assert glia_run(["--", "sh", "-c", script], env).returncode == 0
        assert time.monotonic() - t0 < 20  # glia does not wait for it
    finally:
        if pid_file.exists():
            try:  # noqa: SIM105
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    (row,) = sql("SELECT io_write_bytes, peak_rss_method FROM spans")
    assert row["peak_rss_method"] == ("wait4" if spawner == "spawner" else "wait4-python")
    assert row["io_write_bytes"] >= 8 * MIB, row


# -- both figures, named, where users read them --------------------------------------------------------------------

TREE = (
    "import subprocess, sys\n"
    "code = " + repr(TOUCH.format(mib=100, hold=0.5)) + "\n"
    "for p in [subprocess.Popen([sys.executable, '-c', code]) for _ in range(3)]: p.wait()\n"
)


def test_glia_show_and_the_api_name_both_figures(
    tmp_path: Path,
    cache: Path,
    receiver: ReceiverServer,
    sql: Sql,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import httpx

    from glia_otel._cli import main

    env = client_env(receiver.url, tmp_path / "spool", XDG_CACHE_HOME=str(cache))
    assert glia_run(["--name", "tree", "--", sys.executable, "-c", TREE], env).returncode == 0
    (row,) = sql("SELECT run_id, max_rss_kb, tree_peak_bytes, tree_peak_method FROM runs")
    # three children of 100 MiB: the tree about 300 MiB, the largest process one child
    assert 300 * MIB <= row["tree_peak_bytes"] <= 360 * MIB
    assert 100 * 1024 <= row["max_rss_kb"] < 130 * 1024
    assert main(["show", row["run_id"], "--database-url", database_url]) == 0
    shown = capsys.readouterr().out
    assert f"max_rss_kb           {row['max_rss_kb']}" in shown
    assert f"tree_peak_bytes      {row['tree_peak_bytes']}  (" in shown
    assert f"tree_peak_method     {row['tree_peak_method']}" in shown
    assert main(["runs", "--database-url", database_url]) == 0
    table = capsys.readouterr().out.splitlines()
    number, unit = table[1].split()[-2:]  # PEAK MEM: the largest process, not the tree
    assert table[0].endswith("PEAK MEM") and unit == "MiB" and 100 <= float(number) < 130, table
    detail = httpx.get(f"{receiver.url}/api/runs/{row['run_id']}").json()
    assert detail["tree_peak_bytes"] == row["tree_peak_bytes"] and detail["max_rss_kb"] == row["max_rss_kb"]
    listed = httpx.get(f"{receiver.url}/api/runs").json()["runs"][0]
    assert listed["tree_peak_method"] == row["tree_peak_method"]
    assert listed["peak_rss_bytes"] == detail["peak_rss_bytes"]
