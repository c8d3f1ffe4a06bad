"""Retention and partition upkeep of log records, as for spans: whole monthly partitions of `log_records` older than
the cut-off are archived and dropped with those of spans, newer ones kept; a late record for a dropped month makes
its partition again."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from glia_otel._cli import main
from tests.conftest import ReceiverServer
from tests.helpers import PB, Sql, post

DAY_NS = 86_400 * 10**9


def post_records(receiver: ReceiverServer, *ages_days: int) -> None:
    """One record per age, `age` days before now, its body `age-<days>`."""
    now = datetime.now(UTC)
    request = ExportLogsServiceRequest()
    sl = request.resource_logs.add().scope_logs.add()
    for age in ages_days:
        r = sl.log_records.add()
        r.time_unix_nano = int((now - timedelta(days=age)).timestamp() * 1e9)
        r.body.string_value = f"age-{age}"
    response = post(receiver, request.SerializeToString(), PB, path="/v1/logs")
    assert response.status_code == 200 and not response.content, response.content


def bodies(sql: Sql) -> list[str]:
    return sorted(json.loads(r["body"]) for r in sql("SELECT body FROM log_records"))


def test_old_log_partitions_are_archived_and_dropped_newer_kept(
    receiver: ReceiverServer, database_url: str, sql: Sql, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    post_records(receiver, 0, 30, 200, 400)
    assert bodies(sql) == ["age-0", "age-200", "age-30", "age-400"]
    cutoff = datetime.now(UTC) - timedelta(days=90)
    old = sql(
        "SELECT partition FROM glia_partitions() WHERE parent = 'log_records' AND range_end <= $1 ORDER BY 1", cutoff
    )
    assert len(old) == 2  # the months of age-200 and age-400

    archive = tmp_path / "archive"
    assert main(["retention", "--older-than", "90d", "--archive", str(archive), "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    for part in old:
        assert f"dropped {part['partition']}" in out
    assert bodies(sql) == ["age-0", "age-30"]
    archived = []
    for part in old:
        with gzip.open(archive / f"{part['partition']}.csv.gz", "rt", newline="") as f:
            archived += [json.loads(row["body"]) for row in csv.DictReader(f)]
    assert sorted(archived) == ["age-200", "age-400"]

    # a late record for a month that was dropped: its partition is made again, the record stored
    post_records(receiver, 200)
    assert bodies(sql) == ["age-0", "age-200", "age-30"]
