"""`glia_runs()` in R against a real receiver and PostgreSQL: the data.frame holds the runs `glia runs` lists for the
same filters, with the CSV columns in their order and their types, pages followed past the API's 500, a read key
from GLIA_API_KEY, and the API's own message for a refused filter or key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from glia_otel._format import CSV_COLUMNS
from tests.conftest import REPO, ReceiverServer, need
from tests.helpers import create_key, expected, run_id, seed_runs

# Prints what the test checks of glia_runs(ARGS) as one JSON line: columns, their classes, and some of the values.
REPORT = """
df <- glia::glia_runs({args})
cat(jsonlite::toJSON(list(
  names = names(df), classes = vapply(df, function(c) class(c)[[1]], ""), rows = nrow(df),
  run_id = df$run_id, exit_code = df$exit_code, peak_rss_bytes = df$peak_rss_bytes, wall_seconds = df$wall_seconds,
  started_at = format(df$started_at, "%Y-%m-%dT%H:%M:%OS6+00:00"), attributes = df$attributes,
  tz = attr(df$started_at, "tzone")
), auto_unbox = TRUE, digits = NA), "\\n")
"""


@pytest.fixture(autouse=True)
def _need_r() -> None:
    need(shutil.which("Rscript"), "Rscript is not installed (run .ci/install-r.sh)")
    probe = subprocess.run(
        ["Rscript", "-e", "stopifnot(exists('glia_runs', envir = asNamespace('glia')))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    need(
        probe.returncode == 0, f"the glia R package with glia_runs is not installed (.ci/install-r.sh): {probe.stderr}"
    )


def r_runs(receiver: ReceiverServer, args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLIA_", "OTEL_"))}
    env["GLIA_API_URL"] = receiver.url
    if key:
        env["GLIA_API_KEY"] = key
    return subprocess.run(
        ["Rscript", "-e", REPORT.replace("{args}", args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=REPO,
    )


def report(receiver: ReceiverServer, args: str, key: str | None = None) -> dict[str, Any]:
    proc = r_runs(receiver, args, key)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("run_id", "exit_code", "peak_rss_bytes", "wall_seconds", "started_at", "attributes"):
        if not isinstance(found[name], list):  # jsonlite unboxes a vector of one
            found[name] = [found[name]]
    return found


@pytest.fixture
def seeded(database_url: str, receiver: ReceiverServer) -> ReceiverServer:
    seed_runs(database_url)
    return receiver


def test_glia_runs_is_the_runs_of_glia_runs(seeded: ReceiverServer, sql: Any) -> None:
    found = report(seeded, 'program = "prog-07"')
    assert found["names"] == CSV_COLUMNS
    classes = dict(zip(found["names"], found["classes"], strict=True))
    assert classes["started_at"] == classes["ended_at"] == "POSIXct" and found["tz"] == "UTC"
    assert classes["exit_code"] == classes["task_attempt"] == classes["oom_kills"] == "integer"
    assert classes["peak_rss_bytes"] == classes["wall_seconds"] == classes["requested_memory_bytes"] == "numeric"
    assert classes["run_id"] == classes["attributes"] == classes["program_name"] == "character"
    assert found["run_id"] == [run_id(i) for i in (7, 57, 107)]  # newest first
    assert found["peak_rss_bytes"] == [expected(i)["peak_rss_bytes"] for i in (7, 57, 107)]
    assert found["exit_code"] == [expected(i)["exit_code"] for i in (7, 57, 107)]
    assert [json.loads(a) for a in found["attributes"]] == [expected(i)["attributes"] for i in (7, 57, 107)]
    stored = sql("SELECT run_id, started_at FROM runs WHERE program_name = 'prog-07' ORDER BY started_at DESC")
    # POSIXct is seconds in a double: about a microsecond is what it holds at today's times (and format() truncates)
    shown = [datetime.fromisoformat(t) for t in found["started_at"]]
    assert [abs((a - r["started_at"]).total_seconds()) < 2e-6 for a, r in zip(shown, stored, strict=True)] == [True] * 3

    # the filters of glia runs: as in tests/integration/test_query_cli.py
    found = report(seeded, 'status = "error", host = "node01"')
    want = [i for i in range(1, 121) if i % 20 == 1 and expected(i)["exit_code"] != 0]
    assert found["run_id"] == [run_id(i) for i in want]
    assert report(seeded, 'attr = c(pipeline = "chipseq", sample = "S6")')["run_id"] == [run_id(6)]
    # a number matches the number, the same digits as text do not
    assert report(seeded, "attr = list(reads = 7000)")["run_id"] == [run_id(7)]
    assert report(seeded, 'attr = c(reads = "7000")')["rows"] == 0
    empty = report(seeded, 'program = "nothing-by-this-name"')
    assert empty["rows"] == 0 and empty["names"] == CSV_COLUMNS


def test_pages_are_followed_up_to_the_limit(database_url: str, receiver: ReceiverServer) -> None:
    seed_runs(database_url, n=1200)
    every = report(receiver, "limit = Inf")
    assert every["rows"] == 1200 and len(set(every["run_id"])) == 1200
    assert every["run_id"][:3] == [run_id(i) for i in (1, 2, 3)]
    assert report(receiver, "limit = 700")["run_id"] == every["run_id"][:700]
    assert (
        report(receiver, 'limit = 3, sort = "-peak_rss_bytes"')["peak_rss_bytes"]
        == sorted((expected(i, 1200)["peak_rss_bytes"] for i in range(1, 1201)), reverse=True)[:3]
    )


def test_a_read_key_and_the_apis_messages(
    database_url: str, receiver_factory: Callable[..., ReceiverServer], capsys: pytest.CaptureFixture[str]
) -> None:
    seed_runs(database_url)
    key = create_key(capsys, database_url, "analyst", "read")
    seeded = receiver_factory(key_cache_seconds=0)
    refused = r_runs(seeded, 'program = "prog-07"')
    assert refused.returncode != 0
    assert "glia_runs: the query API needs a read key: set GLIA_API_KEY" in refused.stderr
    assert report(seeded, 'program = "prog-07"', key=key)["run_id"] == [run_id(i) for i in (7, 57, 107)]
    wrong = r_runs(seeded, 'program = "prog-07"', key="glia_wrong")
    assert "glia_runs: the query API refused the key in GLIA_API_KEY (401" in wrong.stderr
    bad = r_runs(seeded, 'since = "last tuesday"', key=key)
    assert bad.returncode != 0
    assert "glia_runs: since: 'last tuesday' is neither an ISO 8601 time" in bad.stderr
