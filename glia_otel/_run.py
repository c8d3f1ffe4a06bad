"""`glia run [--name NAME] [--attr k=v]... [--no-args] -- CMD ARGS...`: run a command, record it as a run.

The child starts first; everything else (settings, resource, encoding) happens while it runs. Nothing from the
OpenTelemetry API, its SDK or protobuf is imported: the span is encoded by `_otlp` and posted by `_export`, which
keeps `glia run -- true` within about 20 ms of bare `true` (tests/unit/test_client_imports.py pins the modules).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Sequence
    from typing import Any
else:
    import _signal as signal  # the C module: `signal` imports enum and functools, several ms of start-up

USAGE = """usage: glia run [--name NAME] [--attr KEY=VALUE]... [--no-args] [--keep-stderr[=always]] -- CMD [ARGS...]

Run CMD and record it as one run (an OpenTelemetry span): wall and CPU time, the peak RSS of its largest
process (what GNU time's %M reports), the peak of the whole process tree (the cgroup's memory high-water mark,
else sampled), I/O bytes and the exit code. stdin/stdout/stderr are left alone (stderr unless --keep-stderr),
SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 are forwarded, and glia exits with the command's exit code (128+N
if a signal N ended it).

options:
  --name NAME        span name (default: the script or program name)
  --attr KEY=VALUE   a custom value on the run (repeatable)
  --no-args          leave the command's arguments out (also GLIA_RECORD_ARGS=false)
  --nextflow-task F  the command is a Nextflow task described by F (written by `glia nextflow-config`)
  --keep-stderr[=always]
                     keep the last 64 lines (16 KiB) of the command's stderr, passed on to glia's stderr as it
                     comes, and store them with the run when it fails (=always: whatever its exit code; also
                     GLIA_KEEP_STDERR=true or always), redacted as command lines are. The command's stderr is then
                     a pipe, not the terminal: a program that colours or buffers its output by isatty() sees the
                     difference. The pipe is read by glia's spawner, not glia, so the command never loses it
  -h, --help         show this help
"""

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_SI_KERNEL = 0x80  # si_code of signals the kernel (the terminal) sent: the child's process group got them too
_SAMPLE_INTERVAL_S = 0.05
_FLUSH_AFTER_S = 0.2
_FIRST_SAMPLE_S = 1.0  # _metrics.FIRST_SAMPLE_S, the ramp's first step (a unit test keeps the two equal)
_LIVE_AFTER_S = 1.0  # _live.LIVE_AFTER_S: a command still running then is sent as running (docs/attributes.md)


class UsageError(Exception):
    """Bad `glia run` arguments."""


def parse_args(argv: Sequence[str]) -> tuple[str | None, dict[str, str], bool, list[str]]:
    """(name, attrs, record_args, command) from `glia run`'s arguments."""
    name: str | None = None
    attrs: dict[str, str] = {}
    record_args = True
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return name, attrs, record_args, list(argv[i + 1 :])
        if arg in ("-h", "--help"):
            raise UsageError("")
        if arg == "--no-args":
            record_args = False
        elif arg == "--name" or arg.startswith("--name="):
            if "=" in arg:
                name = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                i += 1
                name = argv[i]
            else:
                raise UsageError("--name needs a value")
        elif arg == "--attr" or arg.startswith("--attr="):
            if "=" in arg and arg.startswith("--attr="):
                kv = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                i += 1
                kv = argv[i]
            else:
                raise UsageError("--attr needs KEY=VALUE")
            key, sep, value = kv.partition("=")
            if not sep or not key:
                raise UsageError(f"--attr {kv!r}: expected KEY=VALUE")
            attrs[key] = value
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r} (put the command after --)")
        else:
            return name, attrs, record_args, list(argv[i:])
        i += 1
    return name, attrs, record_args, []


def take_task_option(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """(argv without it, FIELDS) of a `--nextflow-task FIELDS` among the options (before `--` or the command)."""
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-"):
            break
        if arg.startswith("--nextflow-task="):
            return args[:i] + args[i + 1 :], arg.split("=", 1)[1]
        if arg == "--nextflow-task":
            if i + 1 >= len(args):
                raise UsageError("--nextflow-task needs a value")
            return args[:i] + args[i + 2 :], args[i + 1]
        # the values of --name and --attr may look like anything, even like this option
        i += 2 if arg in ("--name", "--attr") else 1
    return args, None


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


def _spawn(cmd: list[str], env: dict[str, str], cgroup: Any, stderr_fd: int | None = None) -> tuple[int, int]:
    """Fork and exec; returns (pid, fd to read with `_exec_result` once the child has ended). `stderr_fd` becomes the
    command's stderr (and is closed here).

    The parent does not wait for the exec: joining the cgroup and exec'ing run on the child's side while glia
    prepares the run's record on its own.
    """
    from . import _cgroup

    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            if cgroup is not None and not _cgroup.enter(cgroup):
                os.write(write_fd, b"C")  # not in the cgroup: its figure would not be the command's
            if stderr_fd is not None:
                os.dup2(stderr_fd, 2)
            # Python ignores SIGPIPE and SIGXFSZ; the program must get the defaults (as subprocess does).
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            try:
                os.execvpe(cmd[0], cmd, env)
            except OSError as e:
                if e.errno != 8:  # ENOEXEC: no #! line; a shell runs such a file as a script, and so does glia
                    raise
                os.execve("/bin/sh", ["sh", _which(cmd[0], env) or cmd[0], *cmd[1:]], env)
        except OSError as e:
            try:
                os.write(write_fd, str(e.errno or 0).encode())
            finally:
                os._exit(127)
        except BaseException:
            os._exit(127)
    os.close(write_fd)
    if stderr_fd is not None:
        os.close(stderr_fd)
    return pid, read_fd


def _exec_result(read_fd: int) -> tuple[int | None, bool]:
    """(errno of a failed exec or None, whether the child joined the cgroup), from what the child wrote."""
    data = b""
    while True:
        try:
            chunk = os.read(read_fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    os.close(read_fd)
    joined = not data.startswith(b"C")
    digits = data.lstrip(b"C").strip()
    return (int(digits) if digits.isdigit() else None) if digits else None, joined


def _start_spawner(
    spawner: str, cmd: list[str], env: dict[str, str], cgroup: Any, options: Sequence[str] = ()
) -> tuple[int, int]:
    """Start glia's spawner (`_spawn.c`), which forks and execs the command; returns (its pid, its report's fd).

    posix_spawn (vfork and exec in the C library) costs the same however large this process is, and the spawner
    inherits the signal mask: the forwarded signals stay blocked there until it waits for them.
    """
    read_fd, write_fd = os.pipe()
    try:
        os.set_inheritable(write_fd, True)
        join = "-"
        if cgroup is not None:
            join = os.path.join(cgroup.path, "tasks" if cgroup.version == 1 else "cgroup.procs")
        pid = os.posix_spawn(spawner, [spawner, str(write_fd), join, *options, "--", *cmd], env)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return pid, read_fd


class _Report:
    """What the spawner wrote (the line formats are in `_spawn.c`)."""

    __slots__ = ("buffer", "eof", "exec_errno", "fd", "joined", "live_io", "pid", "rusage", "status")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False
        self.pid: int | None = None
        self.joined = True
        self.exec_errno: int | None = None
        self.live_io: tuple[int, int] | None = None
        self.status: int | None = None
        self.rusage: tuple[int, float, float] | None = None  # (maxrss KiB, user s, system s) of the whole tree

    def read_until_pid(self) -> None:
        """Block until the spawner has forked (a millisecond after its start) or ended."""
        while self.pid is None and not self.eof:
            self._read()

    def read_to_end(self) -> None:
        """Everything else, once the spawner has ended."""
        while not self.eof:
            self._read()
        os.close(self.fd)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 4096)
        except InterruptedError:
            return
        if not chunk:
            self.eof = True
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self._take(line.split())

    def _take(self, words: list[bytes]) -> None:
        try:
            numbers = [int(w) for w in words[1:]]
        except ValueError:
            return
        kind = words[0] if words else b""
        if kind == b"P" and len(numbers) == 1:
            self.pid = numbers[0]
        elif kind == b"C":
            self.joined = False
        elif kind == b"E" and len(numbers) == 1:
            self.exec_errno = numbers[0]
        elif kind == b"O" and len(numbers) == 2:
            self.live_io = (numbers[0], numbers[1])
        elif kind == b"R" and len(numbers) == 6:
            self.status = numbers[0]
            # CPU from the spawner's RUSAGE_CHILDREN: the command's tree and the orphans it reaped, whereas the
            # peak is the command's own wait4 figure (its largest process: GNU time's %M).
            self.rusage = (numbers[1], numbers[4] / 1e6, numbers[5] / 1e6)


def main(argv: list[str]) -> int:
    """`glia run`: run a command, record it, exit with its exit code."""
    task_fields: str | None = None
    try:
        if "--nextflow-task" in argv or any(a.startswith("--nextflow-task=") for a in argv):
            argv, task_fields = take_task_option(argv)
        keep_option = None
        if any(a.startswith("--keep-stderr") for a in argv):
            from . import _stderr

            argv, keep_option = _stderr.take_option(argv)
            if keep_option:
                try:
                    _stderr.parse_mode("--keep-stderr", keep_option)
                except ValueError as e:
                    raise UsageError(str(e)) from None
        name, custom, record_args, cmd = parse_args(argv)
    except UsageError as e:
        if str(e):
            print(f"glia run: {e}\n", file=sys.stderr)
            print(USAGE, file=sys.stderr)
            return 2
        print(USAGE)
        return 0
    if not cmd:
        print("glia run: no command given\n", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2

    from ._config import load_settings, parse_traceparent

    try:
        settings = load_settings(record_args=None if record_args else False)
    except ValueError as e:
        print(f"glia run: {e}; running the command untracked", file=sys.stderr)
        settings = None
    if settings is None or settings.disabled:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            return _exec_failed(cmd[0], e.errno)

    from . import _cgroup, _spawner
    from ._measure import read_io, tree_rss

    # Before the run's clocks start: on first use this builds the spawner (a compiler run, once per glia version).
    spawner, spawner_problem = _spawner.find()
    inherited = parse_traceparent(os.environ.get("TRACEPARENT", ""))
    task = _engine_task(task_fields) if task_fields is not None else None
    if task is not None:
        from ._nextflow import task_log

        sys.stderr = task_log(task)  # the task's stderr is the task's own
        # a task's run is named after the task, its program is the process, its parent the workflow's span
        name = name or task.name
        settings.service_name = task.program
        if task.trace_id:
            inherited = (task.trace_id, task.parent_span_id, 1)
    # the command's stderr, when it is to be kept: read by the spawner (or a tee), never by glia itself
    keep = _keeper(keep_option) if keep_option is not None or os.environ.get("GLIA_KEEP_STDERR") else None
    trace_id = inherited[0] if inherited else int.from_bytes(os.urandom(16), "big") or 1
    parent_span_id = inherited[1] if inherited else 0
    span_id = int.from_bytes(os.urandom(8), "big") or 1
    env = dict(os.environ)
    env["TRACEPARENT"] = f"00-{trace_id:032x}-{span_id:016x}-01"

    cgroup = _cgroup.create(os.urandom(3).hex()) if settings.use_cgroup else None
    io0 = read_io()
    blocked = {*_FORWARDED, signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    wall0 = time.time_ns()
    mono0 = time.monotonic_ns()
    try:
        report: _Report | None = None
        if spawner is not None:
            try:
                child, status_fd = _start_spawner(spawner, cmd, env, cgroup, keep.spawner_args() if keep else ())
                report = _Report(status_fd)
            except (OSError, ValueError) as e:
                spawner_problem = f"{spawner} cannot be executed ({getattr(e, 'strerror', None) or e})"
        if report is None:
            child, exec_fd = _spawn(cmd, env, cgroup, keep.python_tee() if keep else None)
    except OSError as e:
        # No process to spare for glia (EAGAIN, ENOMEM): the command matters more than its record.
        print(f"glia run: cannot fork ({e.strerror or e}); running the command untracked", file=sys.stderr)
        if cgroup is not None:
            cgroup.remove()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e2:
            return _exec_failed(cmd[0], e2.errno)
    try:
        # The child runs: now the work that need not come before it, including what the export after it would
        # otherwise wait for (its modules, zlib's library, the endpoint's address).
        import zlib  # noqa: F401

        from . import _deliver, _export, _otlp, _spool  # noqa: F401
        from ._resource import command_attributes

        _export.resolve_ahead(settings.traces_endpoint)

        # The process glia waits for and signals is `child`: the spawner, or the command itself without one.
        pid = child
        if report is not None:
            report.read_until_pid()
            pid = report.pid or child
        resource: dict[str, Any] | None = None
        try:
            resource = command_attributes(
                cmd, _which(cmd[0], env), pid, settings.record_args, settings.service_name, settings.resource_attributes
            )
        except Exception as e:
            print(f"glia run: could not describe the command: {type(e).__name__}: {e}", file=sys.stderr)

        # Resending the spool waits until the command has run a moment, and sampling the tree over time until it has
        # run a second (or one fixed interval): a short command pays for neither, not even the sampler's import.
        flush_at = time.monotonic() + _FLUSH_AFTER_S
        first_sample = settings.metrics_interval_s or _FIRST_SAMPLE_S
        metrics_at = mono0 / 1e9 + first_sample if settings.metrics_enabled else float("inf")
        sampler: Any = None
        # Its start record once it has run a second, then heartbeats: a shorter command sends none (_live.py).
        live_at = mono0 / 1e9 + _LIVE_AFTER_S if settings.live else float("inf")
        beats: Any = None
        sampled_peak = 0
        status, rusage = 0, None
        next_sample = time.monotonic() + 0.01 if cgroup is None else float("inf")
        while True:
            try:
                done_pid, status, rusage = os.wait4(child, os.WNOHANG)
            except ChildProcessError:
                break
            if done_pid == child:
                break
            now = time.monotonic()
            if now >= flush_at:
                flush_at = float("inf")
                _spool.start_background_flush(settings)
            if now >= metrics_at:
                if sampler is None:
                    sampler = _start_sampler(settings, resource, child, report is None, trace_id, span_id, wall0, mono0)
                metrics_at = sampler.sample() if sampler is not None else float("inf")
            if now >= live_at:
                if beats is None:
                    beats = _start_beats(
                        settings, resource, cmd, name, custom, task, (trace_id, span_id, parent_span_id), wall0,
                        lambda: _tree_figures(child, report is None, cgroup, sampled_peak),  # noqa: B023 - the latest
                    )  # fmt: skip
                live_at = beats.beat() if beats is not None else float("inf")
            timeout = min(
                1.0,
                max(0.0, next_sample - now),
                max(0.0, flush_at - now),
                max(0.0, metrics_at - now),
                max(0.0, live_at - now),
            )
            info = signal.sigtimedwait(blocked, timeout)
            if info is not None and info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
                try:  # noqa: SIM105 - contextlib costs glia run's start-up
                    os.kill(child, info.si_signo)
                except ProcessLookupError:
                    pass
            if cgroup is None and time.monotonic() >= next_sample:
                try:  # noqa: SIM105 - contextlib costs glia run's start-up
                    # Under the spawner, its descendants: the command's tree and the orphans reparented to it.
                    sampled_peak = max(sampled_peak, tree_rss(child, with_root=report is None))
                except Exception:
                    pass
                next_sample = time.monotonic() + _SAMPLE_INTERVAL_S
        mono1 = time.monotonic_ns()

        usage: tuple[int, float, float, str] | None = None  # (peak RSS bytes, user s, system s, method)
        live_io: tuple[int, int] | None = None
        if report is not None:
            report.read_to_end()
            exec_errno, joined, live_io = report.exec_errno, report.joined, report.live_io
            if report.status is not None and report.rusage is not None:
                status = report.status
                usage = (report.rusage[0] * 1024, report.rusage[1], report.rusage[2], "wait4")
            else:
                # The spawner itself was killed: the command may still run, its figures are unknown.
                print(f"glia run: its spawner ended ({exit_code_of(status)}) before the command", file=sys.stderr)
        else:
            exec_errno, joined = _exec_result(exec_fd)
            if rusage is not None:
                usage = (int(rusage.ru_maxrss) * 1024, float(rusage.ru_utime), float(rusage.ru_stime), "wait4-python")
            if cgroup is not None:
                live_io = cgroup.live_io()
        code = exit_code_of(status)
        if not joined and cgroup is not None:
            cgroup.remove()
            cgroup = None
        if exec_errno is not None:
            code = _exec_failed(cmd[0], exec_errno)
        io1 = read_io()
        # One exit deadline for everything that follows: the run first, then the samples with what remains.
        deadline = time.monotonic() + settings.export_deadline_s
        if keep is not None:
            keep.command_ended(deadline)
        try:
            attrs = _span_attributes(code, mono1 - mono0, usage, cgroup, sampled_peak, io0, io1, live_io, custom)
            if task is not None:
                attrs.update(task.attributes)
            if spawner_problem:
                attrs["glia.run.spawner_problem"] = spawner_problem
            if resource is None:
                resource = {"service.name": os.path.basename(cmd[0])}
            _export_span(
                settings,
                resource,
                name or str(resource["service.name"]),
                trace_id,
                span_id,
                parent_span_id,
                wall0,
                wall0 + (mono1 - mono0),
                attrs,
                code,
                deadline,
            )
        except Exception as e:
            print(f"glia run: could not record the run: {type(e).__name__}: {e}", file=sys.stderr)
        if keep is not None:
            try:
                ids = (trace_id, span_id)
                keep.send(settings, resource or {}, ids, wall0 + (mono1 - mono0), code, deadline)
            except Exception as e:
                print(f"glia run: could not keep the command's stderr: {type(e).__name__}: {e}", file=sys.stderr)
        if sampler is not None:
            # The last CPU point is the exact figure the span has; then the samples, with what remains of the deadline.
            sampler.finish(wall0 + (mono1 - mono0), *(usage[1:3] if usage is not None else (None, None)), deadline)
        return code
    finally:
        # Signals stay blocked until the run is recorded and the cgroup removed: a SIGTERM or Ctrl-C that comes
        # after the command ended must not cut the export short. They are then discarded: the child is gone.
        if cgroup is not None:
            cgroup.remove()
        try:
            while signal.sigtimedwait(blocked, 0) is not None:
                pass
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _start_sampler(
    settings: Any,
    resource: dict[str, Any] | None,
    root: int,
    with_root: bool,
    trace_id: int,
    span_id: int,
    wall0: int,
    mono0: int,
) -> Any:
    """Sample the command's tree from now on (`_metrics` is imported only now: a short command never loads it)."""
    from . import _metrics

    ids = (f"{trace_id:032x}", f"{span_id:016x}")
    return _metrics.start_command_sampling(settings, resource or {}, root, with_root, ids, wall0, mono0 / 1e9)


def _run_kind(custom: dict[str, str]) -> str:
    # A workflow engine's wrapper says its run is a task (--attr glia.run.kind=task); anything else is a command.
    return "task" if custom.get("glia.run.kind") == "task" else "command"


def _start_beats(
    settings: Any,
    resource: dict[str, Any] | None,
    cmd: list[str],
    name: str | None,
    custom: dict[str, str],
    task: Any,
    ids: tuple[int, int, int],
    wall0: int,
    read: Any,
) -> Any:
    """The command's start record and heartbeats from now on (`_live` is imported only now: a short command never
    loads it), with what its final span will say of it at start: name, kind, custom values, the task's."""
    from . import _live
    from ._otlp import SpanData

    resource = resource or {"service.name": os.path.basename(cmd[0])}
    attrs: dict[str, Any] = dict(custom)
    attrs["glia.run.kind"] = _run_kind(custom)
    if task is not None:
        attrs.update(task.attributes)
    trace_id, span_id, parent_span_id = ids
    span = SpanData(
        trace_id=trace_id,
        span_id=span_id,
        name=name or str(resource["service.name"]),
        start_ns=wall0,
        end_ns=0,
        parent_span_id=parent_span_id,
        flags=0x301 if parent_span_id else 0x101,
    )
    return _live.command_beats(settings, resource, span, attrs, read)


def _tree_figures(root: int, with_root: bool, cgroup: Any, sampled_peak: int) -> dict[str, Any]:
    """What a heartbeat says of the command's tree so far: its memory now, CPU seconds, and its peak."""
    from ._metrics import read_tree

    figures: dict[str, Any] = {}
    reading = read_tree(root, with_root)
    if reading is not None:
        rss, user, system, _ = reading
        figures["glia.memory.rss_bytes"] = rss
        figures["glia.cpu.user_seconds"] = user
        figures["glia.cpu.system_seconds"] = system
    peak = cgroup.peak_bytes() if cgroup is not None else None
    if peak is not None:
        figures["glia.memory.tree_peak_bytes"] = peak
        figures["glia.memory.tree_peak_method"] = "cgroup"
    elif sampled_peak:
        figures["glia.memory.tree_peak_bytes"] = sampled_peak
        figures["glia.memory.tree_peak_method"] = "sampled-tree"
    return figures


def _keeper(option: str | None) -> Any:
    """What keeps the command's stderr (`_stderr.Keeper`), or None: off, or (said once) GLIA_KEEP_STDERR is wrong."""
    from . import _stderr

    try:
        mode = _stderr.resolve(option, os.environ)
        return _stderr.Keeper(mode) if mode is not None else None
    except (ValueError, OSError) as e:
        print(f"glia run: {e}; the command's stderr is left as it is", file=sys.stderr)
        return None


def _engine_task(fields: str) -> Any:
    """The Nextflow task `--nextflow-task FIELDS` describes, or None (said once) when FIELDS cannot be read."""
    from . import _nextflow

    try:
        return _nextflow.task_run(fields)
    except ValueError as e:
        print(f"glia run: {e}; recording the command as a plain run", file=sys.stderr)
        return None


def _exec_failed(program: str, errno_: int | None) -> int:
    import errno

    # the command's own failure: on the command's stderr, even where glia's messages go elsewhere (a Nextflow task)
    stderr = sys.__stderr__ or sys.stderr
    if errno_ == errno.ENOENT:
        print(f"glia run: {program}: command not found", file=stderr)
        return 127
    reason = os.strerror(errno_) if errno_ else "cannot execute"
    print(f"glia run: {program}: {reason}", file=stderr)
    return 126


def _which(program: str, env: dict[str, str]) -> str | None:
    if os.sep in program:
        return os.path.abspath(program)
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _span_attributes(
    code: int,
    wall_ns: int,
    usage: tuple[int, float, float, str] | None,
    cgroup: Any,
    sampled_peak: int,
    io0: tuple[int, int] | None,
    io1: tuple[int, int] | None,
    live_io: tuple[int, int] | None,
    custom: dict[str, str],
) -> dict[str, Any]:
    """The run's attributes. Two memory figures, two names: `peak_rss` is the largest single process's peak (GNU
    time's %M), `tree_peak` the whole tree's (a cgroup's charged-memory peak, else a sampled sum)."""
    attrs: dict[str, Any] = dict(custom)
    attrs["glia.run.kind"] = _run_kind(custom)
    attrs["process.exit.code"] = code
    peak = 0
    if usage is not None:
        peak, user, system, method = usage
        attrs["glia.cpu.user_seconds"] = user
        attrs["glia.cpu.system_seconds"] = system
        attrs["glia.cpu.percent"] = 100.0 * (user + system) / (wall_ns / 1e9) if wall_ns > 0 else 0.0
        attrs["glia.memory.peak_rss_bytes"] = peak
        attrs["glia.memory.peak_rss_method"] = method
    tree = cgroup.peak_bytes() if cgroup is not None else None
    if tree is not None:
        attrs["glia.memory.tree_peak_bytes"] = tree
        attrs["glia.memory.tree_peak_method"] = "cgroup"
        attrs["glia.memory.cgroup_version"] = cgroup.version
        oom_kills = cgroup.oom_kills()
        if oom_kills is not None:
            attrs["glia.memory.oom_kills"] = oom_kills
    elif sampled_peak:
        # A sampled sum can miss a short spike; the tree's peak is never below its largest process's.
        attrs["glia.memory.tree_peak_bytes"] = max(sampled_peak, peak)
        attrs["glia.memory.tree_peak_method"] = "sampled-tree"
    elif usage is not None:
        # Over before the first sample, without a cgroup: the largest process's figure is all there is.
        attrs["glia.memory.tree_peak_bytes"] = peak
        attrs["glia.memory.tree_peak_method"] = usage[3]
    if io0 is not None and io1 is not None:
        # A reaped process's I/O is added to its reaper's counters, and glia reaps the spawner, which reaps the
        # command and the orphans of its tree: glia's own delta is theirs. Descendants still running when the command
        # ended add what they did so far.
        extra = live_io or (0, 0)
        attrs["glia.io.read_bytes"] = max(0, io1[0] - io0[0]) + extra[0]
        attrs["glia.io.write_bytes"] = max(0, io1[1] - io0[1]) + extra[1]
    return attrs


def _export_span(
    settings: Any,
    resource: dict[str, Any],
    name: str,
    trace_id: int,
    span_id: int,
    parent_span_id: int,
    start_ns: int,
    end_ns: int,
    attrs: dict[str, Any],
    code: int,
    deadline: float,
) -> None:
    from ._deliver import send
    from ._otlp import SpanData, encode_request
    from ._version import __version__

    span = SpanData(
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        start_ns=start_ns,
        end_ns=end_ns,
        parent_span_id=parent_span_id,
        attributes=attrs,
        status_code=2 if code != 0 else 0,
        status_message=f"exit code {code}" if code != 0 else "",
        flags=0x301 if parent_span_id else 0x101,
    )
    send(settings, "traces", encode_request([(resource, "glia_otel.run", __version__, [span])]), deadline)
