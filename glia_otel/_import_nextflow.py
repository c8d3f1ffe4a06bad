"""Nextflow trace files (`-with-trace`, `trace.fields`) -> `ImportedRun`s for `glia import nextflow`.

A trace file is one header line of field names and one line per finished task attempt, in the order they finished,
separated by `trace.sep` (a tab by default). Any set of Nextflow's fields may be there, each either formatted
(`10.1 MB`, `2m 3s`, `12.5%`, `2024-05-01 10:00:00.123` in the run's local time) or raw (`trace.raw`, or a field
written `name:num`: bytes, milliseconds, epoch milliseconds); `-` is a missing value. Both forms are read.

What Nextflow's figures are: `peak_rss` is the largest sum over the task's process tree of each process's VmHWM,
polled by the task wrapper at 1 s, then 5 s, then 30 s intervals, so a task shorter than a poll reads as little
more than its shell; it goes to glia.memory.peak_rss_bytes with the method `nextflow-poll`. Every figure is also
kept as Nextflow wrote it under glia.nextflow.* (memory in bytes), beside what the typed columns hold.

Rows left out: CACHED tasks (the run that executed them recorded them; import that run's trace) and rows without
any time (no submit, start or complete). The `env` and `script` fields are not recorded (they may hold secrets).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from ._import import ImportedRun, ImportedTask, ImportOptions, ImportProblem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import tzinfo
    from typing import Any

# Nextflow 24.10's trace fields and their types (nextflow.trace.TraceRecord.FIELDS).
FIELDS: dict[str, str] = {
    "task_id": "str",
    "hash": "str",
    "native_id": "str",
    "process": "str",
    "module": "str",
    "container": "str",
    "tag": "str",
    "name": "str",
    "status": "str",
    "exit": "str",
    "submit": "date",
    "start": "date",
    "complete": "date",
    "duration": "time",
    "realtime": "time",
    "%cpu": "perc",
    "%mem": "perc",
    "rss": "mem",
    "vmem": "mem",
    "peak_rss": "mem",
    "peak_vmem": "mem",
    "rchar": "mem",
    "wchar": "mem",
    "syscr": "num",
    "syscw": "num",
    "read_bytes": "mem",
    "write_bytes": "mem",
    "attempt": "num",
    "workdir": "str",
    "script": "str",
    "scratch": "str",
    "queue": "str",
    "cpus": "num",
    "memory": "mem",
    "disk": "mem",
    "time": "time",
    "env": "str",
    "error_action": "str",
    "vol_ctxt": "num",
    "inv_ctxt": "num",
    "hostname": "str",
    "cpu_model": "str",
}
_NOT_RECORDED = frozenset({"env", "script"})
# Bag names of the fields whose name is not a good attribute key.
_BAG_NAMES = {"%cpu": "cpu_percent", "%mem": "mem_percent"}
_SEPARATORS = ("\t", ",", ";", "|")
_MEMORY_UNITS = {"B": 0, "KB": 1, "MB": 2, "GB": 3, "TB": 4, "PB": 5, "EB": 6, "ZB": 7}
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]*)?)\s*([KMGTPEZ]?B?)$", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)\s*([a-zA-Z]+)\s*")
_DURATION_UNITS_MS = {
    **dict.fromkeys(("ms", "milli", "millis"), 1),
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1000),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}
_LEGACY_DURATION = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2})$")
_NUMBER = re.compile(r"^-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?$")


def missing(text: str) -> bool:
    """Nextflow writes `-` for a value it does not have."""
    return text.strip() in ("", "-")


def parse_memory(text: str) -> int | None:
    """`10.1 MB` (Nextflow's MemoryUnit: powers of 1024), `0`, or raw bytes -> bytes; None if missing."""
    t = text.strip()
    if missing(t):
        return None
    m = _MEMORY.match(t)
    if m is None:
        raise ValueError(f"not a memory value: {text!r}")
    unit = m.group(2).upper()
    if unit and not unit.endswith("B"):
        unit += "B"
    return round(float(m.group(1)) * float(1024 ** _MEMORY_UNITS[unit or "B"]))


def parse_duration_ms(text: str) -> float | None:
    """`2m 3s`, `1.5s`, `150ms`, `1d 2h`, `01:02:03`, or raw milliseconds -> milliseconds; None if missing."""
    t = text.strip()
    if missing(t):
        return None
    if _NUMBER.match(t):
        return float(t)
    legacy = _LEGACY_DURATION.match(t)
    if legacy:
        h, m, s = (int(g) for g in legacy.groups())
        return float((h * 3600 + m * 60 + s) * 1000)
    total, pos = 0.0, 0
    for part in _DURATION_PART.finditer(t):
        if part.start() != pos or part.group(2) not in _DURATION_UNITS_MS:
            raise ValueError(f"not a duration: {text!r}")
        total += float(part.group(1)) * _DURATION_UNITS_MS[part.group(2)]
        pos = part.end()
    if pos != len(t) or pos == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def parse_percent(text: str) -> float | None:
    """`12.5%` or `12.5` -> 12.5; None if missing."""
    t = text.strip().removesuffix("%").strip()
    if missing(t):
        return None
    return float(t)


def parse_date_ns(text: str, zone: tzinfo | None) -> int | None:
    """`2024-05-01 10:00:00.123` (the run's local time, in `zone`; None: this machine's) or raw epoch milliseconds
    -> epoch nanoseconds; None if missing."""
    t = text.strip()
    if missing(t):
        return None
    if t.isdigit():
        return int(t) * 1_000_000
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            naive = datetime.strptime(t, fmt)
        except ValueError:
            continue
        local = naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()
        utc = local.astimezone(UTC)
        return (int(utc.replace(microsecond=0).timestamp()) * 1_000_000 + utc.microsecond) * 1000
    raise ValueError(f"not a date: {text!r}")


def parse_number(text: str) -> int | float | None:
    """An integer or a decimal number; None if missing."""
    t = text.strip()
    if missing(t):
        return None
    if not _NUMBER.match(t):
        raise ValueError(f"not a number: {text!r}")
    value = float(t)
    return int(value) if value.is_integer() and "." not in t and "e" not in t.lower() else value


def _split_header(line: str) -> tuple[str, list[str]]:
    """(separator, field names) of a header line; ImportProblem if it names no Nextflow trace field."""
    best: tuple[int, str, list[str]] | None = None
    for sep in _SEPARATORS:
        names = [n.strip() for n in line.split(sep)]
        known = sum(1 for n in names if n in FIELDS)
        if known == len(names) and (best is None or known > best[0]):
            best = (known, sep, names)
    if best is None:
        unknown = [n for n in re.split(r"[\t,;|]", line) if n.strip() and n.strip() not in FIELDS]
        raise ImportProblem(f"not a Nextflow trace file: the header names unknown fields {unknown[:5]}")
    return best[1], best[2]


def _run_key(header: str, first_row: str) -> str:
    """A run id from the file itself: the header and the first executed row, which stay the same as the file grows
    (rows are appended as tasks finish)."""
    from hashlib import sha256

    return "trace-" + sha256(f"{header}\n{first_row}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def read(path: str, options: ImportOptions) -> list[ImportedRun]:
    """The run one trace file describes (one file, one run)."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise ImportProblem(f"{path}: empty file")
    header = lines[0]
    sep, names = _split_header(header)
    tasks: list[ImportedTask] = []
    skipped: list[str] = []
    cached = 0
    first_row: str | None = None
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(sep)
        if len(cells) != len(names):
            skipped.append(f"line {number}: {len(cells)} values for {len(names)} fields")
            continue
        row = dict(zip(names, cells, strict=True))
        if row.get("status", "").strip() == "CACHED":
            cached += 1
            continue
        if first_row is None:
            first_row = line
        try:
            task = _task(row, number, options.timezone)
        except ValueError as e:
            skipped.append(f"line {number}: {e}")
            continue
        if task is None:
            skipped.append(f"line {number}: no time (none of submit, start, complete)")
            continue
        tasks.append(task)
    if cached:
        skipped.append(f"{cached} cached task(s): the run that executed them recorded them (import its trace)")
    if first_row is None:
        what = "only cached tasks" if cached else "only a header"
        raise ImportProblem(f"{path}: no task that ran in this run to import ({what})")
    run_id = options.run_id or _run_key(header, first_row)
    name = options.run_name or os.path.splitext(os.path.basename(path))[0]
    attributes: dict[str, Any] = {"glia.nextflow.trace_fields": names}
    return [ImportedRun(run_id, name, tasks, program="nextflow", attributes=attributes, skipped=skipped)]


def _task(row: dict[str, str], number: int, zone: tzinfo | None) -> ImportedTask | None:
    """One row -> an ImportedTask; None when it holds no time; ValueError for a value that cannot be read."""
    values: dict[str, Any] = {}
    for name, text in row.items():
        if name in _NOT_RECORDED or missing(text):
            continue
        kind = FIELDS[name]
        try:
            if kind == "mem":
                values[name] = parse_memory(text)
            elif kind == "time":
                values[name] = parse_duration_ms(text)
            elif kind == "perc":
                values[name] = parse_percent(text)
            elif kind == "date":
                values[name] = parse_date_ns(text, zone)
            elif kind == "num":
                values[name] = parse_number(text)
            else:
                values[name] = text.strip()
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

    start, end = _times(values)
    if start is None or end is None:
        return None

    process = str(values.get("process") or "")
    name = str(values.get("name") or "")
    if not name:
        tag = values.get("tag")
        name = f"{process} ({tag})" if process and tag else process or f"task {values.get('task_id', number)}"
    if not process:
        process = name.split(" (", 1)[0]
    attempt = values.get("attempt")
    full_hash = _hash_of(values)
    if full_hash:
        key: tuple[str, ...] = ("hash", full_hash, str(attempt or ""))
    elif values.get("task_id"):
        key = ("task_id", str(values["task_id"]), str(attempt or ""))
    else:
        key = ("row", str(number), name)

    attrs: dict[str, Any] = {"glia.task.name": name}
    if isinstance(attempt, int):
        attrs["glia.task.attempt"] = attempt
    try:
        exit_code = parse_number(values["exit"]) if "exit" in values else None
    except ValueError:
        exit_code = None
    if isinstance(exit_code, int):
        attrs["process.exit.code"] = exit_code
    if values.get("cpus") is not None:
        attrs["glia.requested.cpus"] = float(values["cpus"])
    if values.get("memory") is not None:
        attrs["glia.requested.memory_bytes"] = values["memory"]
    if values.get("time") is not None:
        attrs["glia.requested.seconds"] = values["time"] / 1000.0
    if values.get("peak_rss") is not None:
        attrs["glia.memory.peak_rss_bytes"] = values["peak_rss"]
    if values.get("%cpu") is not None:
        attrs["glia.cpu.percent"] = float(values["%cpu"])
    if values.get("read_bytes") is not None:
        attrs["glia.io.read_bytes"] = values["read_bytes"]
    if values.get("write_bytes") is not None:
        attrs["glia.io.write_bytes"] = values["write_bytes"]
    if full_hash:
        attrs["glia.nextflow.hash"] = full_hash
    attrs["glia.nextflow.process"] = process
    # Everything as Nextflow gave it, beside the typed columns: memory in bytes, times in seconds.
    for field, value in values.items():
        if value is None or field in ("hash", "process", "name", "exit"):
            continue
        kind = FIELDS[field]
        bag = _BAG_NAMES.get(field, field)
        if kind == "mem":
            attrs[f"glia.nextflow.{bag}_bytes"] = value
        elif kind == "time":
            attrs[f"glia.nextflow.{bag}_seconds"] = value / 1000.0
        elif kind == "date":
            attrs[f"glia.nextflow.{bag}_unix_nano"] = value
        else:
            attrs[f"glia.nextflow.{bag}"] = value
    if "hash" in values:
        attrs["glia.nextflow.hash_short"] = values["hash"]

    status = str(values.get("status", ""))
    # An exit code may be valid for the process (validExitStatus): the status says, where the file has it.
    failed = status in ("FAILED", "ABORTED") if status else isinstance(exit_code, int) and exit_code != 0
    message = ""
    if failed:
        message = f"Nextflow: {status or 'failed'}" + (f", exit code {exit_code}" if exit_code is not None else "")
    resource: dict[str, Any] = {}
    if values.get("hostname"):
        resource["host.name"] = values["hostname"]
    return ImportedTask(key, name, process, start, end, failed, message, attrs, resource)


def _times(values: dict[str, Any]) -> tuple[int | None, int | None]:
    """(start, end) in epoch ns from submit/start/complete/realtime/duration, whichever the row has."""
    submit, start, complete = values.get("submit"), values.get("start"), values.get("complete")
    realtime, duration = values.get("realtime"), values.get("duration")
    begin = start if start is not None else submit
    end = complete
    if begin is None and end is not None:
        span = realtime if realtime is not None else duration
        begin = end - int(span * 1_000_000) if span is not None else end
    if end is None and begin is not None:
        # from start, the run time; from submit, the time to completion (else the run time: the best there is)
        span = realtime if start is not None else duration
        if span is None:
            span = realtime if realtime is not None else duration
        end = begin + int(span * 1_000_000) if span is not None else begin
    return begin, end


def _hash_of(values: dict[str, Any]) -> str:
    """The task's full hash (the work directory's last two parts), else the trace's short one (`ab/cdef12`)."""
    workdir = str(values.get("workdir") or "").rstrip("/")
    parts = workdir.split("/")
    if len(parts) >= 2 and len(parts[-2]) == 2 and len(parts[-1]) >= 6:
        candidate = parts[-2] + parts[-1]
        if all(c in "0123456789abcdef" for c in candidate):
            return candidate
    return str(values.get("hash") or "").replace("/", "")
