"""`glia runs`, `glia show`, `glia keys` and `glia retention`: the same queries as the API, from the terminal.

They read PostgreSQL at `--database-url`, else `$GLIA_DATABASE_URL`, else the embedded default's database (started
for the command and stopped again when it was not running). `glia runs` and `glia show` run the API's own query
layer (`receiver/query.py`) under its limits, cancel their query on Ctrl-C and SIGTERM, and print stored text with
its control characters escaped: a span name is whatever a client sent, and a terminal or a spreadsheet would act on
it. They import no web framework (`tests/integration/test_receiver_cli_imports.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from .command_settings import CommandSettings, database, database_options
from .errors import GliaError, Interrupted

if TYPE_CHECKING:
    import asyncpg

    from .query import ReadLimits, RunQueries

T = TypeVar("T")

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
    "io_read_bytes", "io_write_bytes", "script_path", "script_sha256", "attributes",
]  # fmt: skip


# --- database -----------------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> CommandSettings:
    return CommandSettings.load(database_url=args.database_url, data_dir=args.data_dir)


def _run(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on a connection of the command's own (keys, retention), driver errors translated."""
    from .database import connect

    async def go() -> T:
        async with connect(url) as conn:
            return await work(conn)

    return asyncio.run(go())


def _read(url: str, limits: ReadLimits, work: Callable[[RunQueries], Awaitable[T]]) -> T:
    """Run `work` in a read transaction (the API's statement timeout); SIGINT or SIGTERM cancels it.

    Cancelling the task makes asyncpg send PostgreSQL a cancel request, so the query stops on the server too
    instead of running on after the command is gone; on PostgreSQL 14 and newer the session also checks that
    its client is alive (`query.reading`), which covers a kill -9.
    """
    from .database import connect
    from .query import reading

    async def go() -> T:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        received: list[int] = []

        def stop(signum: int) -> None:
            if not received:  # a second signal must not interrupt the cancel and the rollback
                main.cancel()
            received.append(signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        # the client-side bound behind the server's: also caps the rollback and close after a cancel
        command_timeout = limits.statement_timeout_ms / 1000 + 5 if limits.statement_timeout_ms else None
        try:
            async with (
                connect(url, read_timeout_ms=limits.statement_timeout_ms, command_timeout=command_timeout) as conn,
                reading(conn, limits) as runs,
            ):
                return await work(runs)
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0], signal.Signals(received[0]).name) from None
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    return asyncio.run(go())


def _main(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except Interrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (GliaError, OSError, ValueError) as exc:
        print(f"{prog}: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1


# --- formatting ---------------------------------------------------------------------------------------------------

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
    if key == "cpu_percent":
        return f"{value:.0f}"
    if key == "peak_rss_bytes":
        return human_bytes(value)
    return terminal_safe(str(value))


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns for the terminal."""
    cells = [[title for _, title in TABLE_COLUMNS]]
    cells += [[_cell(key, row.get(key)) for key, _ in TABLE_COLUMNS] for row in rows]
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
                value = json_safe(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
            elif isinstance(value, datetime):
                value = value.isoformat()
            values.append("" if value is None else csv_safe(value))
        writer.writerow(values)
    return out.getvalue()


def _json(value: Any) -> str:
    return json_safe(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


# --- glia runs / glia show ----------------------------------------------------------------------------------------


def runs_main(argv: list[str]) -> int:
    """List runs, newest first: a table in the terminal, or JSON or CSV."""
    from .query import MAX_LIMIT, RunFilter, Sort, parse_attrs, parse_when

    parser = argparse.ArgumentParser(prog="glia runs", description=runs_main.__doc__)
    parser.add_argument("--program", "--service", dest="program", help="service.name of the runs")
    parser.add_argument("--user", help="process.owner")
    parser.add_argument("--host", help="host.name")
    parser.add_argument("--status", choices=["ok", "error", "unset"])
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--since", help="started at or after: ISO 8601 time or an age (7d, 12h, 30m, 2w)")
    parser.add_argument("--until", help="started before: ISO 8601 time or an age")
    parser.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE", help="custom value (repeatable)")
    parser.add_argument("--sha256", dest="script_sha256", help="the script's sha256")
    parser.add_argument("--sort", choices=[s.value for s in Sort], default=Sort.NEWEST.value)
    parser.add_argument("--limit", type=int, default=50, help=f"runs per page (1-{MAX_LIMIT}, default 50)")
    parser.add_argument("--cursor", help="the next-page cursor printed by the previous call")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
    database_options(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= MAX_LIMIT:
        parser.error(f"--limit must be between 1 and {MAX_LIMIT}")

    def body() -> int:
        from .query import ReadLimits

        flt = RunFilter(
            program=args.program,
            user=args.user,
            host=args.host,
            status=args.status,
            exit_code=args.exit_code,
            since=parse_when(args.since, "--since") if args.since else None,
            until=parse_when(args.until, "--until") if args.until else None,
            attrs=parse_attrs(args.attr),
            script_sha256=args.script_sha256,
        )
        settings = _settings(args)
        limits = ReadLimits.from_settings(settings)
        with database(settings, migrate=True) as url:
            rows, cursor = _read(
                url, limits, lambda runs: runs.list_runs(flt, Sort(args.sort), args.limit, args.cursor)
            )
        if args.format == "json":
            print(_json(rows))
        elif args.format == "csv":
            sys.stdout.write(format_csv(rows))
        else:
            print(format_table(rows) if rows else "no runs match")
        if cursor:
            print(f"more: glia runs ... --cursor {cursor}", file=sys.stderr)
        return 0

    return _main("glia runs", body)


def format_run(run: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """A run as text: its columns, custom values, child spans and a summary of its samples."""
    skip = {"attributes", "resource", "children", "children_truncated"}
    lines = [f"run {run['run_id']}  ({run['run_name']})"]
    for key, value in run.items():
        if key in skip or value is None or value == []:
            continue
        if key in ("peak_rss_bytes", "io_read_bytes", "io_write_bytes"):
            value = f"{value}  ({human_bytes(value)})"
        elif key in ("wall_seconds", "cpu_seconds", "cpu_user_seconds", "cpu_system_seconds"):
            value = f"{value:.3f}  ({human_seconds(value)})"
        elif isinstance(value, list):
            value = " ".join(map(str, value))
        lines.append(f"  {key:<20} {value}")
    if run.get("attributes"):
        lines.append("attributes:")
        lines += [f"  {k:<20} {orjson.dumps(v).decode()}" for k, v in sorted(run["attributes"].items())]
    if run.get("children"):
        more = ", more not shown" if run.get("children_truncated") else ""
        lines.append(f"child spans ({len(run['children'])}{more}):")
        for child in run["children"]:
            indent = "  " * child["depth"]
            lines.append(f"{indent}{child['name']}  {human_seconds(child['wall_seconds'])}  {child['status']}")
    if metrics:
        lines.append("samples:")
        for series in metrics:
            values = [p["value"] for p in series["points"] if p["value"] is not None]
            label = series["name"] + (orjson.dumps(series["attributes"]).decode() if series["attributes"] else "")
            shown = human_bytes(max(values)) if series["unit"] == "By" and values else max(values, default=None)
            lines.append(f"  {label:<40} {len(series['points'])} points, max {shown}")
    return "\n".join(terminal_safe(line) for line in lines)


def show_main(argv: list[str]) -> int:
    """Show one run: every column, its custom values, its child spans and its samples."""
    from .query import RUN_ID_PATTERN

    parser = argparse.ArgumentParser(prog="glia show", description=show_main.__doc__)
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id (16 hex digits, from 'glia runs')")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    database_options(parser)
    args = parser.parse_args(argv)
    if not re.match(RUN_ID_PATTERN, args.run_id):
        parser.error(f"{args.run_id!r} is not a run id: 16 hex digits, as 'glia runs' shows them")

    def body() -> int:
        from .query import ReadLimits

        settings = _settings(args)
        limits = ReadLimits.from_settings(settings)

        async def fetch(runs: RunQueries) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            run = await runs.get_run(args.run_id)
            if run is None:
                return None, []
            run["children"], run["children_truncated"] = await runs.run_children(run)
            metrics, _ = await runs.run_metrics(run)
            return run, metrics

        with database(settings, migrate=True) as url:
            run, metrics = _read(url, limits, fetch)
        if run is None:
            print(f"glia show: no run with id {args.run_id}", file=sys.stderr)
            return 1
        if args.format == "json":
            print(_json({**run, "metrics": metrics}))
        else:
            print(format_run(run, metrics))
        return 0

    return _main("glia show", body)


# --- glia keys ----------------------------------------------------------------------------------------------------


def keys_main(argv: list[str]) -> int:
    """Manage API keys. Once a key exists, ingest needs an ingest key and the query API and page a read key."""
    from . import auth

    parser = argparse.ArgumentParser(prog="glia keys", description=keys_main.__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key and print its secret (shown once)")
    create.add_argument("name")
    create.add_argument("--scope", choices=auth.SCOPES, default="ingest")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = sub.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("key", metavar="NAME_OR_ID")
    for p in (create, listing, revoke):
        database_options(p)
    args = parser.parse_args(argv)

    def body() -> int:
        with database(_settings(args), migrate=True) as url:
            if args.action == "create":
                secret, row = _run(url, lambda conn: auth.create_key(conn, args.name, args.scope))
                print(secret)
                print(
                    f"created {row['scope']} key {row['name']!r} (id {row['key_id']}); the secret above is not stored"
                    " and is shown only now",
                    file=sys.stderr,
                )
                if row["scope"] == "ingest":
                    print(f"  clients: OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer {secret}'", file=sys.stderr)
                return 0
            if args.action == "list":
                rows = _run(url, lambda conn: auth.list_keys(conn, args.all))
                if not rows:
                    print("no API keys: the receiver is open to anyone who can connect")
                    return 0
                print(f"{'ID':>4}  {'NAME':<24} {'SCOPE':<7} {'PREFIX':<12} {'CREATED':<20} REVOKED")
                for r in rows:
                    revoked = r["revoked_at"].strftime("%Y-%m-%d %H:%M:%S") if r["revoked_at"] else "-"
                    print(
                        f"{r['key_id']:>4}  {r['name']:<24} {r['scope']:<7} {r['key_prefix'] + '...':<12}"
                        f" {r['created_at'].strftime('%Y-%m-%d %H:%M:%S'):<20} {revoked}"
                    )
                return 0
            revoked_rows = _run(url, lambda conn: auth.revoke_key(conn, args.key))
            if not revoked_rows:
                print(f"glia keys: no active key named or numbered {args.key!r}", file=sys.stderr)
                return 1
            for r in revoked_rows:
                print(f"revoked {r['scope']} key {r['name']!r} (id {r['key_id']}); receivers drop it within seconds")
            return 0

    return _main("glia keys", body)


# --- glia retention -----------------------------------------------------------------------------------------------


def retention_main(argv: list[str]) -> int:
    """Drop whole monthly partitions older than a cut-off now, or store the policy receivers apply daily."""
    from . import retention

    parser = argparse.ArgumentParser(prog="glia retention", description=retention_main.__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--older-than", metavar="AGE", help="drop partitions that ended more than AGE ago (90d, 6m)")
    what.add_argument("--set-policy", metavar="AGE", help="store the policy: keep AGE, applied daily by the receiver")
    what.add_argument("--show-policy", action="store_true", help="print the stored policy")
    what.add_argument("--clear-policy", action="store_true", help="remove the stored policy")
    parser.add_argument("--archive", type=Path, metavar="DIR", help="write each partition to DIR/NAME.csv.gz first")
    parser.add_argument("--dry-run", action="store_true", help="only list what --older-than would drop")
    database_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with database(_settings(args), migrate=True) as url:
            if args.older_than:
                days = retention.parse_age(args.older_than)
                archive = args.archive.resolve() if args.archive else None
                dropped = _run(url, lambda conn: retention.apply(conn, days, archive, dry_run=args.dry_run))
                verb = "would drop" if args.dry_run else "dropped"
                for d in dropped:
                    where = f"  -> {d.archive} ({d.rows} rows)" if d.archive else ""
                    print(f"{verb} {d.partition}  ({d.range_start.date()} to {d.range_end.date()}){where}")
                if not dropped:
                    print(f"nothing to drop: no partition ended more than {days} days ago")
                return 0
            if args.set_policy:
                days = retention.parse_age(args.set_policy)
                archive = args.archive.resolve() if args.archive else None
                _run(url, lambda conn: retention.set_policy(conn, days, archive))
                where = f", archiving to {archive} first" if archive else ""
                print(f"retention policy: keep {days} days{where}; receivers apply it once a day")
                return 0
            if args.clear_policy:
                _run(url, retention.clear_policy)
                print("retention policy removed: nothing is dropped")
                return 0
            policy = _run(url, retention.get_policy)
            if policy is None:
                print("no retention policy: runs are kept forever")
            else:
                print(_json(policy))
            return 0

    return _main("glia retention", body)
