"""`glia serve` and `glia migrate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import logs
from .errors import GliaError
from .settings import Settings

log = logging.getLogger("glia.serve")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in Settings.model_fields
    }
    return Settings(**overrides)


def database_options(parser: argparse.ArgumentParser) -> None:
    """Add --database-url and --data-dir, which every command that opens the database takes."""
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: $GLIA_DATABASE_URL, else the embedded PostgreSQL in --data-dir)",
    )
    parser.add_argument("--data-dir", type=Path, help="where the embedded PostgreSQL keeps its data")


@contextlib.contextmanager
def database(settings: Settings, *, migrate: bool) -> Iterator[str]:
    """The database URL for a command: the configured one, or the embedded PostgreSQL.

    An embedded PostgreSQL that was not running is started for the command and stopped after it; with `migrate`,
    its schema is brought to head first.
    """
    if settings.database_url:
        yield settings.database_url
        return
    from .embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir)
    was_running = embedded.running()
    url = embedded.start()
    try:
        if migrate:
            from .migrate import upgrade

            upgrade(url)
        yield url
    finally:
        if not was_running:
            embedded.stop()


def _embedded_url(settings: Settings) -> tuple[Any, str]:
    from .embedded import EmbeddedPostgres
    from .migrate import upgrade

    embedded = EmbeddedPostgres(settings.data_dir)
    url = embedded.start()
    upgrade(url)
    return embedded, url


def serve_main(argv: list[str]) -> int:
    """Run the receiver until Ctrl-C; with no database URL, on an embedded PostgreSQL."""
    parser = argparse.ArgumentParser(prog="glia serve", description=serve_main.__doc__)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 4318, the OTLP/HTTP port)")
    database_options(parser)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    settings = _settings(args)
    logs.setup(settings.log_level)

    import uvicorn

    from .app import create_app
    from .migrate import head_revision
    from .store import wait_for_database

    embedded = None
    try:
        if settings.database_url:
            url = settings.database_url
            asyncio.run(wait_for_database(url, settings.connect_timeout))
            asyncio.run(_check_schema(url, head_revision()))
        else:
            embedded, url = _embedded_url(settings)
        _banner(settings, url, embedded is not None)
        config = uvicorn.Config(
            create_app(settings, url),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        # uvicorn re-raises the SIGINT or SIGTERM it handled once the server has shut down; both must reach the
        # `finally` below, which stops the embedded PostgreSQL
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        return 0 if server.started else 1
    except (GliaError, OSError) as exc:
        log.error("%s", exc)
        print(f"glia serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded PostgreSQL stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _check_schema(url: str, head: str) -> None:
    from .store import Store, check_schema, create_pool

    pool = await create_pool(url, min_size=0, max_size=1, statement_timeout_ms=10_000)
    try:
        await check_schema(Store(pool, acquire_timeout=10), head)
    finally:
        await pool.close()


def _banner(settings: Settings, url: str, embedded: bool) -> None:
    where = "embedded PostgreSQL" if embedded else "PostgreSQL"
    lines = [
        f"Glia receiver: http://{settings.host}:{settings.port}  (OTLP/HTTP: /v1/traces, /v1/metrics)",
        f"{where}: {url}",
        f"  see your runs:  psql '{url}' -c 'SELECT * FROM runs ORDER BY started_at DESC LIMIT 20'",
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
    except (GliaError, OSError) as exc:
        print(f"glia migrate: {exc}", file=sys.stderr)
        return 1
