"""Usage measured at the edges of a run inside this process (CPU, peak memory, I/O), and a process tree's RSS.

Peak memory uses the kernel's own high-water mark: at the start of a block, `5` written to
`/proc/self/clear_refs` resets `VmHWM` to the current RSS; at the end, `VmHWM` is the block's peak. The mark
is process-wide, so before a block resets it, every block still open is handed the mark as it stood
(`max_seen`): an outer block's peak is `max(max_seen, VmHWM at its end)`, which nested or concurrent blocks
cannot corrupt.
"""

from __future__ import annotations

import _thread
import os
import resource
import sys
import time

_STATUS = "/proc/self/status"
_STATM = "/proc/self/statm"
_CLEAR_REFS = "/proc/self/clear_refs"
_IO = "/proc/self/io"

_lock = _thread.allocate_lock()
_active: list[BlockUsage] = []


def after_fork_in_child() -> None:
    """A fresh lock: a thread of the parent may have held it at the fork, and that thread does not exist here."""
    global _lock
    _lock = _thread.allocate_lock()


class _ProcFiles:
    """This process's /proc files, opened once and re-read with `pread`: an `open` of a /proc file costs more than
    the rest of a block's bookkeeping. Reopened after a fork, since `self` was resolved at open time."""

    def __init__(self) -> None:
        self.pid = -1
        self.status = self.statm = self.io = self.clear_refs = -1
        self.reset_allowed = True

    def ensure(self) -> None:
        pid = os.getpid()
        if pid == self.pid:
            return
        self.pid = pid
        self.status = _open(_STATUS, os.O_RDONLY)
        self.statm = _open(_STATM, os.O_RDONLY)
        self.io = _open(_IO, os.O_RDONLY)
        self.clear_refs = _open(_CLEAR_REFS, os.O_WRONLY)
        self.reset_allowed = self.clear_refs >= 0


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError:
        return -1


_proc = _ProcFiles()


def _pread(fd: int, size: int) -> bytes | None:
    if fd < 0:
        return None
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return None


def read_hwm_rss() -> tuple[int, int] | None:
    """(VmHWM, VmRSS) of this process in bytes, from /proc/self/status; None where it does not exist."""
    _proc.ensure()
    data = _pread(_proc.status, 8192)
    if data is None:
        return None
    return _field_kb(data, b"VmHWM:") * 1024, _field_kb(data, b"VmRSS:") * 1024


def read_rss() -> int | None:
    """This process's RSS in bytes from /proc/self/statm (several times cheaper than /proc/self/status)."""
    _proc.ensure()
    data = _pread(_proc.statm, 256)
    if data is None:
        return None
    fields = data.split()
    return int(fields[1]) * _PAGE if len(fields) > 1 else None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _field_kb(data: bytes, key: bytes) -> int:
    i = data.find(key)
    if i < 0:
        return 0
    j = data.find(b"\n", i)
    return int(data[i + len(key) : j].split()[0])


def parse_io(data: bytes) -> tuple[int, int]:
    """(read_bytes, write_bytes) from the text of a `/proc/<pid>/io` file."""
    read_b = write_b = 0
    i = data.find(b"\nread_bytes:")
    if i >= 0:
        read_b = int(data[i + 12 : data.find(b"\n", i + 1)])
    i = data.find(b"\nwrite_bytes:")
    if i >= 0:
        write_b = int(data[i + 13 : data.find(b"\n", i + 1)])
    return read_b, write_b


def read_io() -> tuple[int, int] | None:
    """(read_bytes, write_bytes) of this process (with its reaped children); None where it cannot be read."""
    _proc.ensure()
    data = _pread(_proc.io, 4096)
    return None if data is None else parse_io(data)


def _reset_hwm() -> bool:
    _proc.ensure()
    if not _proc.reset_allowed:
        return False
    try:
        os.write(_proc.clear_refs, b"5")
    except OSError:
        _proc.reset_allowed = False
        return False
    return True


def _maxrss_bytes() -> int:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru if sys.platform == "darwin" else ru * 1024


class BlockUsage:
    """Usage of one block: `start()` at entry, `stop()` at exit returns the span attributes."""

    __slots__ = ("_io", "_rc", "_rs", "_t0", "max_seen", "method", "start_rss")

    def __init__(self) -> None:
        self.max_seen = 0
        self.method = "hwm"
        self.start_rss = 0
        self._t0 = 0
        self._rs: resource.struct_rusage | None = None
        self._rc: resource.struct_rusage | None = None
        self._io: tuple[int, int] | None = None

    def start(self) -> None:
        """Take the starting snapshot (and reset the memory high-water mark)."""
        with _lock:
            if _active:
                # Blocks are open: hand them the mark before it is reset.
                before = read_hwm_rss()
                rss = before[1] if before is not None else None
                if before is not None:
                    for outer in _active:
                        if before[0] > outer.max_seen:
                            outer.max_seen = before[0]
            else:
                rss = read_rss()
            if rss is not None:
                self.method = "hwm-reset" if _reset_hwm() else "hwm"
                self.start_rss = rss
            _active.append(self)
        self._io = read_io()
        self._rs = resource.getrusage(resource.RUSAGE_SELF)
        self._rc = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._t0 = time.monotonic_ns()

    def stop(self) -> dict[str, int | float | str]:
        """Take the end snapshot and return the usage attributes of docs/attributes.md."""
        wall_ns = time.monotonic_ns() - self._t0
        rs = resource.getrusage(resource.RUSAGE_SELF)
        rc = resource.getrusage(resource.RUSAGE_CHILDREN)
        io = read_io()
        with _lock:
            now = read_hwm_rss()
            try:  # noqa: SIM105 - contextlib costs glia run's start-up
                _active.remove(self)
            except ValueError:
                pass
        attrs: dict[str, int | float | str] = {}
        if self._rs is not None and self._rc is not None:
            user = (rs.ru_utime - self._rs.ru_utime) + (rc.ru_utime - self._rc.ru_utime)
            system = (rs.ru_stime - self._rs.ru_stime) + (rc.ru_stime - self._rc.ru_stime)
            attrs["glia.cpu.user_seconds"] = user
            attrs["glia.cpu.system_seconds"] = system
            attrs["glia.cpu.percent"] = 100.0 * (user + system) / (wall_ns / 1e9) if wall_ns > 0 else 0.0
        if now is not None:
            attrs["glia.memory.peak_rss_bytes"] = max(now[0], self.max_seen)
            attrs["glia.memory.peak_rss_method"] = self.method
            attrs["glia.memory.start_rss_bytes"] = self.start_rss
        else:
            attrs["glia.memory.peak_rss_bytes"] = _maxrss_bytes()
            attrs["glia.memory.peak_rss_method"] = "hwm"
        if io is not None and self._io is not None:
            attrs["glia.io.read_bytes"] = max(0, io[0] - self._io[0])
            attrs["glia.io.write_bytes"] = max(0, io[1] - self._io[1])
        return attrs


def _read(path: str, size: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of `/proc/<pid>/stat` after the command name (which may hold spaces): [0] is the state."""
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    return data[data.rfind(b")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants (empty if `root` is gone), from /proc; psutil where there is no /proc."""
    if not os.path.isdir("/proc/self"):
        return _tree_pids_psutil(root)
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        # No `children` file (a kernel built without CONFIG_PROC_CHILDREN, some sandboxes): parent pids instead.
        return _tree_pids_scan(root) if os.path.exists(f"/proc/{root}") else []
    tree, todo = [root], [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # ended meanwhile
        for tid in tasks:
            kids = [int(c) for c in (_read(f"/proc/{pid}/task/{tid}/children", 65536) or b"").split()]
            tree += kids
            todo += kids
    return tree


def _tree_pids_scan(root: int) -> list[int]:
    """The tree by each process's parent pid, read from every `/proc/<pid>/stat` (as psutil does)."""
    by_parent: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(name)
            if fields is not None and len(fields) > 1:
                by_parent.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = [root], [root]
    while todo:
        kids = by_parent.get(todo.pop(), [])
        tree += kids
        todo += kids
    return tree


def _tree_pids_psutil(root: int) -> list[int]:
    import psutil

    try:
        proc = psutil.Process(root)
        return [root, *(p.pid for p in proc.children(recursive=True))]
    except psutil.Error:
        return []


def tree_rss(root: int, with_root: bool = True) -> int:
    """RSS summed over a process and its descendants (or its descendants alone), in bytes (0 if it is gone)."""
    pids = tree_pids(root)
    return sum(_rss_of(pid) for pid in (pids if with_root else pids[1:]))


def read_io_of(pid: int) -> tuple[int, int] | None:
    """(read_bytes, write_bytes) of a process (with its reaped children); None where it cannot be read."""
    data = _read(f"/proc/{pid}/io")
    return None if data is None else parse_io(data)


def tree_threads(root: int) -> int:
    """Threads summed over a process and its descendants."""
    return sum(_threads_of(pid) for pid in tree_pids(root))


def _rss_of(pid: int) -> int:
    data = _read(f"/proc/{pid}/statm", 256)
    if data is None:
        if os.path.isdir("/proc/self"):
            return 0  # ended meanwhile
        import psutil

        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    fields = data.split()
    return int(fields[1]) * _PAGE if len(fields) > 1 else 0


def _threads_of(pid: int) -> int:
    fields = _stat_fields(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return 0
        import psutil

        try:
            return int(psutil.Process(pid).num_threads())
        except psutil.Error:
            return 0
    return int(fields[17]) if len(fields) > 17 else 0
