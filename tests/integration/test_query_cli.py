"""`glia runs` and `glia show` against a seeded database: what they print, in each format."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from glia_otel._cli import main
from tests.conftest import REPO
from tests.helpers import N, expected, run_id, seed_runs


@pytest.fixture
def seeded_url(database_url: str) -> str:
    seed_runs(database_url)
    return database_url


def glia(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_table(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = glia(capsys, "runs", "--database-url", seeded_url, "--program", "prog-07", "--limit", "2")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["RUN", "ID", "STARTED", "(UTC)"]
    # prog-07: runs 7, 57, 107 - newest first
    assert [line.split()[0] for line in lines] == [run_id(7), run_id(57)]
    assert "prog-07" in lines[0] and expected(7)["host_name"] in lines[0]
    assert "--cursor" in err  # a third run remains


def test_runs_json_and_csv_with_filters(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = glia(
        capsys,
        "runs",
        "--database-url",
        seeded_url,
        "--status",
        "error",
        "--host",
        "node01",
        "--format",
        "json",
        "--limit",
        "500",
    )
    assert code == 0
    rows = json.loads(out)
    want = [i for i in range(1, N + 1) if i % 20 == 1 and expected(i)["exit_code"] != 0]
    assert [r["run_id"] for r in rows] == [run_id(i) for i in want]
    assert rows[0]["attributes"] == expected(want[0])["attributes"]

    code, out, _ = glia(
        capsys,
        "runs",
        "--database-url",
        seeded_url,
        "--attr",
        "pipeline=chipseq",
        "--attr",
        "sample=S6",
        "--format",
        "csv",
    )
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["run_id"] == run_id(6) and row["exit_code"] == "0"
    assert json.loads(row["attributes"]) == expected(6)["attributes"]
    assert int(row["peak_rss_bytes"]) == expected(6)["peak_rss_bytes"]


def test_runs_rejects_bad_input(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = glia(capsys, "runs", "--database-url", seeded_url, "--since", "yesterday-ish")
    assert code == 2 and "ISO 8601" in err


def test_show_text_and_json(seeded_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = glia(capsys, "show", run_id(9), "--database-url", seeded_url)
    assert code == 0
    assert out.startswith(f"run {run_id(9)}")
    assert "prog-09" in out and '"wgs"' in out and "process.memory.usage" in out
    code, out, _ = glia(capsys, "show", run_id(9), "--database-url", seeded_url, "--format", "json")
    run: dict[str, Any] = json.loads(out)
    assert run["peak_rss_bytes"] == expected(9)["peak_rss_bytes"]
    assert {m["name"] for m in run["metrics"]} == {"process.memory.usage", "process.cpu.time"}
    code, _, err = glia(capsys, "show", "0123456789abcdef", "--database-url", seeded_url)
    assert code == 1 and "no run" in err


def test_glia_runs_as_a_command_reads_glia_database_url(seeded_url: str) -> None:
    env = {**os.environ, "GLIA_DATABASE_URL": seeded_url}
    result = subprocess.run(
        [sys.executable, "-m", "glia_otel._cli", "runs", "--limit", "3", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [r["run_id"] for r in json.loads(result.stdout)] == [run_id(i) for i in (1, 2, 3)]


def test_without_a_url_glia_runs_reads_the_embedded_default(
    pg_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from receiver.embedded import EmbeddedPostgres

    data_dir = pg_data_dir / "glia-data"
    env_url = os.environ.pop("GLIA_DATABASE_URL", None)
    try:
        code, out, _ = glia(capsys, "runs", "--data-dir", str(data_dir))
    finally:
        if env_url is not None:
            os.environ["GLIA_DATABASE_URL"] = env_url
    assert code == 0 and out.strip() == "no runs match"
    embedded = EmbeddedPostgres(data_dir)
    assert (data_dir / "database-url").exists()
    assert not embedded.running()  # it was started for the command and stopped again
