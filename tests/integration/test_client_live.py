"""Live runs from the real clients (docs/attributes.md, "Live runs"): `glia run` and a Python `track` block, posting
to a real receiver and PostgreSQL. A run still going after a second is `running` within 2 s of its start and becomes
one final row; a short one sends no start record; a run whose process is SIGKILLed is lost once its heartbeats stop,
with its last memory and CPU (the sweep run here with a test-shortened timeout)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from receiver import maintenance
from receiver.database import Database, create_pool
from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env, glia_run, poll

HEARTBEAT_MS = "300"


def live_env(receiver: ReceiverServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return client_env(
        receiver.url, tmp_path / "spool", GLIA_HEARTBEAT_INTERVAL_MS=HEARTBEAT_MS, OTEL_METRICS_EXPORTER="none", **extra
    )


def sweep(url: str, lost_after: float) -> list[tuple[str, str]] | None:
    async def go() -> list[tuple[str, str]] | None:
        pool = await create_pool(url, max_size=1, statement_timeout_ms=10_000)
        try:
            return await maintenance.sweep_lost(Database(pool, acquire_timeout=5), lost_after)
        finally:
            await pool.close()

    return asyncio.run(go())


def runs(sql: Sql) -> list[dict[str, Any]]:
    return sql(
        "SELECT run_id, run_name, status, started_at, ended_at, wall_seconds, last_heartbeat_at, last_rss_bytes,"
        " cpu_seconds, exit_code, command_args, program_name FROM runs ORDER BY started_at"
    )


def test_a_3_s_glia_run_is_running_within_2_s_then_one_final_row(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    env = live_env(receiver, tmp_path)
    started = time.monotonic()
    proc = subprocess.Popen(
        [GLIA, "run", "--name", "align", "--attr", "sample=S1", "--", "sh", "-c", "sleep 3; exit 4"],
        env=env,
    )
    try:
        (row,) = poll(lambda: [r for r in runs(sql) if r["status"] == "running"], 2.5)
        seen = time.monotonic() - started
        assert seen < 2.0, f"running after {seen:.2f} s"
        assert row["run_name"] == "align" and row["ended_at"] is None and row["wall_seconds"] is None
        assert row["command_args"] == ["sh", "-c", "sleep 3; exit 4"] and row["program_name"] == "sh"
        (attrs,) = sql("SELECT attributes->>'sample' AS sample, run_kind FROM spans")
        assert attrs == {"sample": "S1", "run_kind": "command"}
        # heartbeats bring the tree's memory and CPU while it runs
        poll(lambda: runs(sql)[0]["last_rss_bytes"], 2.0)
        assert proc.wait(timeout=10) == 4
    finally:
        proc.kill()
    (row,) = runs(sql)
    assert row["status"] == "error" and row["exit_code"] == 4 and 3.0 <= row["wall_seconds"] < 4.0
    assert row["last_heartbeat_at"] is None and row["last_rss_bytes"] is None
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 1}]


def trace_requests(receiver: ReceiverServer) -> float:
    """How many trace export requests the receiver has answered 200 (its /metrics)."""
    text = httpx.get(f"{receiver.url}/metrics", timeout=30).text
    found = re.findall(
        r'^glia_receiver_requests_total\{[^}]*signal="traces"[^}]*status="200"[^}]*\} (\S+)$', text, re.M
    )
    found += re.findall(
        r'^glia_receiver_requests_total\{[^}]*status="200"[^}]*signal="traces"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(v) for v in found)


def test_a_run_ending_within_a_second_sends_no_start_record(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = live_env(receiver, tmp_path)
    assert glia_run(["--", "sleep", "0.6"], env).returncode == 0
    script = tmp_path / "short.py"
    script.write_text("import glia_otel, time\nwith glia_otel.track('short'):\n    time.sleep(0.6)\n")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {r["status"] for r in runs(sql)} == {"ok"} and len(runs(sql)) == 2
    # one request each, its final span: no start record, no heartbeat
    assert trace_requests(receiver) == 2
    # a longer one sends its start record and heartbeats besides
    assert glia_run(["--", "sleep", "1.8"], env).returncode == 0
    assert trace_requests(receiver) >= 2 + 3


def test_live_status_off_sends_nothing_while_it_runs(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = glia_run(["--", "sleep", "1.6"], live_env(receiver, tmp_path, GLIA_LIVE="false"))
    assert proc.returncode == 0, proc.stderr
    (row,) = runs(sql)
    assert row["status"] == "ok"
    assert sql("SELECT received_at - start_time > interval '1.5 s' AS late FROM spans") == [{"late": True}]


def test_sigkill_of_glia_run_itself_leaves_a_lost_run_with_its_last_figures(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql, database_url: str
) -> None:
    pid_file = tmp_path / "child.pid"
    # the command allocates 64 MiB, then waits: its tree's memory is what the heartbeats carry
    code = (
        "import os, sys, time; b = bytearray(64 << 20); open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [GLIA, "run", "--", sys.executable, "-c", code, str(pid_file)], env=live_env(receiver, tmp_path)
    )
    try:
        poll(lambda: [r for r in runs(sql) if r["last_rss_bytes"]], 5.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    (row,) = runs(sql)
    assert row["status"] == "running"
    time.sleep(1.5)  # no heartbeat since the kill: older than the test's 1 s timeout
    assert sweep(database_url, 1.0) == [(sql("SELECT trace_id FROM spans")[0]["trace_id"], row["run_id"])]
    (row,) = runs(sql)
    assert row["status"] == "lost" and row["ended_at"] is None
    assert row["last_rss_bytes"] >= 64 << 20
    assert row["cpu_seconds"] is not None and row["cpu_seconds"] >= 0


TRACKED = """
import os, signal, sys, time
import glia_otel
with glia_otel.track("train", epochs=3):
    data = bytearray(48 << 20)
    sum(range(3_000_000))
    print("inside", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_a_track_block_is_running_then_final_and_lost_after_sigkill(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql, database_url: str
) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRACKED))
    env = live_env(receiver, tmp_path)

    # a 2.5 s block: running within 2 s of its start, then its one final row
    started = time.monotonic()
    with subprocess.Popen([sys.executable, str(script), "2.5"], env=env, stdout=subprocess.DEVNULL) as proc:
        try:
            poll(lambda: [r for r in runs(sql) if r["status"] == "running"], 3.0)
            assert time.monotonic() - started < 2.0 + 0.5  # the interpreter's start-up before the block counts too
            assert proc.wait(timeout=20) == 0
        finally:
            proc.kill()
    (row,) = runs(sql)
    assert (row["run_name"], row["status"], row["ended_at"] is not None) == ("train", "ok", True)
    assert sql("SELECT attributes->'epochs' AS epochs, run_kind FROM spans") == [{"epochs": "3", "run_kind": "block"}]

    # the process killed inside its block: lost, with the memory and CPU its last heartbeat had
    sql("DELETE FROM spans")
    with subprocess.Popen([sys.executable, str(script), "60"], env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "inside"
            poll(lambda: [r for r in runs(sql) if r["last_rss_bytes"]], 5.0)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
    time.sleep(1.5)
    assert sweep(database_url, 1.0)
    (row,) = runs(sql)
    assert row["status"] == "lost" and row["run_name"] == "train"
    assert row["last_rss_bytes"] >= 48 << 20 and row["cpu_seconds"] > 0
