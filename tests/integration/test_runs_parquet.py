"""`glia runs --format parquet`: a typed Parquet file of the runs, to `--output FILE` or a redirected stdout, from
the database and from the query API alike; refused on a terminal, and one line naming the extra when pyarrow is
missing. Read back with pyarrow, value by value, against what bench/seed.sql gave each run."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from glia_otel._format import CSV_COLUMNS
from tests.conftest import REPO, ReceiverServer
from tests.helpers import expected, run_id, seed_runs

# prog-07 of the 120 seeded runs, newest first (run i started i steps before the newest)
PROG_07 = [7, 57, 107]

CASE = """
import sys
if sys.argv[1] == "no-pyarrow":
    sys.modules["pyarrow"] = None  # as on a machine without the parquet extra: `import pyarrow` fails
from glia_otel._cli import main
code = main(sys.argv[2:])
sys.stdout.flush()
sys.exit(code)
"""


@pytest.fixture
def seeded_url(database_url: str) -> str:
    seed_runs(database_url)
    return database_url


def glia(
    *argv: str, env: dict[str, str] | None = None, pyarrow: bool = True, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """`glia ARGV...` in a fresh interpreter (without pyarrow importable when `pyarrow` is false)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GLIA_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CASE), "pyarrow" if pyarrow else "no-pyarrow", *argv],
        env={**base, **(env or {})},
        cwd=REPO,
        timeout=60,
        check=False,
        **kw,  # type: ignore[call-overload]
    )


def check_prog_07(table: pa.Table) -> None:
    assert table.column_names == CSV_COLUMNS
    schema = table.schema
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("peak_rss_bytes").type == pa.int64()
    assert schema.field("wall_seconds").type == pa.float64()
    assert schema.field("requested_cpus").type == pa.float64()
    assert schema.field("program_name").type == pa.string()
    rows = table.to_pylist()
    assert [r["run_id"] for r in rows] == [run_id(i) for i in PROG_07]
    for row, i in zip(rows, PROG_07, strict=True):
        want = expected(i)
        assert row["program_name"] == "prog-07"
        assert row["host_name"] == want["host_name"]
        assert row["exit_code"] == want["exit_code"]
        assert row["peak_rss_bytes"] == want["peak_rss_bytes"]
        assert row["wall_seconds"] == pytest.approx(want["wall_seconds"])
        assert json.loads(row["attributes"]) == want["attributes"]
        assert row["started_at"].tzinfo is not None and row["started_at"] < datetime.now(UTC)
    # bench/seed.sql: every second run is a Slurm job of 4 GiB and 2 cpus, the others ask for nothing
    assert [r["requested_memory_bytes"] for r in rows] == [None, None, None]
    assert rows[0]["started_at"] > rows[1]["started_at"] > rows[2]["started_at"]


def test_parquet_to_a_file_and_to_redirected_stdout(seeded_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs.parquet"
    args = ["runs", "--database-url", seeded_url, "--program", "prog-07", "--format", "parquet"]
    result = glia(*args, "--output", str(out), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    check_prog_07(pq.read_table(out))

    redirected = tmp_path / "stdout.parquet"
    with redirected.open("wb") as stdout:
        result = glia(*args, stdout=stdout, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert redirected.read_bytes()[:4] == b"PAR1"
    assert pq.read_table(redirected).equals(pq.read_table(out))

    # an empty answer is still a file with every column, typed
    empty = tmp_path / "empty.parquet"
    result = glia(*args[:-4], "--program", "nothing-by-this-name", "--format", "parquet", "--output", str(empty),
                  capture_output=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(empty)
    assert table.num_rows == 0 and table.column_names == CSV_COLUMNS
    assert table.schema.field("started_at").type == pa.timestamp("us", tz="UTC")


def test_parquet_from_the_query_api_is_the_same_table(
    seeded_url: str, receiver: ReceiverServer, tmp_path: Path
) -> None:
    from_db, from_api = tmp_path / "db.parquet", tmp_path / "api.parquet"
    args = ["runs", "--program", "prog-07", "--format", "parquet", "--output"]
    result = glia(*args, str(from_db), "--database-url", seeded_url, capture_output=True)
    assert result.returncode == 0, result.stderr
    result = glia(*args, str(from_api), env={"GLIA_API_URL": receiver.url}, capture_output=True)
    assert result.returncode == 0, result.stderr
    check_prog_07(pq.read_table(from_api))
    assert pq.read_table(from_api).equals(pq.read_table(from_db))


def test_parquet_is_refused_on_a_terminal(seeded_url: str) -> None:
    controller, terminal = pty.openpty()
    try:
        result = glia(
            "runs", "--database-url", seeded_url, "--format", "parquet", stdout=terminal, stderr=subprocess.PIPE
        )
        os.set_blocking(controller, False)
        try:
            shown = os.read(controller, 4096)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(controller)
        os.close(terminal)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "glia runs: --format parquet is binary: give --output FILE, or redirect stdout to a file"
    )
    assert b"PAR1" not in shown


@pytest.mark.parametrize("path", ["database", "api"])
def test_without_pyarrow_one_line_names_the_extra(
    path: str, seeded_url: str, receiver: ReceiverServer, tmp_path: Path
) -> None:
    out = tmp_path / "runs.parquet"
    where = (["--database-url", seeded_url], {}) if path == "database" else ([], {"GLIA_API_URL": receiver.url})
    result = glia(
        "runs", *where[0], "--format", "parquet", "--output", str(out), env=where[1], pyarrow=False,
        capture_output=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "glia runs: --format parquet needs pyarrow, which is not installed: pip install 'glia[parquet]'"
    ]
    assert not out.exists()


def test_the_text_formats_take_output_too(seeded_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    result = glia(
        "runs", "--database-url", seeded_url, "--program", "prog-07", "--format", "csv", "--output", str(out),
        capture_output=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    import csv

    assert [r["run_id"] for r in csv.DictReader(io.StringIO(out.read_text()))] == [run_id(i) for i in PROG_07]
