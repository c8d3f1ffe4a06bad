"""The client's ways of reading a process tree agree on a real tree: the `/proc/<pid>/task/<tid>/children` files
this kernel has, the parent-pid scan for kernels built without them, and psutil for systems without `/proc`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from glia_otel import _measure, _metrics

MIB = 1024 * 1024

# a parent holding 40 MiB with two idle children, all Python: three processes, one thread each; the parent prints
# its children's pids once both have started up
TREE = """
import subprocess, sys, time
x = bytearray(40 * 1024 * 1024)
for i in range(0, len(x), 4096):
    x[i] = 1
child = "import os, time; os.write(1, b'up'); time.sleep(60)"
kids = [subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE) for _ in "ab"]
assert all(k.stdout.read(2) == b"up" for k in kids)
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, set[int]]]:
    """(root pid, children's pids) of a live tree, every process idle (started up), killed afterwards."""
    kids: set[int] = set()
    with subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True) as root:
        try:
            assert root.stdout is not None
            kids = {int(p) for p in root.stdout.readline().split()}
            assert len(kids) == 2
            yield root.pid, kids
        finally:
            for pid in kids:
                subprocess.run(["kill", "-9", str(pid)], check=False)
            root.kill()


def test_the_three_ways_to_list_a_tree_agree(tree: tuple[int, set[int]]) -> None:
    root, kids = tree
    listed = _measure.tree_pids(root)
    assert listed[0] == root and set(listed) == {root, *kids}
    assert sorted(_measure._tree_pids_scan(root)) == sorted(listed)
    assert sorted(_measure._tree_pids_psutil(root)) == sorted(listed)


def test_psutil_reads_the_tree_as_proc_does(tree: tuple[int, set[int]]) -> None:
    root, _ = tree
    for with_root in (True, False):
        proc = _metrics.read_tree(root, with_root)
        ps = _metrics._read_tree_psutil(root, with_root)
        assert proc is not None and ps is not None
        proc_rss, proc_user, proc_system, proc_threads = proc
        ps_rss, ps_user, ps_system, ps_threads = ps
        assert ps_threads == proc_threads == (3 if with_root else 2)
        assert abs(ps_rss - proc_rss) <= 2 * MIB, (with_root, ps_rss, proc_rss)  # idle processes: the same pages
        assert abs(ps_user - proc_user) < 0.05 and abs(ps_system - proc_system) < 0.05, (ps, proc)
    whole = _metrics.read_tree(root, True)
    assert whole is not None and whole[0] > 40 * MIB, "the parent's 40 MiB are in the tree's figure"


def test_a_tree_that_is_gone_reads_as_nothing_every_way() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(done.stdout)
    assert _measure.tree_pids(gone) == []
    assert _measure._tree_pids_psutil(gone) == []
    assert _metrics.read_tree(gone) is None
    assert _metrics._read_tree_psutil(gone, True) is None
