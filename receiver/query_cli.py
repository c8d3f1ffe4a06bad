"""`glia runs`, `glia show`, `glia keys` and `glia retention`: the same queries as the API, from the terminal.

They read PostgreSQL at `--database-url`, else `$GLIA_DATABASE_URL`, else the embedded default's database (started
for the command and stopped again when it was not running). `glia runs` and `glia show` run the API's own query
layer (`receiver/query.py`) under its limits, cancel their query on Ctrl-C and SIGTERM, and print stored text with
its control characters escaped: a span name is whatever a client sent, and a terminal or a spreadsheet would act on
it. They import no web framework (`tests/integration/test_receiver_cli_imports.py`). The
formatting is the client's (`glia_otel/_format.py`), shared with `glia runs` / `glia show` over the query API.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from glia_otel._format import follow, format_run, terminal_safe, write_rows
from glia_otel._format import format_json as _json

from .command_settings import CommandSettings, database, database_options
from .errors import GliaError, Interrupted

if TYPE_CHECKING:
    import asyncpg

    from .query import ReadLimits, RunQueries

T = TypeVar("T")


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


# --- glia runs / glia show ----------------------------------------------------------------------------------------


def runs_main(argv: list[str]) -> int:
    """List runs, newest first: a table in the terminal, or JSON, CSV or Parquet."""
    from glia_otel._query import add_follow_options, check_follow

    from .query import MAX_LIMIT, STATUSES, RunFilter, Sort, parse_attrs, parse_when

    parser = argparse.ArgumentParser(prog="glia runs", description=runs_main.__doc__)
    parser.add_argument("--program", "--service", dest="program", help="service.name of the runs")
    parser.add_argument("--user", help="process.owner")
    parser.add_argument("--host", help="host.name")
    parser.add_argument("--name", help="the run name (glia run --name, the block's name)")
    parser.add_argument(
        "--status", choices=STATUSES, help="running (not ended), lost (its heartbeats stopped), error, ok"
    )
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--since", help="started at or after: ISO 8601 time or an age (7d, 12h, 30m, 2w)")
    parser.add_argument("--until", help="started before: ISO 8601 time or an age")
    parser.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE", help="custom value (repeatable)")
    parser.add_argument("--sha256", dest="script_sha256", help="the script's sha256")
    parser.add_argument(
        "--workflow",
        metavar="ID",
        help="a workflow's runs: the engine's workflow run id, or the workflow span's run id",
    )
    parser.add_argument("--sort", choices=[s.value for s in Sort], default=Sort.NEWEST.value)
    parser.add_argument("--limit", type=int, default=50, help=f"runs per page (1-{MAX_LIMIT}, default 50)")
    parser.add_argument("--cursor", help="the next-page cursor printed by the previous call")
    parser.add_argument("--format", choices=["table", "json", "csv", "parquet"], default="table")
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout (parquet: not a terminal)")
    add_follow_options(parser)
    database_options(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= MAX_LIMIT:
        parser.error(f"--limit must be between 1 and {MAX_LIMIT}")
    if args.workflow is not None and not args.workflow.strip():
        parser.error("--workflow needs an id: the engine's workflow run id, or the workflow span's run id")
    check_follow(parser, args)

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
            workflow=args.workflow,
            name=args.name,
        )
        settings = _settings(args)
        limits = ReadLimits.from_settings(settings)
        with database(settings, migrate=True) as url:

            def fetch() -> tuple[list[dict[str, Any]], str | None]:
                return _read(url, limits, lambda runs: runs.list_runs(flt, Sort(args.sort), args.limit, args.cursor))

            if args.follow:
                return follow(lambda: fetch()[0], args.interval, f"glia runs --status {args.status}")
            rows, cursor = fetch()
        write_rows(rows, args.format, args.output)
        if cursor:
            print(f"more: glia runs ... --cursor {cursor}", file=sys.stderr)
        return 0

    return _main("glia runs", body)


def show_main(argv: list[str]) -> int:
    """Show one run: every column, its custom values, its exceptions, its child spans, its samples and its logs."""
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
        from .run_logs import add_logs

        settings = _settings(args)
        limits = ReadLimits.from_settings(settings)

        async def fetch(runs: RunQueries) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            run = await runs.get_run(args.run_id)
            if run is None:
                return None, []
            await runs.run_tree(run)
            await add_logs(runs, run)
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
