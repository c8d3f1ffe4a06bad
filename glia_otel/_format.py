"""How `glia runs` and `glia show` print runs: a table, CSV, JSON, Parquet, or one run as text.

One module for both ways of reading runs, the database (`receiver/query_cli.py`, with the server part) and the query
API over HTTP (`_query.py`, from a client-only install), so that both print the same bytes for the same runs. Stored
text is whatever a client sent, so every format escapes what a terminal or a spreadsheet would act on
(docs/querying.md, "In the terminal"). The standard library only: a compute node reads runs with the client alone;
Parquet, for analysts, needs pyarrow (the `parquet` extra), imported only when asked for.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

TABLE_COLUMNS = [
    ("run_id", "RUN ID"),
    ("started_at", "STARTED (UTC)"),
    ("program_name", "PROGRAM"),
    ("user_name", "USER"),
    ("host_name", "HOST"),
    ("status", "STATUS"),
    ("exit_code", "EXIT"),
    ("wall_seconds", "WALL"),
    ("cpu_percent", "CPU%"),
    ("peak_rss_bytes", "PEAK MEM"),
]
CSV_COLUMNS = [
    "run_id", "trace_id", "program_name", "run_name", "run_kind", "user_name", "host_name", "status", "exit_code",
    "started_at", "ended_at", "wall_seconds", "cpu_seconds", "cpu_percent", "peak_rss_bytes", "peak_rss_method",
    "tree_peak_bytes", "tree_peak_method", "oom_kills", "io_read_bytes", "io_write_bytes", "workflow_engine",
    "workflow_run_id", "workflow_name", "task_name", "task_attempt", "scheduler", "scheduler_job_id",
    "requested_memory_bytes", "requested_cpus", "requested_seconds", "script_path", "script_sha256", "attributes",
]  # fmt: skip

# Parquet column types by CSV column (the rest are text; attributes is its JSON text, as in CSV).
_PARQUET_INTS = frozenset({
    "exit_code", "peak_rss_bytes", "tree_peak_bytes", "oom_kills", "io_read_bytes", "io_write_bytes", "task_attempt",
    "requested_memory_bytes",
})  # fmt: skip
_PARQUET_FLOATS = frozenset({"wall_seconds", "cpu_seconds", "cpu_percent", "requested_cpus", "requested_seconds"})
_PARQUET_TIMES = frozenset({"started_at", "ended_at"})
PARQUET_INSTALL = "pip install 'glia[parquet]'"

# C0 controls, DEL, C1 controls, and the Unicode controls that reorder text or break lines (bidi marks, embeddings,
# overrides and isolates; line and paragraph separators): a terminal would act on them (ESC starts a sequence that
# can retitle the window, redraw the screen or make a link), or show stored text in another order than stored.
_BEYOND_C0 = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_TERMINAL_UNSAFE = re.compile(rf"[\x00-\x1f{_BEYOND_C0}]")
# A CSV cell may hold tabs, newlines and carriage returns (the writer quotes it); JSON text escapes C0 itself.
_CSV_UNSAFE = re.compile(rf"[\x00-\x08\x0b\x0c\x0e-\x1f{_BEYOND_C0}]")
_JSON_UNSAFE = re.compile(rf"[{_BEYOND_C0}]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What a spreadsheet reads as the start of a formula (OWASP's list for CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def terminal_safe(text: str) -> str:
    """`text` with each control character written as a visible escape (`\\x1b`, `\\n`, `\\u202e`), for the
    terminal: one line, shown in the order it is stored, nothing a terminal acts on."""
    return _TERMINAL_UNSAFE.sub(_visible, text)


def csv_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as the text it is: control characters escaped as for the terminal (newlines and
    tabs kept, the writer quotes them), and a `'` before text that starts with = + - @ tab or CR, which a spreadsheet
    would run as a formula. Anything but text (a negative exit code) is left as it is."""
    if not isinstance(value, str):
        return value
    text = _CSV_UNSAFE.sub(_visible, value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def json_safe(text: str) -> str:
    """JSON text with DEL, C1 and the bidi and line controls written as `\\u` escapes: the same document (JSON
    reads them back as the same characters), safe in a terminal. The encoder already escapes C0."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _plain(value: Any) -> Any:
    """`value` with what JSON cannot hold made into what it can: times as ISO 8601 text, a float that is not finite
    as null (JSON has no NaN: a reader would refuse the whole document)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _compact(value: Any, sort_keys: bool = False) -> str:
    return json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


def format_json(value: Any) -> str:
    """Indented JSON (times in ISO 8601), safe in a terminal (`json_safe`)."""
    return json_safe(json.dumps(_plain(value), ensure_ascii=False, indent=2))


def human_bytes(value: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_seconds(value: float | None) -> str:
    """3725.0 -> '1h02m05s'."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "started_at" and isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if key == "wall_seconds":
        return human_seconds(value)
    if key == "elapsed_seconds":  # a run not ended: how long it has run so far
        return human_seconds(value) + "+"
    if key == "cpu_percent":
        return f"{value:.0f}"
    if key == "peak_rss_bytes":
        return human_bytes(value)
    return terminal_safe(str(value))


def _shown(key: str, row: dict[str, Any]) -> tuple[str, Any]:
    """The value a table cell shows: a run not ended has no wall time yet but has run `elapsed_seconds` so far,
    and its memory so far is its last heartbeat's."""
    value = row.get(key)
    if value is None and row.get("ended_at") is None:
        if key == "wall_seconds" and row.get("elapsed_seconds") is not None:
            return "elapsed_seconds", row["elapsed_seconds"]
        if key == "peak_rss_bytes":
            return key, row.get("last_rss_bytes")
    return key, value


def follow(fetch: Callable[[], list[dict[str, Any]]], interval: float, title: str) -> int:
    """`glia runs --follow`: the table of `fetch()` again every `interval` seconds until Ctrl-C (then 0). On a
    terminal each table replaces the last; elsewhere they follow one another, each under its time."""
    import time

    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    try:
        while True:
            rows = fetch()
            stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
            table = format_table(rows) if rows else "no runs match"
            sys.stdout.write(f"{clear}{terminal_safe(title)}  {stamp}  ({len(rows)} runs; Ctrl-C stops)\n{table}\n")
            if not clear:
                sys.stdout.write("\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns for the terminal."""
    cells = [[title for _, title in TABLE_COLUMNS]]
    cells += [[_cell(*_shown(key, row)) for key, _ in TABLE_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    right = {"exit_code", "wall_seconds", "cpu_percent", "peak_rss_bytes"}
    lines = []
    for line in cells:
        parts = [
            text.rjust(width) if key in right else text.ljust(width)
            for (key, _), text, width in zip(TABLE_COLUMNS, line, widths, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with a header; attributes as a JSON object."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = []
        for key in CSV_COLUMNS:
            value = row.get(key)
            if key == "attributes":
                value = json_safe(_compact(value, sort_keys=True))
            elif isinstance(value, datetime):
                value = value.isoformat()
            values.append("" if value is None else csv_safe(value))
        writer.writerow(values)
    return out.getvalue()


class OutputError(ValueError):
    """Runs that cannot be written where asked (Parquet to a terminal, or without pyarrow): one line for the user."""


def format_parquet(rows: list[dict[str, Any]]) -> bytes:
    """A Parquet file of the CSV columns, typed (times as UTC microseconds, figures as int64 and float64), values
    as stored: Parquet is read by programs, not shown on a terminal. Needs pyarrow (OutputError without it)."""
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise OutputError(f"--format parquet needs pyarrow, which is not installed: {PARQUET_INSTALL}") from None

    def kind(key: str) -> Any:
        if key in _PARQUET_INTS:
            return pa.int64()
        if key in _PARQUET_FLOATS:
            return pa.float64()
        if key in _PARQUET_TIMES:
            return pa.timestamp("us", tz="UTC")
        return pa.string()

    def value(key: str, row: dict[str, Any]) -> Any:
        item = row.get(key)
        if key == "attributes":
            return _compact(item or {}, sort_keys=True)
        return None if isinstance(item, float) and not math.isfinite(item) else item

    schema = pa.schema([(key, kind(key)) for key in CSV_COLUMNS])
    table = pa.table({key: [value(key, row) for row in rows] for key in CSV_COLUMNS}, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def write_rows(rows: list[dict[str, Any]], fmt: str, output: str | None = None) -> None:
    """A page of runs as `fmt` (table, json, csv, parquet) into the file `output`, else on stdout; Parquet, being
    binary, is refused on a terminal."""
    data: str | bytes
    if fmt == "parquet":
        if output is None and sys.stdout.isatty():
            raise OutputError("--format parquet is binary: give --output FILE, or redirect stdout to a file")
        data = format_parquet(rows)
    elif fmt == "json":
        data = format_json(rows) + "\n"
    elif fmt == "csv":
        data = format_csv(rows)
    else:
        data = (format_table(rows) if rows else "no runs match") + "\n"
    if output is None:
        if isinstance(data, str):
            sys.stdout.write(data)
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return
    try:
        with open(output, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise OutputError(f"--output {terminal_safe(output)}: {terminal_safe(exc.strerror or str(exc))}") from None


def _outcome(run: dict[str, Any]) -> str:
    """A line's figures for a run below another: wall time and status, then the attempt, exit code and peak memory
    where the run has them (a workflow's task)."""
    parts = [human_seconds(run["wall_seconds"]), run["status"]]
    if run.get("task_attempt") is not None:
        parts.append(f"attempt {run['task_attempt']}")
    if run.get("exit_code") is not None:
        parts.append(f"exit {run['exit_code']}")
    if run.get("peak_rss_bytes") is not None:
        parts.append(f"peak {human_bytes(run['peak_rss_bytes'])}")
    return "  ".join(parts)


def format_run(run: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """A run as text: its columns, custom values, exceptions, child spans, a summary of its samples, and its log
    records (newest last)."""
    skip = {"attributes", "resource", "children", "children_truncated", "workflow_tasks", "workflow_tasks_truncated"}
    skip |= {"logs", "logs_truncated", "exceptions"}
    lines = [f"run {run['run_id']}  ({run['run_name']})"]
    for key, value in run.items():
        if key in skip or value is None or value == []:
            continue
        if key in ("peak_rss_bytes", "tree_peak_bytes", "io_read_bytes", "io_write_bytes", "requested_memory_bytes"):
            value = f"{value}  ({human_bytes(value)})"
        elif key in ("wall_seconds", "cpu_seconds", "cpu_user_seconds", "cpu_system_seconds", "requested_seconds"):
            value = f"{value:.3f}  ({human_seconds(value)})"
        elif isinstance(value, list):
            value = " ".join(map(str, value))
        lines.append(f"  {key:<20} {value}")
    if run.get("attributes"):
        lines.append("attributes:")
        lines += [f"  {k:<20} {_compact(v)}" for k, v in sorted(run["attributes"].items())]
    for exc in run.get("exceptions") or ():
        lines.append(f"exception: {': '.join(str(exc[k]) for k in ('type', 'message') if exc.get(k)) or '-'}")
        lines += [f"  {line}" for line in (exc.get("stacktrace") or "").splitlines()]
    if run.get("children"):
        more = ", more not shown" if run.get("children_truncated") else ""
        lines.append(f"child spans ({len(run['children'])}{more}):")
        for child in run["children"]:
            indent = "  " * child["depth"]
            lines.append(f"{indent}{child['name']}  {_outcome(child)}")
    if run.get("workflow_tasks"):
        more = ", more not shown" if run.get("workflow_tasks_truncated") else ""
        count = len(run["workflow_tasks"])
        lines.append(f"runs of workflow {run['workflow_run_id']} not below it ({count}{more}):")
        for task in run["workflow_tasks"]:
            lines.append(f"  {task['run_name']}  {_outcome(task)}  run {task['run_id']}")
    if metrics:
        lines.append("samples:")
        for series in metrics:
            values = [p["value"] for p in series["points"] if p["value"] is not None]
            label = series["name"] + (_compact(series["attributes"]) if series["attributes"] else "")
            shown = human_bytes(max(values)) if series["unit"] == "By" and values else max(values, default=None)
            lines.append(f"  {label:<40} {len(series['points'])} points, max {shown}")
    if run.get("logs"):
        more = ", older ones not shown" if run.get("logs_truncated") else ""
        lines.append(f"logs ({len(run['logs'])}, newest last{more}):")
        for record in run["logs"]:
            lines += _log_lines(record)
    return "\n".join(terminal_safe(line) for line in lines)


_SEVERITIES = ((21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG"), (1, "TRACE"))


def _log_lines(record: dict[str, Any]) -> list[str]:
    """One log record: its time and severity, then its body (a kept stderr tail: its lines below, indented)."""
    when = record.get("time")
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    shown = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(when, datetime) else "-"
    attributes = record.get("attributes") or {}
    body = record.get("body")
    text = "" if body is None else str(body)
    if attributes.get("log.iostream") == "stderr":
        cut = ", earlier ones not kept" if attributes.get("glia.stderr.truncated") else ""
        count = attributes.get("glia.stderr.lines", len(text.splitlines()))
        return [f"  {shown}  stderr, its last {count} lines{cut}:", *(f"    {line}" for line in text.split("\n"))]
    number = record.get("severity_number") or 0
    severity = record.get("severity_text") or next((name for low, name in _SEVERITIES if number >= low), "-")
    first, *rest = text.split("\n")
    return [f"  {shown}  {severity:<5}  {first}", *(f"    {line}" for line in rest)]
