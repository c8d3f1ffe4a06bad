"""Live runs from the R client (glia-r/R/live.R) against a real receiver and PostgreSQL: a `glia_track` block still
going after a second is `running` within 2 s of its start, sent by the R process's watcher, and becomes one final
row; a short block sends no start record; SIGKILL of R leaves a running row that the receiver's own sweep marks
`lost`, and the watcher gone; GLIA_LIVE=false sends nothing while the block runs; spooled requests are named
`traces-*` and `glia flush` sends them. Real Rscript processes with the installed package (.ci/install-r.sh)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, ReceiverServer, need
from tests.helpers import Sql, poll, r_env

HEARTBEAT_MS = "300"

# A script whose block prints what the test needs (its pid, the session's tempdir, when the block began), then
# allocates and sleeps. The service name, so the runs view's program_name, is the file's name: `train`.
SCRIPT = """
library(glia)
seconds <- as.numeric(commandArgs(trailingOnly = TRUE)[[1]])
glia_track({
  cat("inside", Sys.getpid(), tempdir(), "\\n")
  flush(stdout())
  data <- numeric(6e6)  # 48 MB
  data[] <- 1
  sleep_until <- Sys.time() + seconds
  while (Sys.time() < sleep_until) Sys.sleep(0.05)
  ended <- Sys.time()
}, name = "train", attrs = list(epochs = 3L))
cat("exit-cost", as.numeric(Sys.time()) - as.numeric(ended), "\\n")
after <- as.numeric(commandArgs(trailingOnly = TRUE)[[2]])
if (!is.na(after) && after > 0) {
  cat("after\\n")
  flush(stdout())
  Sys.sleep(after)
}
"""


@pytest.fixture(autouse=True)
def _need_r() -> None:
    need(shutil.which("Rscript") is not None, "Rscript is not installed (run .ci/install-r.sh)")
    probe = subprocess.run(
        ["Rscript", "-e", "library(glia)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    need(probe.returncode == 0, f"the glia R package is not installed (.ci/install-r.sh): {probe.stderr}")


def live_r_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    # a generous export deadline for a loaded test machine; short heartbeats to keep the tests fast
    settings = {"GLIA_EXPORT_DEADLINE_MS": "5000", "GLIA_HEARTBEAT_INTERVAL_MS": HEARTBEAT_MS, **extra}
    return r_env(tmp_path, endpoint, **settings)


def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.R"
    path.write_text(SCRIPT)
    return path


def start_r(tmp_path: Path, env: dict[str, str], seconds: float, after: float = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["Rscript", str(script(tmp_path)), str(seconds), str(after)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def inside(proc: subprocess.Popen[str]) -> tuple[float, int, Path]:
    """Waits for the block to begin: (when, R's pid, R's tempdir)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("inside"), line + (proc.stderr.read() if proc.stderr else "")
    _, pid, tmp = line.split()
    return time.monotonic(), int(pid), Path(tmp)


def runs(sql: Sql) -> list[dict[str, Any]]:
    return sql(
        "SELECT run_id, trace_id, run_name, status, started_at, ended_at, wall_seconds, last_heartbeat_at,"
        " last_rss_bytes, cpu_seconds, exit_code, command_args, program_name, host_name, user_name,"
        " scheduler_job_id, workflow_run_id, run_kind FROM runs ORDER BY started_at"
    )


def trace_requests(receiver: ReceiverServer) -> float:
    """How many trace export requests the receiver has answered 200 (its /metrics)."""
    text = httpx.get(f"{receiver.url}/metrics", timeout=30).text
    found = re.findall(r"^glia_receiver_requests_total\{([^}]*)\} (\S+)$", text, re.M)
    return sum(float(v) for labels, v in found if 'signal="traces"' in labels and 'status="200"' in labels)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie not reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def watcher_pid(tmp: Path, r_pid: int) -> int:
    """The pid the R process's watcher wrote once it was up."""
    ready = tmp / f"glia-live-{r_pid}" / "ready"
    return int(poll(lambda: ready.exists() and ready.read_text().strip(), 3.0))


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """Waits for R to end: its output."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kills R if it still runs and closes its pipes."""
    proc.kill()
    proc.communicate(timeout=10)


def test_a_long_block_is_running_within_2_s_then_one_final_row(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    env = live_r_env(tmp_path, receiver.url, SLURM_JOB_ID="4242", OTEL_RESOURCE_ATTRIBUTES="glia.workflow.run_id=wf-7")
    proc = start_r(tmp_path, env, 3.0)
    try:
        began, _, _ = inside(proc)
        (row,) = poll(lambda: [r for r in runs(sql) if r["status"] == "running"], 3.0)
        seen = time.monotonic() - began
        assert seen < 2.0, f"running after {seen:.2f} s"
        # what is known at start
        assert (row["run_name"], row["program_name"], row["run_kind"]) == ("train", "train", "block")
        assert row["ended_at"] is None and row["wall_seconds"] is None and row["exit_code"] is None
        assert row["host_name"] and row["user_name"]
        assert row["command_args"] and any(a.endswith("train.R") for a in row["command_args"])
        assert (row["scheduler_job_id"], row["workflow_run_id"]) == ("4242", "wf-7")
        assert sql("SELECT attributes->'epochs' AS epochs FROM spans") == [{"epochs": "3"}]
        running = row
        # heartbeats bring the R process's memory (48 MB allocated in the block) and CPU while it runs
        beat = poll(lambda: [r for r in runs(sql) if (r["last_rss_bytes"] or 0) >= 48 << 20], 3.0)[0]
        assert beat["cpu_seconds"] is not None and beat["cpu_seconds"] >= 0
        out, err = finish(proc)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    # the block's exit did not wait for the watcher
    exit_cost = float(re.search(r"exit-cost (\S+)", out).group(1))  # type: ignore[union-attr]
    assert exit_cost < 0.5, exit_cost
    (row,) = runs(sql)
    assert (row["run_id"], row["trace_id"], row["started_at"]) == (
        running["run_id"],
        running["trace_id"],
        running["started_at"],
    )
    assert row["status"] == "ok" and row["exit_code"] == 0 and 3.0 <= row["wall_seconds"] < 5.0
    assert row["last_heartbeat_at"] is None and row["last_rss_bytes"] is None
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 1}]
    assert "glia:" not in err, err


def test_a_block_ending_within_a_second_sends_no_start_record(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    env = live_r_env(tmp_path, receiver.url)
    out, err = finish(start_r(tmp_path, env, 0.5))
    assert "exit-cost" in out, err
    (row,) = runs(sql)
    assert row["status"] == "ok"
    assert trace_requests(receiver) == 1  # its final span, nothing else
    # a longer one sends its start record and heartbeats besides: 3 s leaves 2 s of 300 ms heartbeats after the start
    # record, room for at least two even when a loaded machine's watcher starts and posts slowly
    out, err = finish(start_r(tmp_path, env, 3.0))
    assert "exit-cost" in out, err
    assert trace_requests(receiver) >= 1 + 1 + 1 + 2  # the first final span, the start record, this final, heartbeats


def test_sigkill_of_r_inside_a_block_leaves_a_lost_run_and_no_watcher(
    tmp_path: Path, receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(lost_after_seconds=1.0, lost_sweep_seconds=0.2)
    proc = start_r(tmp_path, live_r_env(tmp_path, receiver.url), 120.0)
    try:
        _, r_pid, tmp = inside(proc)
        watcher = watcher_pid(tmp, r_pid)
        assert alive(watcher)
        poll(lambda: [r for r in runs(sql) if (r["last_rss_bytes"] or 0) >= 48 << 20], 5.0)
        os.kill(r_pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop(proc)
    # the watcher sees its R process gone and exits without another record; it removes its directory
    poll(lambda: not alive(watcher), 3.0)
    assert not (tmp / f"glia-live-{r_pid}").exists()
    (row,) = runs(sql)
    assert row["status"] in ("running", "lost")
    # no heartbeat comes any more: the receiver's own sweep marks it lost, with its last memory and CPU
    (row,) = poll(lambda: [r for r in runs(sql) if r["status"] == "lost"], 10.0)
    assert row["run_name"] == "train" and row["ended_at"] is None
    assert row["last_rss_bytes"] >= 48 << 20 and row["cpu_seconds"] is not None
    time.sleep(1.0)
    assert runs(sql)[0]["status"] == "lost"


def test_the_watcher_exits_once_no_block_is_open(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = start_r(tmp_path, live_r_env(tmp_path, receiver.url), 1.3, after=12.0)
    try:
        _, r_pid, tmp = inside(proc)
        watcher = watcher_pid(tmp, r_pid)
        assert proc.stdout is not None and proc.stdout.readline().strip().startswith("exit-cost")
        assert proc.stdout.readline().strip() == "after"
        # the block has ended; R lives on: the watcher leaves a few seconds later, R still running
        poll(lambda: not alive(watcher), 9.0, step=0.2)
        assert proc.poll() is None
    finally:
        stop(proc)
    (row,) = runs(sql)
    assert row["status"] == "ok"


def test_live_status_off_sends_nothing_while_it_runs(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = start_r(tmp_path, live_r_env(tmp_path, receiver.url, GLIA_LIVE="false"), 1.8)
    try:
        _, r_pid, tmp = inside(proc)
        time.sleep(1.5)
        assert runs(sql) == []
        assert not (tmp / f"glia-live-{r_pid}").exists()  # no watcher was started
        out, err = finish(proc)
    finally:
        stop(proc)
    assert "exit-cost" in out, err
    (row,) = runs(sql)
    assert row["status"] == "ok"
    assert trace_requests(receiver) == 1
    # the same block with GLIA_LIVE=true is seen running
    sql("DELETE FROM spans")
    proc = start_r(tmp_path, live_r_env(tmp_path, receiver.url, GLIA_LIVE="true"), 1.8)
    try:
        inside(proc)
        poll(lambda: [r for r in runs(sql) if r["status"] == "running"], 3.0)
        finish(proc)
    finally:
        stop(proc)
    assert trace_requests(receiver) >= 1 + 2


def test_spooled_requests_are_named_traces_and_glia_flush_sends_them(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    receiver.stop()
    env = live_r_env(tmp_path, receiver.url, GLIA_EXPORT_DEADLINE_MS="250")
    out, err = finish(start_r(tmp_path, env, 1.6))
    assert "exit-cost" in out, err
    assert "spooled" in err, err
    spool = tmp_path / "spool"
    files = sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
    # the start record (spooled by the watcher) and the final span (by R): heartbeats are dropped, not spooled
    assert len(files) == 2, files
    assert all(re.fullmatch(r"traces-\d{19}-\d+-[0-9a-f]{8}\.json", f) for f in files), files
    receiver.start()
    flushed = subprocess.run(
        [sys.executable, "-m", "glia_otel._cli", "flush", "--spool-dir", str(spool), "--endpoint", receiver.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert flushed.returncode == 0, flushed.stderr
    assert [p.name for p in spool.iterdir() if not p.name.startswith(".")] == []
    (row,) = runs(sql)
    assert (row["run_name"], row["status"]) == ("train", "ok") and row["wall_seconds"] >= 1.6
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 1}]
