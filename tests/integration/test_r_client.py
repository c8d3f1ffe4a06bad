"""The R client (glia-r) against a real receiver and PostgreSQL.

`Rscript` runs the example script and the rows are checked column by column. The package's testthat suite
runs here too, so one pytest run covers both layers. Skips when Rscript or the installed `glia` R package is
missing (fails instead under CI=true): install both with `.ci/install-r.sh`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, ReceiverServer, need
from tests.helpers import r_env

Sql = Callable[..., list[dict[str, Any]]]

GLIA_R = REPO / "glia-r"
EXAMPLE = GLIA_R / "inst" / "examples" / "example.R"
MIB = 1024 * 1024
SPAN_COLUMNS = """
    trace_id, span_id, parent_span_id, name, status_code, status_message, duration_ns, service_name,
    service_instance_id, host_name, host_arch, os_type, os_description, process_pid, process_parent_pid,
    process_executable_name, process_executable_path, process_command_args, process_owner,
    process_working_directory, process_runtime_name, process_runtime_version, script_path, script_sha256,
    run_kind, exit_code, cpu_user_seconds, cpu_system_seconds, cpu_percent, peak_rss_bytes, peak_rss_method,
    io_read_bytes, io_write_bytes, attributes, resource, events
"""


@cache
def _r_problem() -> str | None:
    """Why the R client cannot be exercised here, or None when it can."""
    if shutil.which("Rscript") is None:
        return "Rscript is not installed (run .ci/install-r.sh)"
    probe = subprocess.run(["Rscript", "-e", "library(glia)"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        return f"the glia R package is not installed (run .ci/install-r.sh): {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture(autouse=True)
def _need_r() -> None:
    problem = _r_problem()
    need(problem is None, problem or "")


def run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)


def glia_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "glia_otel._cli", *args]


def spans(sql: Sql) -> list[dict[str, Any]]:
    rows = sql(f"SELECT {SPAN_COLUMNS} FROM spans ORDER BY start_time, name")
    for row in rows:
        for key in ("attributes", "resource", "events"):
            if isinstance(row[key], str):
                row[key] = json.loads(row[key])
    return rows


def spool_files(tmp_path: Path) -> list[str]:
    directory = tmp_path / "spool"
    # `.lock` is glia flush's lock file, not a run
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) if directory.exists() else []


def reference_peak_rss(tmp_path: Path, alloc_mib: int) -> int:
    """GNU time's max RSS of the example script with telemetry off (no VmHWM resets, so wait4 is exact)."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    need(Path(gnu_time).exists(), "GNU time is not installed (Debian package `time`)")
    out = tmp_path / "time.txt"
    result = run(
        [gnu_time, "-f", "%M", "-o", str(out), "Rscript", str(EXAMPLE), "--alloc-mib", str(alloc_mib)],
        r_env(tmp_path, None, GLIA_DISABLED="true"),
    )
    assert result.returncode == 0, result.stderr
    return int(out.read_text().split()[-1]) * 1024


def test_testthat_suite_passes() -> None:
    """The package's own unit tests (payload builder, measurements, spool)."""
    result = subprocess.run(
        ["Rscript", "testthat.R"],
        cwd=GLIA_R / "tests",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert re.search(r"\[ FAIL 0 \|", result.stdout + result.stderr)


def test_example_script_row(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> None:
    result = run(
        ["Rscript", str(EXAMPLE), "--alloc-mib", "200", "--api-key", "hunter2", "DB_PASSWORD=swordfish"],
        r_env(tmp_path, receiver.url),
    )
    assert result.returncode == 0, result.stderr
    assert spool_files(tmp_path) == []

    rows = spans(sql)
    assert [r["name"] for r in rows] == ["example", "fit"]
    root, fit = rows

    # resource columns
    assert root["service_name"] == "example"
    assert root["host_name"] == socket.gethostname()
    assert root["host_arch"] in ("amd64", "arm64")
    assert root["os_type"] == "linux"
    assert root["os_description"]
    assert root["process_owner"] == getpass.getuser()
    assert root["process_runtime_name"] == "R"
    assert re.fullmatch(r"\d+\.\d+\.\d+", root["process_runtime_version"])
    assert root["process_executable_name"] == "R"
    assert root["process_pid"] > 0 and root["process_parent_pid"] > 0
    assert root["process_working_directory"] == str(REPO)
    assert root["script_path"] == str(EXAMPLE)
    assert root["script_sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    args = root["process_command_args"]
    assert f"--file={EXAMPLE}" in args
    assert args[args.index("--api-key") + 1] == "[REDACTED]"
    assert "DB_PASSWORD=[REDACTED]" in args
    assert "hunter2" not in " ".join(args) and "swordfish" not in " ".join(args)
    assert re.fullmatch(r"[0-9a-f-]{36}", root["service_instance_id"])
    assert root["resource"]["telemetry.sdk.language"] == "r"

    # span columns
    assert root["run_kind"] == "block"
    assert root["status_code"] == 0 and root["exit_code"] == 0
    assert root["parent_span_id"] is None
    assert root["duration_ns"] > 0
    assert root["cpu_user_seconds"] > 0 and root["cpu_system_seconds"] >= 0
    assert 0 < root["cpu_percent"] < 400
    assert root["io_read_bytes"] is not None and root["io_write_bytes"] is not None
    assert root["peak_rss_method"] == "hwm-reset"

    # custom values, in the JSONB bag with their JSON types
    attrs = root["attributes"]
    assert attrs["dataset"] == "cars"
    assert attrs["n"] == 200 * MIB // 8
    assert attrs["config.lr"] == 0.01 and attrs["config.optimizer"] == "adam"
    assert attrs["tags"] == ["r", "e2e"]
    assert attrs["slope"] == pytest.approx(3.932409, rel=1e-6)
    assert sql('SELECT count(*) AS n FROM spans WHERE attributes @> \'{"dataset": "cars"}\'')[0]["n"] == 1

    # the nested run: a child in the same trace, its own (smaller) peak
    assert fit["trace_id"] == root["trace_id"]
    assert fit["parent_span_id"] == root["span_id"]
    assert fit["attributes"]["model"] == "lm"
    assert fit["peak_rss_bytes"] < root["peak_rss_bytes"] - 150 * MIB

    # peak RSS of the 200 MiB allocation: within 10% of GNU time on the same script with telemetry off
    reference = reference_peak_rss(tmp_path, 200)
    assert root["peak_rss_bytes"] >= 200 * MIB
    assert abs(root["peak_rss_bytes"] - reference) <= 0.10 * reference, (root["peak_rss_bytes"], reference)


def test_error_marks_the_run_and_exits_nonzero(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> None:
    result = run(["Rscript", str(EXAMPLE), "--alloc-mib", "10", "--fail"], r_env(tmp_path, receiver.url))
    assert result.returncode == 1
    assert "failing on purpose" in result.stderr
    root = next(r for r in spans(sql) if r["name"] == "example")
    assert root["status_code"] == 2
    assert root["status_message"] == "simpleError: failing on purpose"
    assert root["exit_code"] == 1
    (event,) = root["events"]
    assert event["name"] == "exception"
    event_attrs = json.dumps(event)
    assert "exception.type" in event_attrs and "simpleError" in event_attrs


def test_under_glia_run_the_script_is_a_child(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> None:
    result = run(glia_cli("run", "--", "Rscript", str(EXAMPLE), "--alloc-mib", "20"), r_env(tmp_path, receiver.url))
    assert result.returncode == 0, result.stderr
    rows = spans(sql)
    command = next(r for r in rows if r["run_kind"] == "command")
    root = next(r for r in rows if r["name"] == "example" and r["run_kind"] == "block")
    fit = next(r for r in rows if r["name"] == "fit")
    assert root["trace_id"] == command["trace_id"] == fit["trace_id"]
    assert root["parent_span_id"] == command["span_id"]
    assert fit["parent_span_id"] == root["span_id"]
    assert command["script_sha256"] == root["script_sha256"]


def test_endpoint_down_spools_and_flush_delivers_once(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> None:
    receiver.stop()
    env = r_env(tmp_path, receiver.url)
    started = time.monotonic()
    result = run(["Rscript", str(EXAMPLE), "--alloc-mib", "10"], env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "spooled" in result.stderr
    files = spool_files(tmp_path)
    assert len(files) == 2  # one request per run: the script and its nested fit
    assert all(re.fullmatch(r"traces-\d{19}-\d+-[0-9a-f]+\.json", f) for f in files), files
    assert elapsed < 30
    # private from the start: what `glia flush` accepts (the user's own directory and plain 0600 files)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert all(stat.S_IMODE((tmp_path / "spool" / f).stat().st_mode) == 0o600 for f in files)

    receiver.start()
    for _ in range(2):
        flushed = run(glia_cli("flush", "--spool-dir", str(tmp_path / "spool"), "--endpoint", receiver.url), env)
        assert flushed.returncode == 0, flushed.stderr
        assert spool_files(tmp_path) == []
    rows = spans(sql)
    assert sorted(r["name"] for r in rows) == ["example", "fit"]
    assert next(r for r in rows if r["name"] == "example")["attributes"]["dataset"] == "cars"


def test_a_spool_others_can_write_is_refused_by_r_and_by_flush(
    receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    """R writes nothing into it (the run is lost, once said why); `glia flush` does not send what was planted there."""
    spool = tmp_path / "spool"
    spool.mkdir()
    planted = spool / "1000000000000000000-1-00000000.json"
    now = time.time_ns()
    span = {"traceId": "1" * 32, "spanId": "2" * 16, "name": "planted"}
    span |= {"startTimeUnixNano": str(now - 10**9), "endTimeUnixNano": str(now)}
    planted.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))
    spool.chmod(0o777)
    receiver.stop()
    result = run(["Rscript", str(EXAMPLE), "--alloc-mib", "10"], r_env(tmp_path, receiver.url))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("will not use the spool") == 1, result.stderr
    assert f"{spool} is writable by others (mode 777" in result.stderr, result.stderr
    assert spool_files(tmp_path) == [planted.name]
    receiver.start()
    flush = glia_cli("flush", "--spool-dir", str(spool), "--endpoint", receiver.url)
    flushed = run(flush, r_env(tmp_path, None))
    assert flushed.returncode == 2 and "writable by others" in flushed.stderr, flushed.stderr
    assert spans(sql) == []
    spool.chmod(0o700)  # fixed as the message says: then it is sent
    flushed = run(flush, r_env(tmp_path, None))
    assert flushed.returncode == 0, flushed.stderr
    assert [r["name"] for r in spans(sql)] == ["planted"]


def test_a_wrong_key_is_spooled_and_a_refused_body_kept_as_rejected(
    receiver_factory: Callable[..., ReceiverServer], database_url: str, sql: Sql, tmp_path: Path
) -> None:
    """As the Python client: 401 is the endpoint's problem (spooled); 413 is the body's (kept as .rejected)."""
    import asyncio

    import asyncpg

    from receiver.auth import create_key

    async def make_key() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            key, _ = await create_key(conn, "r-test", "ingest")
            return key
        finally:
            await conn.close()

    key = asyncio.run(make_key())
    keyed = receiver_factory(key_cache_seconds=0.1)
    result = run(["Rscript", str(EXAMPLE), "--alloc-mib", "10"], r_env(tmp_path, keyed.url))
    assert result.returncode == 0, result.stderr
    assert "HTTP 401" in result.stderr or "401" in result.stderr, result.stderr
    assert len(spool_files(tmp_path)) == 2 and not any(f.endswith(".rejected") for f in spool_files(tmp_path))
    flushed = run(
        glia_cli("flush", "--spool-dir", str(tmp_path / "spool"), "--endpoint", keyed.url),
        r_env(tmp_path, keyed.url, OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer%20{key}"),
    )
    assert flushed.returncode == 0, flushed.stderr
    assert spool_files(tmp_path) == []
    assert sorted(r["name"] for r in spans(sql)) == ["example", "fit"]

    small = receiver_factory(max_body_bytes=1024)
    headers = {"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{key}"}
    result = run(["Rscript", str(EXAMPLE), "--alloc-mib", "10"], r_env(tmp_path, small.url, **headers))
    assert result.returncode == 0, result.stderr
    rejected = [f for f in spool_files(tmp_path) if f.endswith(".json.rejected")]
    assert len(rejected) == 2, spool_files(tmp_path)
    flushed = run(
        glia_cli("flush", "--retry-rejected", "--spool-dir", str(tmp_path / "spool"), "--endpoint", keyed.url),
        r_env(tmp_path, keyed.url, **headers),
    )
    assert flushed.returncode == 0, flushed.stderr
    assert spool_files(tmp_path) == []
    assert len(spans(sql)) == 4


def test_export_deadline_bounds_an_unanswering_endpoint(tmp_path: Path) -> None:
    """An endpoint that accepts connections and never answers costs about the deadline per run."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        env = r_env(tmp_path, endpoint, GLIA_EXPORT_DEADLINE_MS="250")
        code = (
            "library(glia); t0 <- Sys.time(); invisible(glia_track(1)); "
            "cat(as.numeric(Sys.time() - t0, units = 'secs'))"
        )
        result = run(["Rscript", "-e", code], env)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) < 1.0
    assert len(spool_files(tmp_path)) == 1


def test_redaction_matches_the_python_client() -> None:
    from glia_otel._redact import redact_args

    # fmt: off
    cases = [
        "--password", "p", "--db-password=x", "-token", "t", "--api_key=k", "--keyfile", "k",
        "--sort-key", "name", "AWS_SECRET_ACCESS_KEY=a", "GH_TOKEN=g", "KEYBOARD=1",
        "postgresql://me:pw@db/x", "--url=https://u:p@h/", "--", "--secret", "s", "plain",
        "--auth", "a", "--credentials=c",
    ]
    # fmt: on
    code = "cat(jsonlite::toJSON(glia:::.redact_args(jsonlite::fromJSON(readLines(file('stdin'))))))"
    result = subprocess.run(
        ["Rscript", "-e", code],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == redact_args(cases)
