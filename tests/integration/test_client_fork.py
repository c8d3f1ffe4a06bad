"""Forked children and `multiprocessing` workers: their runs land as rows, with their own process identity."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env, run_python

FORK_AFTER_A_RUN = """
import os, time, glia_otel
with glia_otel.track("parent-run"):
    pass
time.sleep(0.05)  # the exporter thread is lingering on its condition when the fork happens
pid = os.fork()
if pid == 0:
    with glia_otel.track("child-run"):
        pass
    os._exit(0)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print(os.getpid(), pid, os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.01)
else:
    os.kill(pid, 9)
    print(os.getpid(), pid, "hung")
"""


def test_fork_after_a_run_finishes_and_both_runs_land(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(tmp_path, FORK_AFTER_A_RUN, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    parent, child, outcome = proc.stdout.split()
    assert outcome == "0", proc.stdout
    rows = sql("SELECT name, process_pid, service_instance_id FROM spans ORDER BY name")
    assert [(r["name"], r["process_pid"]) for r in rows] == [("child-run", int(child)), ("parent-run", int(parent))]
    assert rows[0]["service_instance_id"] != rows[1]["service_instance_id"]


WORKERS = """
import multiprocessing as mp, os, glia_otel

@glia_otel.track
def work(i):
    return os.getpid()

def proc_main(i):
    work(i)

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    with glia_otel.track("parent-run"):
        pass
    procs = [ctx.Process(target=proc_main, args=(i,)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    with ctx.Pool(2) as pool:
        pids = pool.map(work, range(6))
    print(" ".join(str(p.pid) for p in procs))
    print(" ".join(str(p) for p in pids))
"""


def test_multiprocessing_workers_runs_all_land_with_their_own_pid(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    proc = run_python(tmp_path, WORKERS, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    process_pids, pool_pids = (list(map(int, line.split())) for line in proc.stdout.splitlines())
    rows = sql("SELECT process_pid FROM spans WHERE name = 'work'")
    assert sorted(r["process_pid"] for r in rows) == sorted(process_pids + pool_pids)
    assert len(sql("SELECT 1 FROM spans WHERE name = 'parent-run'")) == 1
