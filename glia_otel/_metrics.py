"""Process samples of runs over time (memory, CPU time, threads), posted to `/v1/metrics` as OTLP metrics.

When (the ramp, after Nextflow's, which polls a task every 1 s for its first 10 samples, then every 5 s, then every
30 s): a run is first sampled 1 s after it began, then every second up to its 10th sample, every 5 s up to its 120th
(9 min 20 s in), every 30 s after that, and once the run is half an hour old, every 1/60 of its age, so that each
doubling of a run's length adds at most 42 samples. `MAX_SAMPLES` (1,000) bounds a run however long it lasts.
`OTEL_METRIC_EXPORT_INTERVAL` (or `configure(metrics_interval_ms=)`) fixes the interval instead of the ramp, for the
first `FIXED_SAMPLES` samples; past them the 1/60 rule holds there too. A run that ends before its first sample sends
none, and nothing of this module runs for it (`glia run` does not even import it).

What: `process.memory.usage` (RSS, bytes), `process.cpu.time` (CPU seconds since the run began, `type` user and
system, with a zero point at the run's start so that the first interval has a rate too) and `process.thread.count`,
all cumulative Sums as the semantic conventions have them. Each point carries `glia.trace_id`/`glia.span_id` of the
run, and the resource is the run's (`service.instance.id`). Read from `/proc` (one file per process and sample),
psutil only where there is no `/proc`; encoded by `_otlp_metrics.py`, never the metrics SDK.

Where to: samples are posted in batches, when the oldest is 10 s old (or one fixed interval), when the run ends and
at exit, from a thread of their own (`_Poster`), through `_deliver.send`, so they spool like runs.

`ProcessSampling` samples a Python process for its `track` runs (owned by `_track`'s configured state, run by one
thread of its own); `CommandSampler` the process tree of a `glia run` command, driven by glia run's wait loop.
"""

from __future__ import annotations

import _thread
import os
import resource
import time

from ._deliver import send, spool_body
from ._log import warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Mapping
    from typing import Any

    from ._config import Settings

    RunIds = tuple[str, str]
    # (start_ns, time_ns, trace_id, span_id, rss bytes, user s, system s, threads); None where it was not read
    Sample = tuple[int, int, str, str, int | None, float | None, float | None, int | None]
    Reading = tuple[int, float, float, int]  # rss, user, system, threads

FIRST_SAMPLE_S = 1.0  # glia run's wait loop has its own copy (importing this module would cost every command)
RAMP = ((10, 1.0), (120, 5.0))  # (samples taken before, interval in s), then LATE_INTERVAL_S
LATE_INTERVAL_S = 30.0
SPREAD = 60  # past the ramp, samples are at least 1/SPREAD of the run's age apart
MAX_SAMPLES = 1000
FIXED_SAMPLES = 500
FLUSH_S = 10.0  # a batch is posted when its oldest sample is this old (one fixed interval when one is set)
_MIN_LAST_INTERVAL_NS = 500_000_000
_EXIT_MARGIN_S = 0.01  # spool what is in flight just before the deadline, not after it

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = os.path.isdir("/proc/self")


def next_offset(taken: int, last: float, fixed: float | None) -> float | None:
    """When the next sample is due, in seconds since the run began, after `taken` samples of which the last was due
    at `last` (0 before the first); None once the run has `MAX_SAMPLES`."""
    if taken >= MAX_SAMPLES:
        return None
    if fixed is not None:
        step = fixed if taken < FIXED_SAMPLES else max(fixed, last / SPREAD)
    else:
        for upto, interval in RAMP:
            if taken < upto:
                step = interval
                break
        else:
            step = max(LATE_INTERVAL_S, last / SPREAD)
    return last + step


class _Timeline:
    """The sampling schedule of one run (in a process: of one stretch of overlapping runs)."""

    __slots__ = ("fixed", "next", "start_mono", "start_ns", "taken")

    def __init__(self, start_ns: int, start_mono: float, fixed: float | None) -> None:
        self.start_ns = start_ns
        self.start_mono = start_mono
        self.fixed = fixed
        self.taken = 0
        self.next = next_offset(0, 0.0, fixed)  # when the next sample is due, in s since the start; None: no more

    @property
    def due(self) -> float:
        """The monotonic time the next sample is due (inf: no more)."""
        return float("inf") if self.next is None else self.start_mono + self.next

    def advance(self, now: float) -> None:
        """One sample taken: the next is due at the schedule's next slot after `now` (late slots are skipped)."""
        self.taken += 1
        offset = self.next
        while offset is not None and self.start_mono + offset <= now:
            offset = next_offset(self.taken, offset, self.fixed)
        self.next = offset


# --- reading ------------------------------------------------------------------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(data: bytes) -> list[bytes]:
    """The fields of a `/proc/<pid>/stat` after the command name (which may hold spaces): [0] is the state."""
    return data[data.rfind(b")") + 2 :].split()


def read_tree(root: int, with_root: bool = True) -> Reading | None:
    """(RSS, user s, system s, threads) summed over `root` and its descendants; None if `root` is gone.

    CPU is each live process's own time plus what it has reaped (`cutime`/`cstime`), so a descendant that ended is
    still counted, once, in its parent. One `/proc/<pid>/stat` per process gives all four. Without the root (glia
    run's spawner), the root adds only what it reaped.
    """
    if not _PROC:
        return _read_tree_psutil(root, with_root)
    from ._measure import tree_pids

    rss = threads = 0
    user = system = 0
    found = False
    for pid in tree_pids(root):
        data = _read(f"/proc/{pid}/stat")
        if data is None:
            continue  # ended meanwhile
        f = _stat(data)
        if len(f) < 22:
            continue
        found = True
        user += int(f[13])
        system += int(f[14])
        if pid != root or with_root:
            user += int(f[11])
            system += int(f[12])
            threads += int(f[17])
            rss += int(f[21])
    if not found:
        return None
    return rss * _PAGE, user / _TICK, system / _TICK, threads


def _read_tree_psutil(root: int, with_root: bool) -> Reading | None:
    import psutil

    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return None
    rss = threads = 0
    user = system = 0.0
    for p in procs:
        try:
            with p.oneshot():
                cpu = p.cpu_times()
                user += cpu.children_user
                system += cpu.children_system
                if p is not top or with_root:
                    user += cpu.user
                    system += cpu.system
                    rss += p.memory_info().rss
                    threads += p.num_threads()
        except psutil.Error:
            continue
    return rss, user, system, threads


class _SelfReader:
    """This process's RSS and threads from one `pread` of `/proc/self/stat` (kept open; reopened after a fork),
    its CPU time from `getrusage`, which counts every thread to the microsecond."""

    def __init__(self) -> None:
        self._pid = -1
        self._fd = -1

    def read(self) -> tuple[int, int, float, float]:
        """(RSS, threads, user s, system s) of this process since it started."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        rss = threads = 0
        if _PROC:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                try:
                    self._fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    self._fd = -1
            try:
                f = _stat(os.pread(self._fd, 4096, 0)) if self._fd >= 0 else []
            except OSError:
                f = []
            if len(f) >= 22:
                rss, threads = int(f[21]) * _PAGE, int(f[17])
        else:
            import psutil

            me = psutil.Process()
            rss, threads = int(me.memory_info().rss), int(me.num_threads())
        return rss, threads, ru.ru_utime, ru.ru_stime


# --- encoding and posting -----------------------------------------------------------------------------------------


def encode_samples(resource: Mapping[str, Any], samples: list[Sample], extra: Mapping[str, Any]) -> bytes:
    """An ExportMetricsServiceRequest of these samples, each point with `extra` and the run's ids."""
    from ._otlp_metrics import SumMetric, encode_metrics_request
    from ._version import __version__

    memory: list[Any] = []
    cpu: list[Any] = []
    threads: list[Any] = []
    for start, at, trace_id, span_id, rss, user, system, count in samples:
        link = {**extra, "glia.trace_id": trace_id, "glia.span_id": span_id}
        if rss is not None:
            memory.append((start, at, link, rss))
        if user is not None and system is not None:
            cpu.append((start, at, {**link, "type": "user"}, user))
            cpu.append((start, at, {**link, "type": "system"}, system))
        if count is not None:
            threads.append((start, at, link, count))
    metrics = [
        SumMetric("process.memory.usage", "By", "resident memory (RSS)", False, memory),
        SumMetric("process.cpu.time", "s", "CPU seconds since the run began", True, cpu),
        SumMetric("process.thread.count", "{thread}", "threads", False, threads),
    ]
    return encode_metrics_request(resource, "glia_otel", __version__, metrics)


class _Poster:
    """Posts batches from a thread of its own, one at a time, so that neither the user's code nor glia run's wait
    loop waits for the endpoint. `take` gives the next body that is due (None: nothing is).

    A raw `_thread`: it never imports `threading` (see docs/client.md), and `glia run` ends with `os._exit`."""

    def __init__(self, settings: Settings, take: Callable[[bool], bytes | None]) -> None:
        self.settings = settings
        self._take = take
        self._flag = _thread.allocate_lock()
        self._running = False
        self._again = False
        self._done = _thread.allocate_lock()  # held while the thread runs
        self._inflight: bytes | None = None

    def kick(self) -> None:
        """A batch is due: post it (and whatever becomes due meanwhile) in the background."""
        with self._flag:
            if self._running:
                self._again = True
                return
            self._running = True
            self._done.acquire()
        try:
            _thread.start_new_thread(self._loop, ())
        except Exception as e:  # no thread to spare: the batch goes with the last one
            warn_once("metrics-thread", "could not start posting process samples: %s: %s", type(e).__name__, e)
            with self._flag:
                self._running = False
            self._done.release()

    def _loop(self) -> None:
        try:
            while True:
                try:
                    body = self._take(False)
                except Exception as e:
                    warn_once("metrics-encode", "could not encode process samples: %s: %s", type(e).__name__, e)
                    body = None
                if body is None:
                    with self._flag:
                        if not self._again:
                            self._running = False
                            return
                        self._again = False
                    continue
                self._inflight = body
                try:
                    send(self.settings, "metrics", body)
                finally:
                    self._inflight = None
        finally:
            self._done.release()

    def close(self, deadline: float) -> None:
        """Post what is left by `deadline` from this thread; spool what the background post has not finished by
        then (should it finish later, the receiver stores its points once)."""
        try:
            body = self._take(True)
        except Exception as e:
            warn_once("metrics-encode", "could not encode process samples: %s: %s", type(e).__name__, e)
            body = None
        if body is not None:
            send(self.settings, "metrics", body, deadline - _EXIT_MARGIN_S)
        if self._done.acquire(True, max(0.0, deadline - _EXIT_MARGIN_S - time.monotonic())):
            self._done.release()
            return
        left = self._inflight
        if left is not None:
            spool_body(self.settings, "metrics", left)


# --- a Python process -------------------------------------------------------------------------------------------


class ProcessSampling:
    """Samples of this Python process while `track` runs are in progress, linked to the outermost one.

    A run's start costs a lock and an append; the first one also starts the sampling thread, which then sleeps until
    a sample is due. When the last run in progress ends, a last sample is taken (if the runs were sampled at all) and
    the batch is posted."""

    def __init__(self, settings: Settings, resource: Mapping[str, Any]) -> None:
        import threading

        self._settings = settings
        self._resource = dict(resource)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._runs: list[RunIds] = []  # the runs in progress, oldest first: samples are linked to the outermost one
        self._timeline: _Timeline | None = None  # while runs are in progress
        self._cpu0 = (0.0, 0.0)
        self._pending: list[Sample] = []
        self._sampled = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._reader = _SelfReader()
        self._poster = _Poster(settings, self._take)

    def reconfigure(self, settings: Settings, resource: Mapping[str, Any]) -> None:
        """Use these settings and this resource for the samples from now on."""
        with self._lock:
            self._settings = settings
            self._resource = dict(resource)
            self._poster.settings = settings

    def run_started(self, ids: RunIds, start_ns: int) -> None:
        """A run began at `start_ns`: with none other in progress, its schedule starts now."""
        import threading

        with self._lock:
            self._runs.append(ids)
            if self._timeline is not None or self._closed:
                return
            ru = resource.getrusage(resource.RUSAGE_SELF)
            self._cpu0 = (ru.ru_utime, ru.ru_stime)
            self._timeline = _Timeline(start_ns, time.monotonic(), self._settings.metrics_interval_s)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="glia-sampler", daemon=True)
                self._thread.start()
            else:
                self._wake.notify()

    def run_ended(self, ids: RunIds, end_ns: int) -> None:
        """A run ended at `end_ns`: with none left, a last sample if the runs were sampled, and the batch is
        posted."""
        with self._lock:
            if ids in self._runs:
                self._runs.remove(ids)
            timeline = self._timeline
            if self._runs or timeline is None:
                return
            self._timeline = None
            if timeline.taken == 0:
                return  # over before its first sample: nothing is sent
            # A sample the thread took between the run's end and this call would lie outside the run.
            self._pending = [p for p in self._pending if p[1] <= end_ns or p[0] != timeline.start_ns]
            self._pending.append(self._sample(timeline, ids, end_ns))
        self._poster.kick()

    def is_sampling(self) -> bool:
        """Whether this process has sampled a run (since it started or forked)."""
        return self._sampled

    def _sample(self, timeline: _Timeline, ids: RunIds, at_ns: int | None = None) -> Sample:
        rss, threads, user, system = self._reader.read()
        u0, s0 = self._cpu0
        at = time.time_ns() if at_ns is None else at_ns
        return (timeline.start_ns, at, *ids, rss, max(0.0, user - u0), max(0.0, system - s0), threads)

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._closed:
                    return
                timeline = self._timeline
                if timeline is None or timeline.due == float("inf"):
                    self._wake.wait()
                    continue
                delay = timeline.due - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                if not self._runs:
                    continue
                ids = self._runs[0]
                try:
                    if timeline.taken == 0:  # the zero point: CPU counts from the run's start
                        self._pending.append((timeline.start_ns, timeline.start_ns, *ids, None, 0.0, 0.0, None))
                    self._pending.append(self._sample(timeline, ids))
                    self._sampled = True
                except Exception as e:
                    warn_once("metrics-sample", "could not sample this process: %s: %s", type(e).__name__, e)
                timeline.advance(time.monotonic())
                due = self._due_locked()
            if due:
                self._poster.kick()

    def _due_locked(self) -> bool:
        if not self._pending:
            return False
        if self._timeline is None:
            return True
        flush_ns = 1e9 * (self._settings.metrics_interval_s or FLUSH_S)
        return time.time_ns() - self._pending[0][1] >= flush_ns

    def _take(self, final: bool) -> bytes | None:
        with self._lock:
            if not (self._pending and (final or self._due_locked())):
                return None
            batch, self._pending = self._pending, []
            resource = self._resource
        return encode_samples(resource, batch, {})

    def shutdown(self, deadline: float) -> None:
        """At exit: a last sample of runs still in progress, then post what is left by `deadline`; spool the rest."""
        with self._lock:
            self._closed = True
            timeline, self._timeline = self._timeline, None
            if timeline is not None and timeline.taken > 0 and self._runs:
                try:
                    self._pending.append(self._sample(timeline, self._runs[0]))
                except Exception as e:
                    warn_once("metrics-sample", "could not sample this process: %s: %s", type(e).__name__, e)
            self._wake.notify()
        self._poster.close(deadline)

    def after_fork_in_child(self) -> None:
        """The parent's runs, samples and threads are not the child's: start afresh, with the child's own pid and
        instance id on its samples."""
        import threading

        from ._resource import with_own_identity

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._runs = []
        self._timeline = None
        self._pending = []
        self._sampled = False
        self._thread = None
        self._resource = with_own_identity(self._resource)
        self._poster = _Poster(self._settings, self._take)


# --- a command's process tree -------------------------------------------------------------------------------------


class CommandSampler:
    """Samples of a `glia run` command's process tree (`glia.scope=tree`), linked to the command's span. Its wait
    loop calls `sample()` when one is due; `finish()` adds the exact CPU time from `wait4` and posts the rest."""

    def __init__(
        self,
        settings: Settings,
        resource: Mapping[str, Any],
        root: int,
        with_root: bool,
        ids: RunIds,
        start_ns: int,
        start_mono: float,
    ) -> None:
        self._settings = settings
        self._resource = dict(resource)
        self._root = root
        self._with_root = with_root
        self._ids = ids
        self._lock = _thread.allocate_lock()
        self._timeline = _Timeline(start_ns, start_mono, settings.metrics_interval_s)
        # The zero point: the tree's CPU time is 0 when the command starts.
        self._pending: list[Sample] = [(start_ns, start_ns, *ids, None, 0.0, 0.0, None)]
        self._poster = _Poster(settings, self._take)
        self._running = True

    def sample(self) -> float:
        """Sample the tree now; returns when the next sample is due (monotonic s; inf: no more). Never raises."""
        try:
            reading = read_tree(self._root, self._with_root)
            now_ns = time.time_ns()
            with self._lock:
                if reading is not None and reading[0] > 0:  # RSS 0: the command has just ended (a zombie)
                    rss, user, system, threads = reading
                    self._pending.append((self._timeline.start_ns, now_ns, *self._ids, rss, user, system, threads))
                self._timeline.advance(time.monotonic())
                due = self._due_locked()
            if due:
                self._poster.kick()
            return self._timeline.due
        except Exception as e:
            warn_once("metrics-sample", "could not sample the command: %s: %s", type(e).__name__, e)
            return float("inf")

    def _due_locked(self) -> bool:
        if not self._pending or not self._running:
            return bool(self._pending)
        flush_ns = 1e9 * (self._settings.metrics_interval_s or FLUSH_S)
        return time.time_ns() - self._pending[0][1] >= flush_ns

    def _take(self, final: bool) -> bytes | None:
        with self._lock:
            if not self._pending or not (final or self._due_locked()):
                return None
            batch, self._pending = self._pending, []
        return encode_samples(self._resource, batch, {"glia.scope": "tree"})

    def finish(self, end_ns: int, user: float | None, system: float | None, deadline: float) -> None:
        """The command ended at `end_ns` having used `user`/`system` CPU seconds (from `wait4`): that last point,
        then everything left posted by `deadline`, the rest spooled. Never raises."""
        try:
            with self._lock:
                self._running = False
                if user is not None and system is not None:
                    last = self._pending[-1] if self._pending else None
                    if last is not None and last[5] is not None and end_ns - last[1] < _MIN_LAST_INTERVAL_NS:
                        # Sampled CPU is in clock ticks (10 ms) per process, the end's figure exact: over a few
                        # hundredths of a second their difference is mostly rounding, so the last interval is
                        # measured from the sample before.
                        self._pending[-1] = (*last[:5], None, None, last[7])
                    self._pending.append((self._timeline.start_ns, end_ns, *self._ids, None, user, system, None))
            self._poster.close(deadline)
        except Exception as e:
            warn_once("metrics-finish", "could not send the command's samples: %s: %s", type(e).__name__, e)


def start_command_sampling(
    settings: Settings,
    resource: Mapping[str, Any],
    root: int,
    with_root: bool,
    ids: RunIds,
    start_ns: int,
    start_mono: float,
) -> CommandSampler | None:
    """A sampler of the tree under `root` (with `root` itself or not), for the run `ids` that began at `start_ns`
    (wall) / `start_mono` (monotonic s); None (and one warning) if that cannot be done."""
    try:
        return CommandSampler(settings, resource, root, with_root, ids, start_ns, start_mono)
    except Exception as e:
        warn_once("metrics-start", "could not start process sampling: %s: %s", type(e).__name__, e)
        return None
