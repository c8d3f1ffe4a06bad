"""A throw-away memory cgroup for `glia run`, so the whole process tree's peak comes from the kernel.

cgroup v2 (`memory.peak`) where the memory controller is enabled for our cgroup's children; else cgroup v1's
memory hierarchy (`memory.max_usage_in_bytes`, the same high-water mark under its v1 name). The cgroup is made
under the one glia itself runs in, so limits set above still apply.
Without either, `glia run` samples instead.
"""

from __future__ import annotations

import os


class Cgroup:
    """A cgroup made for one command."""

    def __init__(self, path: str, peak_file: str, version: int) -> None:
        self.path = path
        self.peak_file = peak_file
        self.version = version

    def peak_bytes(self) -> int | None:
        """The cgroup's memory high-water mark in bytes."""
        try:
            with open(os.path.join(self.path, self.peak_file), "rb") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def oom_kills(self) -> int | None:
        """Processes of the cgroup the kernel's OOM killer ended (`oom_kill` in v2's `memory.events`, v1's
        `memory.oom_control`), so a memory kill can be told from any other SIGKILL; None where it is not reported."""
        events = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.path, events), "rb") as f:
                for line in f:
                    key, _, value = line.partition(b" ")
                    if key == b"oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return None

    def live_io(self) -> tuple[int, int] | None:
        """(read_bytes, write_bytes) so far of the processes still in the cgroup (descendants that outlived the
        command), from each one's /proc/<pid>/io; None if there are none."""
        from ._measure import read_io_of

        try:
            with open(os.path.join(self.path, "cgroup.procs"), "rb") as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return None
        total_read = total_write = 0
        for pid in pids:
            io = read_io_of(pid)
            if io is not None:
                total_read += io[0]
                total_write += io[1]
        return (total_read, total_write) if pids else None

    def remove(self) -> None:
        """Move any process left behind (a daemonized grandchild) to the parent cgroup, then remove it."""
        parent = os.path.dirname(self.path)
        for _ in range(3):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                try:
                    with open(os.path.join(self.path, "cgroup.procs"), "rb") as f:
                        pids = f.read().split()
                    for pid in pids:
                        with open(os.path.join(parent, "cgroup.procs"), "wb") as out:
                            out.write(pid)
                except OSError:
                    return


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of the cgroup mounts."""
    out = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) > 4 and rfields and rfields[0] in ("cgroup", "cgroup2"):
                    out.append((fields[4], rfields[0], rfields[2] if len(rfields) > 2 else ""))
    except OSError:
        pass
    return out


def _own_cgroups() -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                hid, controllers, path = line.rstrip("\n").split(":", 2)
                if hid == "0" and controllers == "":
                    v2 = path
                elif "memory" in controllers.split(","):
                    v1 = path
    except (OSError, ValueError):
        pass
    return v2, v1


def create(tag: str) -> Cgroup | None:
    """Make a memory cgroup for one command, or None where that is not possible here."""
    mounts = _mounts()
    v2_path, v1_path = _own_cgroups()
    name = f"glia-{os.getpid()}-{tag}"
    if v2_path is not None:
        for point, fstype, _ in mounts:
            if fstype != "cgroup2":
                continue
            base = point + v2_path.rstrip("/") if v2_path != "/" else point
            try:
                with open(os.path.join(base, "cgroup.subtree_control"), encoding="utf-8") as f:
                    enabled = f.read().split()
            except OSError:
                continue
            if "memory" not in enabled:
                continue
            _remove_leftovers(base, "memory.peak", 2)
            made = _mkdir(os.path.join(base, name), "memory.peak", 2)
            if made is not None:
                return made
    if v1_path is not None:
        for point, fstype, opts in mounts:
            if fstype == "cgroup" and "memory" in opts.split(","):
                base = point + v1_path.rstrip("/") if v1_path != "/" else point
                _remove_leftovers(base, "memory.max_usage_in_bytes", 1)
                made = _mkdir(os.path.join(base, name), "memory.max_usage_in_bytes", 1)
                if made is not None:
                    return made
    return None


def _remove_leftovers(base: str, peak_file: str, version: int) -> None:
    """Remove `glia-<pid>-*` cgroups whose glia is gone (killed before it could remove its own)."""
    try:
        entries = [e.name for e in os.scandir(base) if e.name.startswith("glia-")]
    except OSError:
        return
    for name in entries:
        pid_text = name.split("-")[1]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # that glia still runs
        except ProcessLookupError:
            pass
        except OSError:
            continue  # it exists, under another user
        Cgroup(os.path.join(base, name), peak_file, version).remove()


def _mkdir(path: str, peak_file: str, version: int) -> Cgroup | None:
    try:
        os.mkdir(path)
    except OSError:
        return None
    if not os.path.exists(os.path.join(path, peak_file)):
        try:  # noqa: SIM105 - contextlib costs glia run's start-up
            os.rmdir(path)
        except OSError:
            pass
        return None
    return Cgroup(path, peak_file, version)


def enter(cg: Cgroup) -> bool:
    """Move the calling process into the cgroup (run in the child between fork and exec, while it has one thread).

    On cgroup v1 the calling thread is moved through `tasks`: moving a whole process through `cgroup.procs` takes
    the kernel's global thread-group lock, which waits for an RCU grace period (5-16 ms on this machine, on the
    command's start), and moving the calling thread alone does not (0.3 ms). A child just forked has only the one
    thread, so the process is moved all the same, before it execs.
    """
    try:
        fd = os.open(os.path.join(cg.path, "tasks" if cg.version == 1 else "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        return True
    except OSError:
        return False
