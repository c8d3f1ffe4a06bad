"""Alembic environment: runs the revisions over one asyncpg connection, inside one transaction."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _url() -> str:
    url = (
        context.config.get_main_option("sqlalchemy.url")
        or context.get_x_argument(as_dictionary=True).get("database_url")
        or os.environ.get("GLIA_DATABASE_URL")
    )
    if not url:
        raise SystemExit("no database URL: set GLIA_DATABASE_URL or pass -x database_url=...")
    scheme, sep, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}" if sep and scheme in ("postgres", "postgresql") else url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the revisions are plain SQL files in migrations/sql/")
asyncio.run(_main())
