"""The schema stays ready for Citus: the layout docs/deploy.md declares ("Past one PostgreSQL: Citus") holds in the
catalog of the migrated schema.

Citus needs a distributed table's distribution column in every primary key and unique index (of the table and of
each of its partitions), and refuses NULL in it. Every table of the schema is declared distributed (by a column),
reference or local; a table the documentation does not declare fails here. Citus itself is not installable in
this environment: this test reads the plain PostgreSQL catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.conftest import REPO
from tests.helpers import Sql

DEPLOY = REPO / "docs" / "deploy.md"
MARKER = "<!-- distribution layout: tests/integration/test_distribution_keys.py reads this table -->"
KINDS = ("distributed", "reference", "local")


@dataclass(frozen=True)
class Declared:
    table: str
    kind: str
    column: str | None
    why: str


def declared_layout() -> dict[str, Declared]:
    """The rows of the layout table under MARKER in docs/deploy.md."""
    text = DEPLOY.read_text()
    assert MARKER in text, f"docs/deploy.md has lost the marker of its distribution table: {MARKER}"
    rows: dict[str, Declared] = {}
    for line in text.split(MARKER, 1)[1].lstrip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        table, kind, column, why = (cell.strip() for cell in line.strip("|").split("|", 3))
        name, col = table.strip("`"), column.strip("`")
        assert kind in KINDS, f"{name}: {kind!r} is not one of {KINDS}"
        assert why, f"{name}: the table says nothing about why"
        rows[name] = Declared(name, kind, None if col == "-" else col, why)
    assert rows, "the distribution table under the marker has no rows"
    return rows


def schema_tables(sql: Sql) -> set[str]:
    """Tables of the schema that are not partitions of another (partitions follow their parent)."""
    rows = sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    return {r["relname"] for r in rows}


def unique_indexes(sql: Sql, table: str) -> list[dict[str, object]]:
    """Every unique index (primary keys included) of `table` and of each of its partitions, with its columns."""
    return sql(
        """
        SELECT c.relname AS on_table, i.relname AS index_name, x.indisprimary AS is_primary,
               array(SELECT a.attname FROM unnest(x.indkey) AS k(attnum)
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum)::text[] AS columns,
               x.indexprs IS NOT NULL AS has_expressions
        FROM pg_index x
        JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indisunique AND c.oid IN (SELECT relid FROM pg_partition_tree($1::regclass))
        ORDER BY 1, 2
        """,
        table,
    )


def test_every_table_of_the_schema_is_declared(sql: Sql) -> None:
    declared, actual = set(declared_layout()), schema_tables(sql)
    assert actual == declared, (
        f"tables missing from docs/deploy.md's distribution table: {sorted(actual - declared)}; "
        f"declared but not in the schema: {sorted(declared - actual)}"
    )


def test_spans_are_distributed_by_trace_id() -> None:
    """DESIGN: the span table is distributed by trace_id, so a run's tree lives on one shard."""
    spans = declared_layout()["spans"]
    assert (spans.kind, spans.column) == ("distributed", "trace_id")


@pytest.mark.parametrize("table", [t for t, d in declared_layout().items() if d.kind == "distributed"])
def test_every_unique_index_carries_the_distribution_column(sql: Sql, table: str) -> None:
    column = declared_layout()[table].column
    assert column, f"{table} is distributed but names no column"
    indexes = unique_indexes(sql, table)
    assert any(ix["is_primary"] and ix["on_table"] == table for ix in indexes), f"{table} has no primary key"
    without = [
        f"{ix['on_table']}.{ix['index_name']} {ix['columns']}"
        for ix in indexes
        if column not in ix["columns"] or ix["has_expressions"]
    ]
    assert without == [], f"unique indexes of {table} without {column}: {without}"
    (col,) = sql(
        "SELECT a.attnotnull, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a"
        " WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped",
        table,
        column,
    )
    assert col["attnotnull"], f"{table}.{column} may be NULL, which Citus refuses in a distribution column"


def test_metric_points_are_not_distributed_by_their_nullable_trace_id(sql: Sql) -> None:
    """Why the layout names another column for points: their trace id may be missing."""
    (trace_id,) = sql(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'metric_points'::regclass AND attname = 'trace_id'"
    )
    layout = declared_layout()["metric_points"]
    assert not trace_id["attnotnull"] and layout.column != "trace_id"
    assert re.search(r"\bNULL\b", layout.why), layout.why


def test_no_foreign_key_ties_a_distributed_table_to_anything_but_a_reference_table(sql: Sql) -> None:
    layout = declared_layout()
    keys = sql(
        "SELECT conrelid::regclass::text AS from_table, confrelid::regclass::text AS to_table FROM pg_constraint"
        " WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
    )
    for key in keys:
        source, target = layout[key["from_table"]].kind, layout[key["to_table"]].kind
        assert (source, target) in {("distributed", "reference"), ("reference", "reference"), ("local", "local")}, key
