"""Every named query in `receiver/sql/*.sql` is prepared against the migrated schema, so a typo, a renamed column
or a parameter of the wrong type fails here rather than in the first request that runs it."""

from __future__ import annotations

import asyncio
import string

import asyncpg

from receiver import query, sqlfiles, store

# Queries with `{...}` fields: each is prepared with every text the code formats into it.
FORMATTED = {
    "list_runs": [query.list_runs_sql(sort) for sort in query.Sort],
    # quote_partition's answer for a name from glia_partitions(); the parent table takes the same lock
    "lock_partition": [sqlfiles.load("retention.sql")["lock_partition"].format(partition="spans")],
    # each table's name and flatten's columns for it
    "create_row_type": [table.create_row_type for table in store._tables()],
    "insert_rows": [table.insert_rows for table in store._tables()],
}


def named_queries() -> dict[tuple[str, str], list[str]]:
    """(file, name) -> the statements to prepare, for every named query of every SQL file but the schema."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(sqlfiles.SQL_DIR.glob("*.sql")):
        if path.name == "schema.sql":
            continue
        for name, sql in sqlfiles.load(path.name).items():
            # named fields only: `{}` in a query is a JSON path or an empty object, not a field
            fields = [f for _, f, _, _ in string.Formatter().parse(sql) if f]
            if fields:
                assert name in FORMATTED, f"{path.name}: {name} has format fields {fields}: add its texts here"
                found[(path.name, name)] = FORMATTED[name]
            else:
                found[(path.name, name)] = [sql]
    return found


def test_every_named_query_prepares_against_the_schema(database_url: str) -> None:
    queries = named_queries()
    assert len({file for file, _ in queries}) >= 4 and len(queries) >= 25

    async def go() -> list[str]:
        conn = await asyncpg.connect(database_url)
        failed = []
        try:
            # the ingest queries read the per-connection staging tables and row types
            await store.prepare_connection(conn)
            for (file, name), statements in queries.items():
                for sql in statements:
                    try:
                        await conn.prepare(sql)
                    except asyncpg.PostgresError as exc:
                        failed.append(f"{file}: {name}: {type(exc).__name__}: {exc}")
        finally:
            await conn.close()
        return failed

    assert asyncio.run(go()) == []
