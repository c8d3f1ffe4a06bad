"""Revision 0005 adds the partitioned `log_records` table and moves the partition functions onto one list of
partitioned tables: the upgrade makes log_records' partitions ahead, retention sees and drops them, spans and
metric_points keep theirs; the way back drops log_records with its partitions and leaves the two older tables as
they were."""

from __future__ import annotations

from receiver.migrate import downgrade, upgrade
from tests.conftest import PgServer, run_sql
from tests.helpers import fresh_database


def _parents(url: str) -> dict[str, int]:
    rows = run_sql(url, "SELECT parent, count(*) AS n FROM glia_partitions() GROUP BY parent")
    return {r["parent"]: r["n"] for r in rows}


def test_0005_adds_log_records_to_every_partition_function_and_goes_back(pg_server: PgServer) -> None:
    url = fresh_database(pg_server, "migrate_log_records")
    upgrade(url, "0004_workflow_scheduler")
    before = _parents(url)
    assert set(before) == {"spans", "metric_points"}
    upgrade(url, "0005_log_records")
    after = _parents(url)
    # this month and the two ahead, as the older tables have
    assert after == {**before, "log_records": 3}
    assert run_sql(url, "SELECT glia_partitioned_tables() AS t") == [{"t": ["spans", "metric_points", "log_records"]}]
    # a partition of the new table is one retention may drop; nothing else is
    (part,) = run_sql(
        url, "SELECT partition FROM glia_partitions() WHERE parent = 'log_records' ORDER BY range_start DESC LIMIT 1"
    )
    run_sql(url, "SELECT glia_drop_partition($1::regclass)", part["partition"])
    assert _parents(url)["log_records"] == 2
    run_sql(url, "SELECT glia_ensure_partitions_ahead(2)")
    assert _parents(url)["log_records"] == 3
    downgrade(url, "0004_workflow_scheduler")
    assert run_sql(url, "SELECT to_regclass('log_records') IS NULL AS gone") == [{"gone": True}]
    assert run_sql(url, "SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'log_records%'") == [{"n": 0}]
    assert _parents(url) == before
    run_sql(url, "SELECT glia_ensure_partitions_ahead(2)")
    assert set(_parents(url)) == {"spans", "metric_points"}
