"""`glia serve` and `glia migrate`: the server commands (the read commands are query_cli.py's)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shlex
import signal
import sys
from typing import Any

from . import logs
from .command_settings import database, database_options
from .dburl import check, masked, redact
from .errors import GliaError
from .settings import Settings

log = logging.getLogger("glia.serve")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        key: value for key, value in vars(args).items() if value is not None and key in Settings.model_fields
    }
    return Settings(**overrides)


def _open_external(settings: Settings, url: str) -> None:
    from .database import wait_for_database
    from .migrate import head_revision

    check(url)
    try:
        asyncio.run(wait_for_database(url, settings.connect_timeout))
    except Exception as exc:  # whatever the driver says, the user needs the (masked) URL next to it
        raise GliaError(f"cannot reach PostgreSQL at {masked(url)}: {str(exc) or type(exc).__name__}") from exc
    asyncio.run(_check_schema(url, head_revision()))


def _open_embedded(settings: Settings, stack: contextlib.ExitStack) -> tuple[Any, str]:
    """Own the data directory's embedded PostgreSQL for the life of `stack`: started, migrated, stopped at the end."""
    from .embedded import EmbeddedPostgres, adopt_orphans
    from .migrate import upgrade

    adopt_orphans()  # the postmaster pg_ctl leaves behind is then ours to reap, and to restart when it dies
    embedded = EmbeddedPostgres(settings.data_dir)
    stack.enter_context(contextlib.closing(embedded.lock_for_serve(f"http://{settings.host}:{settings.port}")))
    url = stack.enter_context(embedded.use(stop_when_done=True))
    upgrade(url)
    return embedded, url


def serve_main(argv: list[str]) -> int:
    """Run the receiver until Ctrl-C; with no database URL, on an embedded PostgreSQL."""
    parser = argparse.ArgumentParser(prog="glia serve", description=serve_main.__doc__)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 4318, the OTLP/HTTP port)")
    database_options(parser)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--workers", type=int, help="receiver processes on the one port (default 1; one a core for large ingest)"
    )
    args = parser.parse_args(argv)
    settings = _settings(args)
    logs.setup(settings.log_level)

    import uvicorn

    from .app import create_app
    from .server import config as server_config

    # what serve holds (the data directory's lock, its PostgreSQL, the watch on it), released in reverse order
    stack = contextlib.ExitStack()
    given_up: list[str] = []
    try:
        embedded = None
        url = settings.database_url
        if url:
            _open_external(settings, url)
        else:
            embedded, url = _open_embedded(settings, stack)
        _banner(settings, url, embedded is not None, from_option=args.database_url is not None)
        config = server_config(create_app(settings, url), settings)
        server = uvicorn.Server(config)
        if embedded is not None:

            def give_up(reason: str) -> None:
                given_up.append(reason)
                if settings.workers > 1:
                    os.kill(os.getpid(), signal.SIGTERM)  # wakes the supervising main thread, which stops them
                server.should_exit = True

            stack.callback(embedded.supervise(settings.embedded_restarts, give_up).stop)
        # uvicorn re-raises the SIGINT or SIGTERM it handled once the server has shut down; both must reach the
        # `finally` below, which stops the embedded PostgreSQL
        signal.signal(signal.SIGTERM, _interrupt)
        # What is alive now (the modules, the application) lives as long as the process: out of the collector's
        # sight, it is not traversed again by every full collection the requests' garbage sets off (about 8% of
        # the CPU of one-span requests, docs/benchmarks.md), and forked workers share it unwritten.
        gc.collect()
        gc.freeze()
        if settings.workers > 1:
            from .workers import Workers

            workers = Workers(config, settings.workers)
            code = workers.run(config.bind_socket())
            if given_up or workers.failed:
                print(f"glia serve: {given_up[0] if given_up else workers.failed}", file=sys.stderr)
                return 1
            return code
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if given_up:
            print(f"glia serve: {given_up[0]}", file=sys.stderr)
            return 1
        return 0 if server.started else 1
    except (GliaError, OSError, ValueError) as exc:
        message = redact(str(exc), settings.database_url)
        log.error("%s", message)
        print(f"glia serve: {message}", file=sys.stderr)
        return 1
    finally:
        stack.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _check_schema(url: str, head: str) -> None:
    from .database import Database, check_schema, create_pool

    pool = await create_pool(url, max_size=1, statement_timeout_ms=10_000)
    try:
        await check_schema(Database(pool, acquire_timeout=10), head)
    finally:
        await pool.close()


def _banner(settings: Settings, url: str, embedded: bool, *, from_option: bool) -> None:
    # The password never reaches the terminal or a container log: the banner says where the full URL is instead.
    shown = masked(url)
    if embedded:
        where = f"embedded PostgreSQL: {shown}  (full URL in {settings.data_dir / 'database-url'}, mode 0600)"
        psql_url = f'"$(cat {shlex.quote(str(settings.data_dir / "database-url"))})"'
    elif shown == url:
        where, psql_url = f"PostgreSQL: {url}", shlex.quote(url)
    elif from_option:
        where, psql_url = f"PostgreSQL: {shown}  (full URL: the --database-url you gave)", '"<your --database-url>"'
    else:
        where, psql_url = f"PostgreSQL: {shown}  (full URL in $GLIA_DATABASE_URL)", '"$GLIA_DATABASE_URL"'
    lines = [
        f"Glia receiver: http://{settings.host}:{settings.port}  (OTLP/HTTP: /v1/traces, /v1/metrics)",
        where,
        f"  see your runs:  psql {psql_url} -c 'SELECT * FROM runs ORDER BY started_at DESC LIMIT 20'",
        f"  send runs:      OTEL_EXPORTER_OTLP_ENDPOINT=http://{settings.host}:{settings.port}",
    ]
    if embedded:
        lines.append(f"  data directory: {settings.data_dir}  (Ctrl-C stops the receiver and PostgreSQL)")
    print("\n".join(lines), flush=True)


def migrate_main(argv: list[str]) -> int:
    """Bring the database schema to the newest revision (or to --revision, or down with --downgrade)."""
    parser = argparse.ArgumentParser(prog="glia migrate", description=migrate_main.__doc__)
    database_options(parser)
    parser.add_argument("--revision", default="head", help="revision to upgrade to (default: head)")
    parser.add_argument("--downgrade", metavar="REVISION", help="roll back to REVISION ('base' removes everything)")
    args = parser.parse_args(argv)
    settings = _settings(args)
    logs.setup(settings.log_level)

    from .migrate import downgrade, upgrade

    try:
        with database(settings, migrate=False) as url:
            if args.downgrade:
                downgrade(url, args.downgrade)
                print(f"glia migrate: downgraded to {args.downgrade}")
            else:
                upgrade(url, args.revision)
                print(f"glia migrate: database is at {args.revision}")
        return 0
    except (GliaError, OSError, ValueError) as exc:
        print(f"glia migrate: {redact(str(exc), settings.database_url)}", file=sys.stderr)
        return 1
