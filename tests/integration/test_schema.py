"""The migrations and the canonical schema.sql describe the same database, and migrations go down and up again."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from receiver.migrate import MIGRATIONS_DIR, downgrade, head_revision, upgrade
from tests.conftest import REPO, PgServer, run_sql
from tests.helpers import fresh_database

# A description of everything the schema makes, independent of the order it was made in.
CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'alembic_version'
          AND c.relkind IN ('r', 'p', 'v', 'm')
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'alembic_version' ORDER BY 1, 2""",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) AS def
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname <> 'alembic_version' ORDER BY 1, 2""",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, p.prosrc
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "partitions": """
        SELECT parent.relname AS parent, child.relname AS child, pg_get_expr(child.relpartbound, child.oid) AS bound
        FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent
        JOIN pg_class child ON child.oid = i.inhrelid
        WHERE parent.relkind = 'p' ORDER BY 1, 2""",
    "tables": """
        SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND c.relname <> 'alembic_version'
        ORDER BY 1""",
}


def describe(url: str) -> dict[str, list[dict[str, Any]]]:
    return {name: run_sql(url, query) for name, query in CATALOG_QUERIES.items()}


def apply_sql_file(url: str, path: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((REPO / path).read_text())
        finally:
            await conn.close()

    asyncio.run(go())


def test_migrations_produce_the_canonical_schema(pg_server: PgServer) -> None:
    migrated = fresh_database(pg_server, "schema_by_migrations")
    canonical = fresh_database(pg_server, "schema_by_schema_sql")
    upgrade(migrated)
    apply_sql_file(canonical, "receiver/sql/schema.sql")
    got, want = describe(migrated), describe(canonical)
    for part in CATALOG_QUERIES:
        assert got[part] == want[part], f"{part} differ between migrations/ and receiver/sql/schema.sql"
    assert got["tables"], "the schema made no tables"


def test_upgrade_downgrade_upgrade(pg_server: PgServer) -> None:
    url = fresh_database(pg_server, "schema_round_trip")
    upgrade(url)
    first = describe(url)
    assert run_sql(url, "SELECT version_num FROM alembic_version") == [{"version_num": head_revision()}]
    downgrade(url, "base")
    assert describe(url)["tables"] == []
    assert run_sql(url, "SELECT count(*) AS n FROM alembic_version") == [{"n": 0}]
    upgrade(url)
    assert describe(url) == first


def test_every_revision_has_its_sql_files() -> None:
    for revision in (MIGRATIONS_DIR / "versions").glob("*.py"):
        name = revision.stem
        assert (MIGRATIONS_DIR / "sql" / f"{name}.up.sql").exists(), name
        assert (MIGRATIONS_DIR / "sql" / f"{name}.down.sql").exists(), name
