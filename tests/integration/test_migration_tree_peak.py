"""Revision 0003 moves existing rows' memory figures to their new names, so old and new rows compare.

Before it, `glia run` stored the tree's figure (a cgroup's or a sampled peak) in `peak_rss_bytes` and its child's
`wait4` figure in the attribute bag as `glia.memory.child_max_rss_bytes`; after it, `peak_rss_bytes` is the largest
process's figure and `tree_peak_bytes` the tree's.
"""

from __future__ import annotations

import json
from typing import Any

from receiver.migrate import downgrade, upgrade
from tests.conftest import PgServer, run_sql
from tests.helpers import fresh_database

MIB = 1024 * 1024

# (span id, run kind, peak_rss_bytes, peak_rss_method, bag) as the client before revision 0003 sent them
OLD_ROWS: list[tuple[str, str, int, str, dict[str, Any]]] = [
    ("00000000000000c1", "command", 300 * MIB, "cgroup", {"glia.memory.child_max_rss_bytes": 110 * MIB, "x": 1}),
    ("00000000000000c2", "command", 250 * MIB, "sampled-tree", {"glia.memory.child_max_rss_bytes": 90 * MIB}),
    ("00000000000000c3", "command", 8 * MIB, "wait4", {"glia.memory.child_max_rss_bytes": 8 * MIB}),
    # not a whole number: left where it is rather than failing the migration
    ("00000000000000c4", "command", 5 * MIB, "cgroup", {"glia.memory.child_max_rss_bytes": "lots"}),
    ("00000000000000b1", "block", 200 * MIB, "hwm-reset", {"glia.memory.start_rss_bytes": 20 * MIB}),
]


def _insert_old_rows(url: str) -> None:
    for span_id, kind, peak, method, bag in OLD_ROWS:
        run_sql(
            url,
            "INSERT INTO spans (trace_id, span_id, start_time, name, end_time, start_time_unix_nano, duration_ns,"
            " run_kind, peak_rss_bytes, peak_rss_method, attributes)"
            " VALUES ($1, $2, now(), 'job', now(), 0, 1, $3, $4, $5, $6::jsonb)",
            "0" * 31 + "1",
            span_id,
            kind,
            peak,
            method,
            json.dumps(bag),
        )


def _rows(url: str, columns: str) -> dict[str, dict[str, Any]]:
    rows = run_sql(url, f"SELECT span_id, {columns}, attributes FROM spans")
    out = {}
    for row in rows:
        row["attributes"] = json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]
        out[row.pop("span_id")] = row
    return out


def test_0003_moves_figures_and_back(pg_server: PgServer) -> None:
    url = fresh_database(pg_server, "migrate_tree_peak")
    upgrade(url, "0002_api_keys_retention")
    _insert_old_rows(url)
    upgrade(url, "0003_tree_peak")

    rows = _rows(url, "peak_rss_bytes, peak_rss_method, tree_peak_bytes, tree_peak_method, oom_kills")
    assert rows["00000000000000c1"] == {
        "peak_rss_bytes": 110 * MIB,
        "peak_rss_method": "wait4-python",
        "tree_peak_bytes": 300 * MIB,
        "tree_peak_method": "cgroup",
        "oom_kills": None,
        "attributes": {"x": 1},
    }
    assert rows["00000000000000c2"]["tree_peak_method"] == "sampled-tree"
    assert rows["00000000000000c2"]["peak_rss_bytes"] == 90 * MIB
    # an old run over before its first sample had one figure, the forked child's
    assert rows["00000000000000c3"]["peak_rss_bytes"] == 8 * MIB
    assert rows["00000000000000c3"]["tree_peak_bytes"] == 8 * MIB
    assert rows["00000000000000c3"]["tree_peak_method"] == "wait4-python"
    assert rows["00000000000000c4"]["peak_rss_bytes"] == 5 * MIB and rows["00000000000000c4"]["tree_peak_bytes"] is None
    assert rows["00000000000000b1"]["peak_rss_bytes"] == 200 * MIB
    assert rows["00000000000000b1"]["tree_peak_bytes"] is None
    # the view shows both figures under their names
    (view,) = run_sql(
        url, "SELECT max_rss_kb, tree_peak_bytes, tree_peak_method FROM runs WHERE run_id = $1", "00000000000000c1"
    )
    assert view == {"max_rss_kb": 110 * 1024, "tree_peak_bytes": 300 * MIB, "tree_peak_method": "cgroup"}

    downgrade(url, "0002_api_keys_retention")
    back = _rows(url, "peak_rss_bytes, peak_rss_method")
    for span_id, _, peak, method, bag in OLD_ROWS:
        assert back[span_id] == {"peak_rss_bytes": peak, "peak_rss_method": method, "attributes": bag}, span_id
