"""The spool: OTLP request bodies that could not be delivered, one file per request (docs/attributes.md).

Files are `<unix-time-ns>-<pid>-<hex>.pb[.gz]` (traces) or `metrics-<...>` (metrics), written to `<name>.tmp`
and renamed into place. `glia flush` and, in the background, the next glia process resend them and delete each
one only after a 2xx answer.
"""

from __future__ import annotations

import os
import sys
import time

from ._config import Settings, load_settings
from ._export import CONTENT_TYPES, ENDPOINT_PROBLEM, NO_ANSWER, RETRYABLE, describe_failure, post
from ._log import get_logger, warn_once

_STALE_TMP_S = 3600.0
REJECTED = ".rejected"


TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading


class FlushReport:
    """What a flush did."""

    def __init__(self) -> None:
        self.sent_files = 0
        self.sent_bytes = 0
        self.sent_spans = 0
        self.kept_files = 0
        self.rejected_files = 0
        self.busy = False  # another process was flushing this spool: nothing was done
        self.errors: list[str] = []


def spool_name(signal: str, ext: str, gzipped: bool) -> str:
    """A fresh file name: sortable by time, unique by pid and random bits."""
    prefix = "metrics-" if signal == "metrics" else ""
    return f"{prefix}{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}.{ext}{'.gz' if gzipped else ''}"


def parse_name(name: str) -> tuple[str, int, str, bool] | None:
    """(signal, time_ns, ext, gzipped) of a spool file name, or None if it is not one."""
    signal = "traces"
    rest = name
    if rest.startswith("metrics-"):
        signal, rest = "metrics", rest[len("metrics-") :]
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


def _spool_files(directory: str) -> list[tuple[int, str]]:
    """(time, path) of the spool's files, oldest first."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    files = []
    for entry in entries:
        parsed = parse_name(entry.name)
        if parsed is not None and entry.is_file():
            files.append((parsed[1], entry.path))
    files.sort()
    return files


def write(settings: Settings, signal: str, body: bytes, ext: str, gzipped: bool, rejected: bool = False) -> str | None:
    """Write one request body to the spool atomically; on failure log once and return None. Never raises.

    `rejected`: a body the endpoint refused for what it is, kept as `<name>.rejected` (not resent by itself).
    """
    directory = settings.spool_dir
    name = spool_name(signal, ext, gzipped) + (REJECTED if rejected else "")
    final = os.path.join(directory, name)
    tmp = final + ".tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(body)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except OSError as e:
        try:  # noqa: SIM105 - contextlib costs glia run's start-up
            os.unlink(tmp)
        except OSError:
            pass
        warn_once(
            f"spool-write:{directory}:{e.errno}",
            "could not write to the spool %s (%s); %d bytes of %s were lost",
            directory,
            e.strerror or e,
            len(body),
            signal,
        )
        return None
    _enforce_bound(directory, settings.spool_max_bytes, len(body))
    return final


# Per directory: (bytes in the spool as this process last counted them plus what it wrote since, writes since).
_sizes: dict[str, tuple[int, int]] = {}
_RESCAN_EVERY = 64  # other processes write too: count again now and then, not only when over


def _enforce_bound(directory: str, max_bytes: int, added: int) -> None:
    """Keep the spool under `max_bytes`, dropping the oldest files; scans the directory only when needed."""
    known = _sizes.get(directory)
    if known is not None:
        total, writes = known[0] + added, known[1] + 1
        if total <= max_bytes and writes < _RESCAN_EVERY:
            _sizes[directory] = (total, writes)
            return
    files = _spool_files(directory)
    sizes = []
    for _, path in files:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            sizes.append(0)
    total = sum(sizes)
    dropped = 0
    for (_, path), size in zip(files, sizes, strict=True):
        if total <= max_bytes:
            break
        try:
            os.unlink(path)
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


def flush(settings: Settings, count_spans: bool = False) -> FlushReport:
    """Resend every spooled file, oldest first; stop at the first endpoint that does not answer.

    One flusher per spool at a time (a non-blocking `flock` on `<spool>/.lock`): when another process holds it,
    returns at once with `busy` set, so the same file is never sent twice at once.
    """
    report = FlushReport()
    directory = settings.spool_dir
    try:
        lock_fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return report  # no spool, nothing to send
    except OSError as e:
        report.errors.append(f"cannot lock the spool {directory}: {e.strerror or e}")
        return report
    try:
        import fcntl

        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.busy = True
            return report
        _flush_locked(settings, directory, count_spans, report)
    finally:
        os.close(lock_fd)  # releases the lock
    return report


def _flush_locked(settings: Settings, directory: str, count_spans: bool, report: FlushReport) -> None:
    _remove_stale_tmp(directory)
    down: set[str] = set()
    for _, path in _spool_files(directory):
        parsed = parse_name(os.path.basename(path))
        if parsed is None:
            continue
        signal, _, ext, gzipped = parsed
        url, headers, _, timeout = settings.target(signal)
        if url in down:
            report.kept_files += 1
            continue
        try:
            with open(path, "rb") as f:
                body = f.read()
        except FileNotFoundError:
            continue  # another process sent it meanwhile
        except OSError as e:
            report.errors.append(f"{path}: {e}")
            report.kept_files += 1
            continue
        status, detail = post(url, body, CONTENT_TYPES[ext], headers, timeout, gzipped)
        if 200 <= status < 300:
            report.sent_files += 1
            report.sent_bytes += len(body)
            if count_spans and signal == "traces":
                report.sent_spans += _count_spans(body, gzipped, ext)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                report.errors.append(f"sent but could not delete {path}: {e}")
        elif status == NO_ANSWER or status in RETRYABLE or status in ENDPOINT_PROBLEM:
            # Down, busy, or the URL or credentials are wrong: the rest for this endpoint waits for next time.
            down.add(url)
            report.kept_files += 1
            report.errors.append(describe_failure(url, status, detail))
        else:
            # Never accepted however often it is sent: set aside, not deleted, so nothing is silently lost.
            try:  # noqa: SIM105 - contextlib costs glia run's start-up
                os.rename(path, path + REJECTED)
            except OSError:
                pass
            report.rejected_files += 1
            name = os.path.basename(path)
            report.errors.append(f"{name}: {describe_failure(url, status, detail)}; kept as .rejected")


def retry_rejected(directory: str) -> int:
    """Put every `.rejected` file back in line to be sent; returns how many."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    count = 0
    for entry in entries:
        if entry.name.endswith(REJECTED) and parse_name(entry.name[: -len(REJECTED)]) is not None:
            try:
                os.rename(entry.path, entry.path[: -len(REJECTED)])
                count += 1
            except OSError:
                continue
    return count


def _remove_stale_tmp(directory: str) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if entry.name.endswith(".tmp"):
            try:
                if now - entry.stat().st_mtime > _STALE_TMP_S:
                    os.unlink(entry.path)
            except OSError:
                pass


def has_files(settings: Settings) -> bool:
    """Whether there is anything to resend (stops at the first spool file)."""
    try:
        with os.scandir(settings.spool_dir) as entries:
            return any(parse_name(entry.name) is not None for entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


def start_background_flush(settings: Settings) -> threading.Thread | None:
    """Resend the spool in a daemon thread (never delays the process's exit)."""
    try:
        if not has_files(settings):
            return None
    except OSError:
        return None
    import threading

    def run() -> None:
        try:
            report = flush(settings)
            if report.sent_files:
                get_logger().info("glia: resent %d spooled request(s)", report.sent_files)
        except Exception as e:  # pragma: no cover - a background thread must never raise
            warn_once("background-flush", "background resend of the spool failed: %s", e)

    thread = threading.Thread(target=run, name="glia-spool-flush", daemon=True)
    thread.start()
    return thread


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
    if args.retry_rejected:
        retry_rejected(settings.spool_dir)
    report = flush(settings, count_spans=True)
    if report.busy:
        if not args.quiet:
            print(f"glia flush: another flush of {settings.spool_dir} is running; it sends the files")
        return 0
    if not args.quiet or report.errors:
        print(
            f"glia flush: sent {report.sent_files} request(s), {report.sent_spans} span(s), "
            f"{report.sent_bytes} bytes to {settings.traces_endpoint}; "
            f"{report.kept_files} kept for later, {report.rejected_files} rejected "
            f"(spool: {settings.spool_dir})",
            file=sys.stderr if report.errors else sys.stdout,
        )
        for err in dict.fromkeys(report.errors):
            print(f"glia flush: {err}", file=sys.stderr)
    return 1 if report.kept_files or report.rejected_files else 0
