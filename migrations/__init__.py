"""Glia's schema migrations: thin Alembic revisions around versioned plain-SQL files in `sql/`."""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"


def run_sql_file(name: str) -> None:
    """Execute one versioned SQL file (several statements, function bodies included) in the migration."""
    from alembic import op

    sql = (SQL_DIR / name).read_text()
    # asyncpg runs a multi-statement script only through its simple-query path, not a prepared statement.
    raw = op.get_bind().connection.dbapi_connection
    raw.run_async(lambda conn: conn.execute(sql))  # type: ignore[union-attr]
