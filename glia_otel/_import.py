"""`glia import ENGINE [OPTIONS] FILE...`: what a workflow engine wrote about past runs, recorded as runs.

An engine plugs in with one entry in `ENGINES` (its name -> an `Engine`: a function returning its reader, the
peak-memory method its figures come from, one line of help). A reader turns one file into `ImportedRun`s:

    def read(path: str, options: ImportOptions) -> list[ImportedRun]

It raises `ImportProblem` for a file it cannot read at all (the message names the file and says why) and lists
the rows it skipped in `ImportedRun.skipped`. Everything else is shared and lives here: the options, the ids, the
spans and their resources, the sending and the report.

- Ids are derived from what the file holds, never random: the trace id from (engine, the run's id), a task's span
  id from (engine, the run's id, the task's `key`), so a second import of the same file stores nothing new (the
  receiver's primary key is (trace_id, span_id, start_time) and it inserts with ON CONFLICT DO NOTHING). They live
  in a namespace of their own (`glia import`), so an import never collides with what glia recorded live.
- Every run gets one workflow span (glia.run.kind "workflow", from its first task's start to its last task's end,
  status unset: a file of tasks does not say how the run ended) and every task is its child (glia.run.kind "task",
  glia.workflow.* on each, so tasks still group by workflow_run_id where the workflow span is missing).
- Spans go through the client's usual path: the OTLP endpoint and headers of OTEL_EXPORTER_OTLP_* (so keys and a
  collector apply), in requests of at most `BATCH_SPANS` spans, each kept in the spool when it cannot be delivered
  (resent by the next glia process or `glia flush`), like a run's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

USAGE = """usage: glia import ENGINE [OPTIONS] FILE [FILE...]

Record the runs a workflow engine's own files describe, as Glia runs: one workflow run per file and each task
in it as its child. Imported twice, a file is stored once (its ids are derived from what it holds).

engines:
{engines}

options:
  --run-id ID        the workflow run's id (glia.workflow.run_id) when the file does not say it; default: one
                     derived from the file's content (stable when the file only grows)
  --run-name NAME    the workflow's name (glia.workflow.name); default: the engine's, else the file's name
  --timezone TZ      the zone of the file's local times (e.g. Europe/Paris; default: this machine's)
  -h, --help         show this help

Runs go to the OTLP endpoint of OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318) with the headers of
OTEL_EXPORTER_OTLP_HEADERS, and to the spool when it cannot take them (resent by `glia flush`).
"""

BATCH_SPANS = 1000
_NAMESPACE = "glia import"


class ImportProblem(Exception):
    """A file that cannot be imported at all; the message says which and why."""


@dataclass
class ImportOptions:
    """What the user said about the files, for every engine."""

    run_id: str | None = None
    run_name: str | None = None
    timezone: tzinfo | None = None  # None: this machine's local zone


@dataclass
class ImportedTask:
    """One task attempt as the file describes it."""

    key: tuple[str, ...]  # what identifies the attempt within its run (e.g. the task hash and attempt): its span id
    name: str  # the span's name: the engine's task label (`align (S3)`)
    program: str  # service.name, the runs view's program_name: the process / rule
    start_ns: int
    end_ns: int
    failed: bool = False
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)  # glia.task.*, glia.memory.*, glia.<engine>.*, ...
    resource: dict[str, Any] = field(default_factory=dict)  # e.g. host.name when the file names the host


@dataclass
class ImportedRun:
    """One workflow run and its task attempts, as read from one file."""

    run_id: str  # glia.workflow.run_id
    name: str  # glia.workflow.name
    tasks: list[ImportedTask]
    program: str = ""  # the workflow span's service.name (default: the engine's name)
    attributes: dict[str, Any] = field(default_factory=dict)  # extra attributes of the workflow span
    skipped: list[str] = field(default_factory=list)  # one line per row left out, and why


Reader = Callable[[str, ImportOptions], list[ImportedRun]]


@dataclass(frozen=True)
class Engine:
    """One engine `glia import` knows: how to get its reader (imported only when used), and what it reads."""

    reader: Callable[[], Reader]
    peak_rss_method: str  # glia.memory.peak_rss_method of its rows: how the engine measured the peak
    help: str


def _nextflow() -> Reader:
    from ._import_nextflow import read

    return read


def _snakemake() -> Reader:
    from ._import_snakemake import read

    return read


# The engines, by the name on the command line. A new engine: a module with `read` and one entry here.
ENGINES: dict[str, Engine] = {
    "nextflow": Engine(_nextflow, "nextflow-poll", "Nextflow trace files (-with-trace; any trace.fields, raw or not)"),
    "snakemake": Engine(_snakemake, "snakemake-benchmark", "Snakemake benchmark: files (TSV or JSONL)"),
}


class UsageError(Exception):
    """Bad `glia import` arguments."""


def parse_args(argv: Sequence[str]) -> tuple[str, ImportOptions, list[str]]:
    """(engine, options, files) from `glia import`'s arguments; `UsageError("")` for --help."""
    options = ImportOptions()
    files: list[str] = []
    engine: str | None = None
    args = list(argv)
    i = 0
    only_files = False
    while i < len(args):
        arg = args[i]
        if only_files or not arg.startswith("-") or arg == "-":
            if engine is None:
                engine = arg
            else:
                files.append(arg)
        elif arg == "--":
            only_files = True
        elif arg in ("-h", "--help"):
            raise UsageError("")
        else:
            name, eq, value = arg.partition("=")
            if name not in ("--run-id", "--run-name", "--timezone"):
                raise UsageError(f"unknown option {arg!r}")
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{name} needs a value")
                i += 1
                value = args[i]
            if name == "--run-id":
                if not value.strip():
                    raise UsageError("--run-id needs a value")
                options.run_id = value
            elif name == "--run-name":
                options.run_name = value
            else:
                options.timezone = _zone(value)
        i += 1
    if engine is None:
        raise UsageError("no engine given")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r} (known: {', '.join(sorted(ENGINES))})")
    if not files:
        raise UsageError("no file given")
    return engine, options, files


def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone {name!r}: not a time zone this machine knows") from None


def _id(bits: int, *parts: str) -> int:
    """A non-zero id of `bits` bits from the sha256 of `parts` (joined with NUL, which no part holds)."""
    from hashlib import sha256

    digest = sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def trace_id(engine: str, run_id: str) -> int:
    """The trace id of an imported run: every span of the run shares it."""
    return _id(128, _NAMESPACE, engine, run_id)


def workflow_span_id(engine: str, run_id: str) -> int:
    """The span id of an imported run's workflow span."""
    return _id(64, _NAMESPACE, engine, run_id, "workflow")


def task_span_id(engine: str, run_id: str, key: Sequence[str]) -> int:
    """The span id of an imported task attempt."""
    return _id(64, _NAMESPACE, engine, run_id, "task", *key)


def build_request_groups(
    engine: str, run: ImportedRun, source: str, extra_resource: Mapping[str, str]
) -> list[tuple[dict[str, Any], list[Any]]]:
    """(resource, spans) groups for one run: its workflow span, then its tasks grouped by resource."""
    from ._otlp import SpanData

    method = ENGINES[engine].peak_rss_method
    tid = trace_id(engine, run.run_id)
    parent = workflow_span_id(engine, run.run_id)
    common = {
        "glia.workflow.engine": engine,
        "glia.workflow.run_id": run.run_id,
        "glia.workflow.name": run.name,
        "glia.import.source": source,
    }
    groups: dict[tuple[tuple[str, Any], ...], list[Any]] = {}
    seen: set[int] = set()
    for task in run.tasks:
        sid = task_span_id(engine, run.run_id, task.key)
        if sid in seen:
            continue  # the same attempt twice in one file: stored once anyway, sent once
        seen.add(sid)
        attrs: dict[str, Any] = {**task.attributes, **common, "glia.run.kind": "task"}
        attrs.setdefault("glia.task.name", task.name)
        if "glia.memory.peak_rss_bytes" in attrs:
            attrs.setdefault("glia.memory.peak_rss_method", method)
        resource = {**extra_resource, **task.resource, "service.name": task.program or engine}
        span = SpanData(
            trace_id=tid,
            span_id=sid,
            name=task.name,
            start_ns=task.start_ns,
            end_ns=max(task.end_ns, task.start_ns),
            parent_span_id=parent,
            attributes=attrs,
            status_code=2 if task.failed else 0,
            status_message=task.status_message if task.failed else "",
            flags=0x301,
        )
        groups.setdefault(tuple(sorted(resource.items())), []).append(span)
    tasks = [s for spans in groups.values() for s in spans]
    start = min((s.start_ns for s in tasks), default=0)
    end = max((s.end_ns for s in tasks), default=0)
    failed = sum(1 for t in run.tasks if t.failed)
    workflow_attrs: dict[str, Any] = {
        **run.attributes,
        **common,
        "glia.run.kind": "workflow",
        "glia.import.tasks": len(tasks),
        "glia.import.failed_tasks": failed,
    }
    workflow = SpanData(
        trace_id=tid,
        span_id=parent,
        name=run.name,
        start_ns=start,
        end_ns=end,
        attributes=workflow_attrs,
    )
    workflow_resource = {**extra_resource, "service.name": run.program or engine}
    out: list[tuple[dict[str, Any], list[Any]]] = [(workflow_resource, [workflow])]
    out += [(dict(key), spans) for key, spans in groups.items()]
    return out


def encode_batches(groups: list[tuple[dict[str, Any], list[Any]]], batch: int = BATCH_SPANS) -> list[bytes]:
    """OTLP request bodies of at most `batch` spans each, in the order given."""
    from ._otlp import encode_request
    from ._version import __version__

    bodies: list[bytes] = []
    current: list[tuple[dict[str, Any], str, str, list[Any]]] = []
    count = 0
    for resource, spans in groups:
        for i in range(0, len(spans), batch):
            chunk = spans[i : i + batch]
            if count and count + len(chunk) > batch:
                bodies.append(encode_request(current))
                current, count = [], 0
            current.append((resource, "glia_otel.import", __version__, chunk))
            count += len(chunk)
    if current:
        bodies.append(encode_request(current))
    return bodies


def import_files(engine: str, options: ImportOptions, files: Sequence[str], settings: Any) -> int:
    """Read, send and report each file; returns the exit code (0: every file read and every request handed over)."""
    from ._deliver import send

    reader = ENGINES[engine].reader()
    code = 0
    for path in files:
        source = os.path.abspath(path)
        try:
            runs = reader(path, options)
        except ImportProblem as e:
            print(f"glia import: {e}", file=sys.stderr)
            code = 1
            continue
        except OSError as e:
            print(f"glia import: {path}: {e.strerror or e}", file=sys.stderr)
            code = 1
            continue
        for run in runs:
            for line in run.skipped:
                print(f"glia import: {path}: skipped {line}", file=sys.stderr)
            groups = build_request_groups(engine, run, source, settings.resource_attributes)
            delivered = [send(settings, "traces", body) for body in encode_batches(groups)]
            count = sum(len(spans) for _, spans in groups) - 1
            where = "sent" if all(delivered) else f"kept in the spool {settings.spool_dir} (resent by glia flush)"
            print(f"glia import: {path}: {count} task(s) of run {run.run_id} ({run.name}): {where}")
    return code


def main(argv: list[str]) -> int:
    """`glia import`: import files of past runs; exits 0 when every file was read and handed over."""
    try:
        engine, options, files = parse_args(argv)
    except UsageError as e:
        engines = "\n".join(f"  {name:<18} {entry.help}" for name, entry in ENGINES.items())
        text = USAGE.format(engines=engines)
        if str(e):
            print(f"glia import: {e}\n\n{text}", file=sys.stderr)
            return 2
        print(text)
        return 0

    from ._config import load_settings

    try:
        settings = load_settings()
    except ValueError as e:
        print(f"glia import: {e}", file=sys.stderr)
        return 2
    if settings.disabled:
        print("glia import: glia is disabled (OTEL_SDK_DISABLED or GLIA_DISABLED): nothing imported", file=sys.stderr)
        return 0
    return import_files(engine, options, files, settings)
