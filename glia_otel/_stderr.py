"""`glia run --keep-stderr`: the command's stderr passed through as it comes, its end kept (the last 64 lines, 16 KiB
at most), and stored as a log record of the run when the run fails (`--keep-stderr=always`: whatever its exit code).

The command's stderr becomes a pipe, and what reads that pipe must outlive glia: a command writing to a pipe whose
reader has gone gets SIGPIPE (or EPIPE), and glia may be killed before its command ends (SIGKILL, the OOM killer).
So glia never reads it itself:

- with glia's spawner (`_spawn.c`, the usual case) the spawner is the reader. It is the command's parent, forked
  from glia, and waits for the command whatever becomes of glia; it passes each chunk on to its own stderr (glia's),
  keeps the last 16 KiB, and when the command has ended writes them to a memory file glia gave it (`--tail FD`).
  If descendants of the command still hold its stderr open then, a small relay forked from the spawner passes the
  rest through until they close it, so they are never cut off either;
- without the spawner (no C compiler), a process forked from glia before the command (`PythonTee`) does the same.
  glia closes a pipe to it when the command has ended (the kernel closes it if glia dies), and it writes the tail.

The tail file holds `<bytes written in all>\n<the last bytes>`. glia reads it once the command has ended, cuts it
to whole lines (64 at most), redacts each line by the command-line rules of `_redact.py`, and sends one OTLP log
record (body: the text; `log.iostream=stderr`) with the run's trace and span id to `/v1/logs`, within the exit
deadline, else to the spool. Without the switch nothing here runs and stdio is the command's own.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

MAX_LINES = 64
MAX_BYTES = 16 * 1024
FAILED, ALWAYS = "failed", "always"
OPTION = "--keep-stderr"
ENV = "GLIA_KEEP_STDERR"
EVENT = "glia.run.stderr"
_MODES = {
    "": None,
    "false": None,
    "0": None,
    "no": None,
    "off": None,
    "never": None,
    "true": FAILED,
    "1": FAILED,
    "yes": FAILED,
    "on": FAILED,
    FAILED: FAILED,
    ALWAYS: ALWAYS,
}
_TEE_IGNORES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE")


def parse_mode(name: str, value: str) -> str | None:
    """`failed`, `always` or None (off) from an option's or variable's value; ValueError for anything else."""
    mode = _MODES.get(value.strip().lower(), "?")
    if mode == "?":
        raise ValueError(f"{name}={value!r}: expected true (on failure), always, or false")
    return mode


def take_option(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """(argv without it, its value: "" for the bare switch) of a `--keep-stderr[=MODE]` among `glia run`'s options
    (before `--` or the command); None when it is not there."""
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-"):
            break
        if arg == OPTION:
            return args[:i] + args[i + 1 :], ""
        if arg.startswith(OPTION + "="):
            return args[:i] + args[i + 1 :], arg.split("=", 1)[1]
        # the values of these options may look like anything, even like this one
        i += 2 if arg in ("--name", "--attr", "--nextflow-task") else 1
    return args, None


def resolve(option: str | None, env: Mapping[str, str]) -> str | None:
    """The mode: the option's (a bare `--keep-stderr` keeps it on failure), else GLIA_KEEP_STDERR's, else off."""
    if option is not None:
        return parse_mode(OPTION, option) if option else FAILED
    return parse_mode(ENV, env.get(ENV, ""))


def wrapper_options(env: Mapping[str, str]) -> list[str]:
    """The `glia run` option a workflow engine's wrapper passes on for GLIA_KEEP_STDERR in its own environment
    (Nextflow's config, the Snakemake plugin); [] when it is off. ValueError for a value that means nothing."""
    mode = parse_mode(ENV, env.get(ENV, ""))
    if mode is None:
        return []
    return [OPTION] if mode == FAILED else [f"{OPTION}={mode}"]


# --- the tail file ------------------------------------------------------------------------------------------------


def tail_file() -> int:
    """A new, empty file in memory (close-on-exec) for the reader to write the tail to."""
    try:
        return os.memfd_create("glia-stderr-tail", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or memfd refused: an unlinked temporary file
        import tempfile

        with tempfile.TemporaryFile() as f:
            return os.dup(f.fileno())


def write_tail(fd: int, total: int, kept: bytes) -> None:
    """Put the tail in the file: `<total>\\n<kept>`."""
    os.pwrite(fd, b"%d\n" % total + kept, 0)


def read_tail(fd: int) -> tuple[int, bytes]:
    """(bytes written in all, the last bytes) from the tail file; (0, b"") when nothing was written there."""
    data = os.pread(fd, MAX_BYTES + 64, 0)
    head, newline, kept = data.partition(b"\n")
    if not newline or not head.isdigit():
        return 0, b""
    return int(head), kept[:MAX_BYTES]


def tail_lines(total: int, kept: bytes) -> tuple[list[str], bool]:
    """The last whole lines (at most MAX_LINES) of what the command wrote, and whether anything before them is left
    out. A first line whose start fell outside the kept bytes is dropped, unless it is the only one."""
    cut = total > len(kept)
    if cut and b"\n" in kept[:-1]:
        kept = kept[kept.index(b"\n") + 1 :]
    lines = kept.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    if len(lines) > MAX_LINES:
        lines, cut = lines[-MAX_LINES:], True
    return lines, cut


def redact_line(line: str) -> str:
    """`line` with the values the command-line rules find secret (`--password x`, `AWS_SECRET_ACCESS_KEY=...`,
    `scheme://user:secret@host`) replaced by `[REDACTED]`, its words and spacing otherwise as they were."""
    import re

    from ._redact import redact_args

    parts = re.split(r"(\s+)", line)
    words = [(i, p) for i, p in enumerate(parts) if i % 2 == 0 and p]
    for (i, _), redacted in zip(words, redact_args([w for _, w in words]), strict=True):
        parts[i] = redacted
    return "".join(parts)


def log_request(
    resource: Mapping[str, Any], trace_id: int, span_id: int, end_ns: int, lines: list[str], total: int, cut: bool
) -> bytes:
    """The OTLP logs request holding the run's stderr tail as one record, linked to the run."""
    from ._otlp_logs import LogData, encode_logs_request
    from ._version import __version__

    record = LogData(
        time_ns=end_ns,
        body="\n".join(redact_line(line) for line in lines),
        attributes={
            "log.iostream": "stderr",
            "glia.stderr.lines": len(lines),
            "glia.stderr.bytes": total,
            "glia.stderr.truncated": cut,
        },
        trace_id=trace_id,
        span_id=span_id,
        observed_ns=time.time_ns(),
        event_name=EVENT,
    )
    return encode_logs_request(resource, "glia_otel.run", __version__, [record])


# --- glia run's side ----------------------------------------------------------------------------------------------


class Keeper:
    """What `glia run` holds for one command's stderr: the tail file, and the Python tee when there is no spawner."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.fd = tail_file()
        self._tee: PythonTee | None = None

    def spawner_args(self) -> list[str]:
        """The spawner's options: it reads the command's stderr and writes the tail to our file."""
        os.set_inheritable(self.fd, True)
        return ["--tail", str(self.fd)]

    def python_tee(self) -> int:
        """Start the Python tee; returns the pipe end to make the command's stderr (the caller closes it)."""
        os.set_inheritable(self.fd, False)
        self._tee = PythonTee(self.fd)
        return self._tee.write_end

    def command_ended(self, deadline: float) -> None:
        """The command is gone: have the tail written (the spawner has written it already)."""
        if self._tee is not None:
            self._tee.finish(deadline)

    def send(
        self, settings: Any, resource: Mapping[str, Any], ids: tuple[int, int], end_ns: int, code: int, deadline: float
    ) -> None:
        """Send the tail as a log record of the run (trace id, span id), if the run failed or always is asked."""
        try:
            if code == 0 and self.mode != ALWAYS:
                return
            total, kept = read_tail(self.fd)
            lines, cut = tail_lines(total, kept)
            if not lines:
                return  # the command wrote nothing to stderr: there is nothing to keep
            from ._deliver import send

            send(settings, "logs", log_request(resource, ids[0], ids[1], end_ns, lines, total, cut), deadline)
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the tail file (and reap the tee if it has ended)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._tee is not None:
            self._tee.reap()


class PythonTee:
    """A process forked from glia that reads the command's stderr, as the spawner does (without one)."""

    def __init__(self, tail_fd: int) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        ended_r, ended_w = os.pipe2(os.O_CLOEXEC)  # closed by glia when the command has ended (or glia is gone)
        done_r, done_w = os.pipe2(os.O_CLOEXEC)  # closed by the tee once the tail is written
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd in (w, ended_w, done_r):
                    os.close(fd)
                _tee(r, ended_r, done_w, tail_fd)
                code = 0
            finally:
                os._exit(code)
        for fd in (r, ended_r, done_w):
            os.close(fd)
        self.pid = pid
        self.write_end = w
        self._ended = ended_w
        self._done = done_r

    def finish(self, deadline: float) -> None:
        """Tell the tee the command has ended; wait (until `deadline`, a monotonic time) for the tail."""
        import select

        os.close(self._ended)
        try:
            select.select([self._done], [], [], max(0.05, deadline - time.monotonic()))
        finally:
            os.close(self._done)

    def reap(self) -> None:
        """Reap the tee if it has ended; one still passing a descendant's output through is left to run."""
        try:  # noqa: SIM105 - contextlib costs glia run's start-up
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _tee(r: int, ended: int, done: int, tail_fd: int) -> None:
    """The tee's life: pass stderr on and keep its end; write the tail when glia says the command has ended (or
    glia is gone); go on passing through until nobody holds the pipe."""
    import select
    import signal

    for name in _TEE_IGNORES:  # a Ctrl-C or a job's SIGTERM to everyone must not leave the command without a reader
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for fd in (0, 1):  # not held open on glia's behalf
        os.close(fd)
    kept = bytearray()
    total = 0
    passing = True
    eof = told = False
    while not (eof and told):
        readable, _, _ = select.select([fd for fd, off in ((r, eof), (ended, told)) if not off], [], [])
        if r in readable:
            chunk = os.read(r, 65536)
            eof = not chunk
            total, passing = _take(chunk, kept, total, passing)
        if ended in readable and not os.read(ended, 1):
            told = True
            os.set_blocking(r, False)
            try:
                while not eof:  # what the command wrote before it ended
                    chunk = os.read(r, 65536)
                    eof = not chunk
                    total, passing = _take(chunk, kept, total, passing)
            except BlockingIOError:
                pass  # a descendant still holds it: the rest is passed through below
            os.set_blocking(r, True)
            write_tail(tail_fd, total, bytes(kept))
            os.close(done)


def _take(chunk: bytes, kept: bytearray, total: int, passing: bool) -> tuple[int, bool]:
    """Pass `chunk` on to stderr (until stderr fails: the command is still read) and keep the end of it."""
    view = memoryview(chunk)
    while passing and view:
        try:
            view = view[os.write(2, view) :]
        except OSError:
            passing = False
    kept += chunk
    if len(kept) > MAX_BYTES:
        del kept[:-MAX_BYTES]
    return total + len(chunk), passing
