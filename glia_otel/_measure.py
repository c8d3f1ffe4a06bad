"""Usage measured at the edges of a run inside this process: CPU, peak memory, I/O.

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
_CLEAR_REFS = "/proc/self/clear_refs"
_IO = "/proc/self/io"

# None = not tried yet; the answer does not change during a process's life.
_reset_allowed: bool | None = None
_has_proc_status: bool | None = None
_has_proc_io: bool | None = None
_lock = _thread.allocate_lock()
_active: list[BlockUsage] = []


def read_hwm_rss() -> tuple[int, int] | None:
    """(VmHWM, VmRSS) of this process in bytes, from /proc/self/status; None where it does not exist."""
    global _has_proc_status
    if _has_proc_status is False:
        return None
    try:
        fd = os.open(_STATUS, os.O_RDONLY)
        try:
            data = os.read(fd, 8192)
        finally:
            os.close(fd)
    except OSError:
        _has_proc_status = False
        return None
    _has_proc_status = True
    return _field_kb(data, b"VmHWM:") * 1024, _field_kb(data, b"VmRSS:") * 1024


def _field_kb(data: bytes, key: bytes) -> int:
    i = data.find(key)
    if i < 0:
        return 0
    j = data.find(b"\n", i)
    return int(data[i + len(key) : j].split()[0])


def read_io(path: str = _IO) -> tuple[int, int] | None:
    """(read_bytes, write_bytes) from a `/proc/<pid>/io` file; None where it cannot be read."""
    global _has_proc_io
    if path == _IO and _has_proc_io is False:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        if path == _IO:
            _has_proc_io = False
        return None
    if path == _IO:
        _has_proc_io = True
    read_b = write_b = 0
    for line in data.split(b"\n"):
        if line.startswith(b"read_bytes:"):
            read_b = int(line[11:])
        elif line.startswith(b"write_bytes:"):
            write_b = int(line[12:])
    return read_b, write_b


def _reset_hwm() -> bool:
    global _reset_allowed
    if _reset_allowed is False:
        return False
    try:
        fd = os.open(_CLEAR_REFS, os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:
        _reset_allowed = False
        return False
    _reset_allowed = True
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
            before = read_hwm_rss()
            if before is not None:
                for outer in _active:
                    if before[0] > outer.max_seen:
                        outer.max_seen = before[0]
                if _reset_hwm():
                    self.method = "hwm-reset"
                    self.start_rss = before[1]
                else:
                    self.method = "hwm"
                    self.start_rss = before[1]
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
