"""The spool: OTLP request bodies that could not be delivered, one file per request (docs/attributes.md).

Files are `<signal>-<unix-time-ns>-<pid>-<hex>.pb[.gz]`, the signal `traces`, `metrics` or `logs` (the path it is
posted to), written to `<name>.tmp` and renamed into place. A name without a signal is a trace request (what clients
before the logs signal, and the R client, write: `<unix-time-ns>-...` for traces, `metrics-...` for metrics); an
older client skips a name it cannot read, so it never posts a `logs-` or `traces-` file, and never to the wrong path.
`glia flush` and, in the background, the next glia process resend them and delete each one only after a 2xx answer.

What is in the spool is sent with the user's headers (an ingest key), so the spool is trusted only as far as it is
the user's own: the directory must belong to the user and be writable by no one else (`open_dir`), and every file is
opened without following links and checked on the opened descriptor to be a regular file of the user's with one link.
All file work goes through the checked directory's descriptor, so what was checked is what is used.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from ._config import Settings, load_settings
from ._export import CONTENT_TYPES, KEEP, SENT, describe_failure, outcome, post
from ._log import get_logger, warn_once

_STALE_TMP_S = 3600.0
REJECTED = ".rejected"


class FlushReport:
    """What a flush did."""

    def __init__(self) -> None:
        self.sent_files = 0
        self.sent_bytes = 0
        self.sent_spans = 0
        self.kept_files = 0
        self.rejected_files = 0
        self.busy = False  # another process was flushing this spool: nothing was done
        self.unsafe: str | None = None  # the directory was refused (what is wrong, how to fix it): nothing was done
        self.refused: list[str] = []  # entries not sent because they are not the user's own plain files
        self.errors: list[str] = []


class UnsafeSpool(Exception):
    """The spool directory is not the user's own: `str()` says what is wrong and how to fix it."""


def _who(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


_DIR_MODE = 0o700
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO to read would otherwise wait for a writer; O_NOCTTY: a terminal never becomes ours.
_OPEN_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _make_dirs(directory: str) -> None:
    """Create `directory` and any missing parents 0700 (as XDG asks of state directories)."""
    parent = os.path.dirname(directory)
    if parent and parent != directory and not os.path.isdir(parent):
        _make_dirs(parent)
    try:  # noqa: SIM105 - contextlib costs glia run's start-up
        os.mkdir(directory, _DIR_MODE)
    except FileExistsError:
        pass  # made meanwhile by another process: checked like any other


def open_dir(directory: str, create: bool = False) -> int:
    """A descriptor of the spool directory once it is checked to be the user's own; the caller closes it.

    Refused (`UnsafeSpool`): a directory another user owns, one that group or others can write, a symlink owned by
    another user (its owner can re-point it at any time). The parents are not checked, unlike ssh's: every later
    step goes through this descriptor, so replacing a parent can only swap in another directory that passes the
    same checks, which is to say one of the user's own. `OSError` when it cannot be opened (or made, with `create`).
    """
    directory = directory.rstrip("/") or "/"
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        if not create:
            raise
        _make_dirs(directory)
        st = os.lstat(directory)
    me = os.geteuid()
    flags = _OPEN_DIR
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid not in (me, 0):
            raise UnsafeSpool(
                f"the spool directory {directory} is a symbolic link owned by {_who(st.st_uid)}, who can point it "
                f"anywhere; set GLIA_SPOOL_DIR (or --spool-dir) to a directory of your own"
            )
    else:
        flags |= os.O_NOFOLLOW  # what was looked at is what is opened
    fd = os.open(directory, flags)
    try:
        st = os.fstat(fd)
        if st.st_uid != me:
            raise UnsafeSpool(
                f"the spool directory {directory} belongs to {_who(st.st_uid)}, not to you ({_who(me)}): files "
                f"there would be sent with your headers; set GLIA_SPOOL_DIR (or --spool-dir) to a directory of your "
                f"own, or remove it and glia creates it (mode 0700)"
            )
        if st.st_mode & 0o022:
            whom = {0o020: "its group", 0o002: "the world"}.get(st.st_mode & 0o022, "its group and the world")
            raise UnsafeSpool(
                f"the spool directory {directory} is writable by others (mode {stat.S_IMODE(st.st_mode):o}: "
                f"{whom} can write): "
                f"anyone who can write there could plant requests sent with your headers, or links to your files; "
                f"fix it with `chmod go-w {directory}` (glia creates it 0700) or set GLIA_SPOOL_DIR to another"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


_SYMLINK = "a symbolic link (not followed)"


def _entry_problem(st: os.stat_result) -> str | None:
    """Why a spool entry is not sent, or None for a plain file of the user's own."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return _SYMLINK
    if not stat.S_ISREG(mode):
        kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
        kind = next((name for test, name in kinds if test(mode)), "a device")
        return f"{kind}, not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by {_who(st.st_uid)}, not by you"
    if st.st_nlink != 1:
        return f"has {st.st_nlink} hard links (a spooled request has one)"
    return None


def _refuse(report: FlushReport, directory: str, name: str, problem: str) -> None:
    report.refused.append(
        f"{os.path.join(directory, name)}: {problem}; not sent and left where it is (remove it if you did not put it "
        f"there)"
    )


SIGNALS = ("traces", "metrics", "logs")


def spool_name(signal: str, ext: str, gzipped: bool) -> str:
    """A fresh file name: its signal, then sortable by time, unique by pid and random bits."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}")
    return f"{signal}-{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}.{ext}{'.gz' if gzipped else ''}"


def parse_name(name: str) -> tuple[str, int, str, bool] | None:
    """(signal, time_ns, ext, gzipped) of a spool file name, or None if it is not one (a name without a signal is a
    trace request of an older client)."""
    signal = "traces"
    rest = name
    head, dash, tail = rest.partition("-")
    if dash and head in SIGNALS:
        signal, rest = head, tail
    gzipped = rest.endswith(".gz")
    if gzipped:
        rest = rest[:-3]
    stem, _, ext = rest.rpartition(".")
    if ext not in CONTENT_TYPES:
        return None
    ts = stem.split("-", 1)[0]
    if not ts.isdigit():
        return None
    return signal, int(ts), ext, gzipped


def _spool_files(dir_fd: int) -> list[tuple[int, str]]:
    """(time, name) of the entries named like spool files, oldest first; whether each may be read is checked later."""
    try:
        entries = list(os.scandir(dir_fd))
    except OSError:
        return []
    files = []
    for entry in entries:
        parsed = parse_name(entry.name)
        if parsed is not None:
            files.append((parsed[1], entry.name))
    files.sort()
    return files


def write(settings: Settings, signal: str, body: bytes, ext: str, gzipped: bool, rejected: bool = False) -> str | None:
    """Write one request body to the spool atomically; on failure log once and return None. Never raises.

    `rejected`: a body the endpoint refused for what it is, kept as `<name>.rejected` (not resent by itself).
    """
    directory = settings.spool_dir
    name = spool_name(signal, ext, gzipped) + (REJECTED if rejected else "")
    tmp = name + ".tmp"
    try:
        dir_fd = open_dir(directory, create=True)
    except UnsafeSpool as e:
        _warn_unsafe(directory, str(e))
        return None
    except OSError as e:
        _warn_unwritable(directory, e, len(body), signal)
        return None
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                view = memoryview(body)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as e:
            try:  # noqa: SIM105 - contextlib costs glia run's start-up
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            _warn_unwritable(directory, e, len(body), signal)
            return None
        _enforce_bound(directory, dir_fd, settings.spool_max_bytes, len(body))
    finally:
        os.close(dir_fd)
    return os.path.join(directory, name)


def _warn_unwritable(directory: str, e: OSError, size: int, signal: str) -> None:
    warn_once(
        f"spool-write:{directory}:{e.errno}",
        "could not write to the spool %s (%s); %d bytes of %s were lost",
        directory,
        e.strerror or e,
        size,
        signal,
    )


def _warn_unsafe(directory: str, problem: str) -> None:
    """One line per process for a refused spool, whether found writing or resending."""
    warn_once(
        f"spool-unsafe:{directory}",
        "will not use the spool: %s. Until then nothing is resent from it or written to it: runs the endpoint "
        "cannot take are lost",
        problem,
    )


# Per directory: (bytes in the spool as this process last counted them plus what it wrote since, writes since).
_sizes: dict[str, tuple[int, int]] = {}
_RESCAN_EVERY = 64  # other processes write too: count again now and then, not only when over


def _enforce_bound(directory: str, dir_fd: int, max_bytes: int, added: int) -> None:
    """Keep the spool under `max_bytes`, dropping the oldest files; scans the directory only when needed.

    Only regular files count and are dropped: a link to a big file must not make real runs go.
    """
    known = _sizes.get(directory)
    if known is not None:
        total, writes = known[0] + added, known[1] + 1
        if total <= max_bytes and writes < _RESCAN_EVERY:
            _sizes[directory] = (total, writes)
            return
    files = []
    sizes = []
    for _, name in _spool_files(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            files.append(name)
            sizes.append(st.st_size)
    total = sum(sizes)
    dropped = 0
    for name, size in zip(files, sizes, strict=True):
        if total <= max_bytes:
            break
        try:
            os.unlink(name, dir_fd=dir_fd)
            total -= size
            dropped += 1
        except OSError:
            continue
    _sizes[directory] = (total, 0)
    if dropped:
        warn_once(
            f"spool-full:{directory}",
            "spool %s is over GLIA_SPOOL_MAX_BYTES=%d; dropped the %d oldest file(s)",
            directory,
            max_bytes,
            dropped,
        )


def _count_spans(body: bytes, gzipped: bool, ext: str) -> int:
    if ext != "pb":
        return 0
    try:
        import gzip

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        req = ExportTraceServiceRequest()
        req.ParseFromString(gzip.decompress(body) if gzipped else body)
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    except Exception:
        return 0


def flush(settings: Settings, count_spans: bool = False, retry_rejected: bool = False) -> FlushReport:
    """Resend every spooled file, oldest first; stop at the first endpoint that does not answer.

    A spool directory that is not the user's own is not touched (`unsafe` says why); entries that are not the user's
    own plain files are left in place (`refused`). One flusher per spool at a time (a non-blocking `flock` on
    `<spool>/.lock`): when another process holds it, returns at once with `busy` set, so the same file is never sent
    twice at once. `retry_rejected`: put the `.rejected` files back in line first.
    """
    report = FlushReport()
    directory = settings.spool_dir
    try:
        dir_fd = open_dir(directory)
    except FileNotFoundError:
        return report  # no spool, nothing to send
    except UnsafeSpool as e:
        report.unsafe = str(e)
        return report
    except OSError as e:
        report.errors.append(f"cannot open the spool {directory}: {e.strerror or e}")
        return report
    try:
        if retry_rejected:
            _retry_rejected(dir_fd)
        _flush_dir(settings, directory, dir_fd, count_spans, report)
    finally:
        os.close(dir_fd)
    return report


def _flush_dir(settings: Settings, directory: str, dir_fd: int, count_spans: bool, report: FlushReport) -> None:
    try:
        lock_fd = os.open(".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as e:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror or str(e)
        report.errors.append(f"cannot lock the spool {directory} (.lock: {why})")
        return
    try:
        import fcntl

        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.busy = True
            return
        _flush_locked(settings, directory, dir_fd, count_spans, report)
    finally:
        os.close(lock_fd)  # releases the lock


def _read_entry(directory: str, dir_fd: int, name: str, report: FlushReport) -> bytes | None:
    """The bytes of a spool file, or None (refused, gone, unreadable: noted in `report`)."""
    try:
        # A first look without opening: opening a device can have effects of its own.
        problem = _entry_problem(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
        if problem is None:
            fd = os.open(name, _OPEN_ENTRY, dir_fd=dir_fd)
            try:
                # What counts is the file opened, not the name looked at a moment before.
                problem = _entry_problem(os.fstat(fd))
                if problem is None:
                    chunks = []
                    while chunk := os.read(fd, 1 << 20):
                        chunks.append(chunk)
                    return b"".join(chunks)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None  # another process sent it meanwhile
    except OSError as e:
        if e.errno != errno.ELOOP:
            report.errors.append(f"{os.path.join(directory, name)}: {e.strerror or e}")
            report.kept_files += 1
            return None
        problem = _SYMLINK  # it became a link between the look and the open
    if problem is not None:
        _refuse(report, directory, name, problem)
    return None


def _flush_locked(settings: Settings, directory: str, dir_fd: int, count_spans: bool, report: FlushReport) -> None:
    _remove_stale_tmp(dir_fd)
    down: set[str] = set()
    for _, name in _spool_files(dir_fd):
        parsed = parse_name(name)
        if parsed is None:
            continue
        signal, _, ext, gzipped = parsed
        url, headers, _, timeout = settings.target(signal)
        if url in down:
            report.kept_files += 1
            continue
        body = _read_entry(directory, dir_fd, name, report)
        if body is None:
            continue
        status, detail = post(url, body, CONTENT_TYPES[ext], headers, timeout, gzipped)
        verdict = outcome(status)
        if verdict == SENT:
            report.sent_files += 1
            report.sent_bytes += len(body)
            if count_spans and signal == "traces":
                report.sent_spans += _count_spans(body, gzipped, ext)
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                report.errors.append(f"sent but could not delete {os.path.join(directory, name)}: {e}")
        elif verdict == KEEP:
            # Down, busy, or the URL or credentials are wrong: the rest for this endpoint waits for next time.
            down.add(url)
            report.kept_files += 1
            report.errors.append(describe_failure(url, status, detail))
        else:
            # Never accepted however often it is sent: set aside, not deleted, so nothing is silently lost.
            try:  # noqa: SIM105 - contextlib costs glia run's start-up
                os.rename(name, name + REJECTED, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                pass
            report.rejected_files += 1
            report.errors.append(f"{name}: {describe_failure(url, status, detail)}; kept as .rejected")


def _retry_rejected(dir_fd: int) -> int:
    """Put every `.rejected` file back in line to be sent (checked like any other when read); returns how many."""
    try:
        entries = list(os.scandir(dir_fd))
    except OSError:
        return 0
    count = 0
    for entry in entries:
        if entry.name.endswith(REJECTED) and parse_name(entry.name[: -len(REJECTED)]) is not None:
            try:
                os.rename(entry.name, entry.name[: -len(REJECTED)], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                count += 1
            except OSError:
                continue
    return count


def _remove_stale_tmp(dir_fd: int) -> None:
    try:
        entries = list(os.scandir(dir_fd))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if entry.name.endswith(".tmp"):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP_S:
                    os.unlink(entry.name, dir_fd=dir_fd)  # a link goes, never what it points at
            except OSError:
                pass


def has_files(settings: Settings) -> bool:
    """Whether there is anything to resend (stops at the first spool file)."""
    try:
        with os.scandir(settings.spool_dir) as entries:
            return any(parse_name(entry.name) is not None for entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


def start_background_flush(settings: Settings) -> bool:
    """Resend the spool in a daemon thread (never delays the process's exit); False if there was nothing to send."""
    try:
        if not has_files(settings):
            return False
    except OSError:
        return False
    import threading

    def run() -> None:
        try:
            report = flush(settings)
            if report.unsafe is not None:
                _warn_unsafe(settings.spool_dir, report.unsafe)
            for refused in report.refused:
                warn_once(f"spool-refused:{refused}", "%s", refused)
            if report.sent_files:
                get_logger().info("glia: resent %d spooled request(s)", report.sent_files)
        except Exception as e:  # pragma: no cover - a background thread must never raise
            warn_once("background-flush", "background resend of the spool failed: %s", e)

    threading.Thread(target=run, name="glia-spool-flush", daemon=True).start()
    return True


def flush_main(argv: list[str]) -> int:
    """`glia flush`: resend the spool now and report what was sent."""
    import argparse

    parser = argparse.ArgumentParser(prog="glia flush", description=flush_main.__doc__)
    parser.add_argument("--spool-dir", help="spool directory (default: GLIA_SPOOL_DIR or the XDG state dir)")
    parser.add_argument("--endpoint", help="OTLP/HTTP base URL (default: OTEL_EXPORTER_OTLP_ENDPOINT)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something fails")
    parser.add_argument(
        "--retry-rejected",
        action="store_true",
        help="resend the requests the endpoint once refused (kept as .rejected), e.g. after raising its size limit",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(endpoint=args.endpoint, spool_dir=args.spool_dir)
    except ValueError as e:
        print(f"glia flush: {e}", file=sys.stderr)
        return 2
    report = flush(settings, count_spans=True, retry_rejected=args.retry_rejected)
    if report.unsafe is not None:
        print(f"glia flush: will not use the spool: {report.unsafe}", file=sys.stderr)
        return 2
    if report.busy:
        if not args.quiet:
            print(f"glia flush: another flush of {settings.spool_dir} is running; it sends the files")
        return 0
    trouble = report.errors or report.refused
    if not args.quiet or trouble:
        print(
            f"glia flush: sent {report.sent_files} request(s), {report.sent_spans} span(s), "
            f"{report.sent_bytes} bytes to {settings.traces_endpoint}; "
            f"{report.kept_files} kept for later, {report.rejected_files} rejected, {len(report.refused)} refused "
            f"(spool: {settings.spool_dir})",
            file=sys.stderr if trouble else sys.stdout,
        )
        for err in dict.fromkeys(report.refused + report.errors):
            print(f"glia flush: {err}", file=sys.stderr)
    # Anything left unsent or unexplained is a failure for the caller (a cron job, a job's epilogue): files kept or
    # set aside, and errors such as a spool that could not be opened or locked, where nothing was even tried.
    return 1 if trouble or report.kept_files or report.rejected_files else 0
