"""Accuracy of what a tracked block measures: peak memory above its start, and CPU time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env, run_python

MIB = 1024 * 1024


def _attrs(row: dict[str, Any]) -> dict[str, Any]:
    value = row["attributes"]
    return json.loads(value) if isinstance(value, str) else dict(value)


def test_block_peak_is_within_5_percent_of_200_mib(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import glia_otel
        junk = bytearray(50 * 1024 * 1024)  # the process peaks before the block: the block must not see it
        del junk
        with glia_otel.track("alloc"):
            x = bytearray(200 * 1024 * 1024)
            for i in range(0, len(x), 4096):
                x[i] = 1
            del x
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = sql("SELECT peak_rss_bytes, peak_rss_method, attributes FROM spans")
    assert row["peak_rss_method"] == "hwm-reset"
    above = row["peak_rss_bytes"] - _attrs(row)["glia.memory.start_rss_bytes"]
    assert abs(above - 200 * MIB) / (200 * MIB) < 0.05, above / MIB


def test_nested_block_does_not_corrupt_the_outer_peak(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import glia_otel
        with glia_otel.track("outer"):
            x = bytearray(120 * 1024 * 1024)
            for i in range(0, len(x), 4096):
                x[i] = 1
            del x
            with glia_otel.track("inner"):  # resets the process's high-water mark
                y = bytearray(10 * 1024 * 1024)
                for i in range(0, len(y), 4096):
                    y[i] = 1
                del y
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in sql("SELECT name, peak_rss_bytes, attributes FROM spans")}
    outer, inner = rows["outer"], rows["inner"]
    outer_above = outer["peak_rss_bytes"] - _attrs(outer)["glia.memory.start_rss_bytes"]
    inner_above = inner["peak_rss_bytes"] - _attrs(inner)["glia.memory.start_rss_bytes"]
    assert abs(outer_above - 120 * MIB) / (120 * MIB) < 0.05, outer_above / MIB
    assert abs(inner_above - 10 * MIB) / (10 * MIB) < 0.2, inner_above / MIB


def test_block_cpu_is_within_5_percent_of_getrusage(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import resource, time
        import glia_otel
        glia_otel.configure()
        with glia_otel.track("spin"):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t = time.process_time()
            while time.process_time() - t < 0.5:
                pass
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        print((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    reference = float(proc.stdout)
    (row,) = sql("SELECT cpu_user_seconds, cpu_system_seconds, cpu_percent, duration_ns FROM spans")
    total = row["cpu_user_seconds"] + row["cpu_system_seconds"]
    assert abs(total - reference) / reference < 0.05, (total, reference)
    wall = row["duration_ns"] / 1e9
    assert abs(row["cpu_percent"] - 100 * total / wall) / row["cpu_percent"] < 0.01


def test_tree_rss_is_the_sum_over_the_live_tree() -> None:
    import subprocess
    import sys
    import time

    import psutil

    from glia_otel._measure import tree_pids, tree_rss, tree_threads

    code = "import time\nx = bytearray(40 * 1024 * 1024)\nx[::4096] = b'1' * len(x[::4096])\ntime.sleep(30)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {code!r}])\n"
            f"subprocess.Popen([sys.executable, '-c', {code!r}])\ntime.sleep(30)",
        ]
    )
    try:
        root = psutil.Process(parent.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            procs = [root, *root.children(recursive=True)]
            if len(procs) == 3 and all(p.memory_info().rss > 40 * MIB for p in procs[1:]):
                break
            time.sleep(0.05)
        assert sorted(tree_pids(parent.pid)) == sorted(p.pid for p in procs)
        expected = sum(p.memory_info().rss for p in procs)
        assert abs(tree_rss(parent.pid) - expected) < 4 * MIB, (tree_rss(parent.pid), expected)
        assert tree_rss(parent.pid) > 80 * MIB
        assert tree_threads(parent.pid) == sum(p.num_threads() for p in procs)
    finally:
        for p in [*psutil.Process(parent.pid).children(recursive=True)]:
            p.kill()
        parent.kill()
        parent.wait()
    assert tree_pids(parent.pid) == [] and tree_rss(parent.pid) == 0


# What a block's peak means: the process's peak RSS during the block (its VmHWM since the block began), all of the
# process's memory included, not only what the block added. The test reads VmHWM itself at the block's end.
HWM = """
def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

def touch(mib):
    x = bytearray(mib * 1024 * 1024)
    for i in range(0, len(x), 4096):
        x[i] = 1
    return x
"""


def test_block_in_a_big_process_reports_the_process_peak_during_the_block(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    proc = run_python(
        tmp_path,
        HWM
        + """
import glia_otel
spike = touch(700)  # the process peaks at 700 MiB before the block...
held = touch(500)
del spike           # ...and holds 500 MiB when it begins
with glia_otel.track("alloc-20"):
    extra = touch(20)
    print(hwm())
""",
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    seen = int(proc.stdout)
    (row,) = sql("SELECT peak_rss_bytes, peak_rss_method, attributes FROM spans")
    assert row["peak_rss_method"] == "hwm-reset"
    assert abs(row["peak_rss_bytes"] - seen) <= MIB, (row["peak_rss_bytes"], seen)
    start = _attrs(row)["glia.memory.start_rss_bytes"]
    assert 500 * MIB <= start < 560 * MIB  # the 500 MiB held, and the interpreter
    assert abs(row["peak_rss_bytes"] - start - 20 * MIB) <= MIB  # the block's 20 MiB on top
    assert row["peak_rss_bytes"] < 700 * MIB  # not the process's earlier peak


def test_nested_blocks_each_report_their_own_peak_against_vmhwm(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    proc = run_python(
        tmp_path,
        HWM
        + """
import glia_otel
held = touch(100)
with glia_otel.track("outer"):
    tmp = touch(80)
    del tmp
    before_inner = hwm()  # the outer block's peak so far: the inner block resets the mark next
    with glia_otel.track("inner"):
        small = touch(20)
        inner_end = hwm()
    del small
    outer_end = hwm()
print(before_inner, inner_end, outer_end)
""",
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    before_inner, inner_end, outer_end = map(int, proc.stdout.split())
    rows = {r["name"]: r for r in sql("SELECT name, peak_rss_bytes FROM spans")}
    assert abs(rows["inner"]["peak_rss_bytes"] - inner_end) <= MIB, (rows["inner"], inner_end)
    outer_expected = max(before_inner, inner_end, outer_end)
    assert abs(rows["outer"]["peak_rss_bytes"] - outer_expected) <= MIB, (rows["outer"], outer_expected)
    assert rows["outer"]["peak_rss_bytes"] >= 180 * MIB  # 100 held + 80 before the inner block
    assert rows["inner"]["peak_rss_bytes"] < 150 * MIB  # 100 held + 20: the outer block's 80 is not the inner's
