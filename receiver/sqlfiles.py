"""The loader of the receiver's SQL files: `sql/<module>.sql` holds the named queries that `<module>.py` runs, each
under a `-- name: ...` header, read once per process (`schema.sql` is the canonical schema, not queries).

`tests/integration/test_sql_files.py` prepares every named query against the migrated schema.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"


def parse(text: str) -> dict[str, str]:
    """Split a queries file into {name: sql}; comment lines inside a query are kept out."""
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        sql = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--")).strip()
        if name.strip() in queries:
            raise ValueError(f"query {name.strip()!r} is defined twice")
        queries[name.strip()] = sql
    return queries


@cache
def load(filename: str) -> dict[str, str]:
    """The named queries of one file in `sql/` (`load("store.sql")["insert_spans"]`)."""
    return parse((SQL_DIR / filename).read_text())
