"""`glia show RUN_ID` prints the run's exception (type, message, traceback) and its log records, newest last and
bounded, the same from the database and from the query API; `/api/runs/{id}` answers them as `exceptions`, `logs`
and `logs_truncated`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from glia_otel._cli import main
from tests.conftest import ReceiverServer
from tests.helpers import PB, Sql, client_env, glia_run, post, run_python

RAISES = """
import glia_otel
def load(batch):
    raise ValueError(f"bad batch {batch}")
with glia_otel.track("train"):
    load(17)
"""


def post_records(receiver: ReceiverServer, trace_id: str, span_id: str, bodies: list[tuple[int, str, int]]) -> None:
    """Records (time ns, body, severity number) of the span, as an application's OTLP logs."""
    request = ExportLogsServiceRequest()
    request.resource_logs.add().resource.attributes.add(key="service.name").value.string_value = "train"
    scope = request.resource_logs[0].scope_logs.add()
    for t, body, severity in bodies:
        record = scope.log_records.add(time_unix_nano=t, severity_number=severity)
        record.trace_id, record.span_id = bytes.fromhex(trace_id), bytes.fromhex(span_id)
        record.body.string_value = body
    assert post(receiver, request.SerializeToString(), PB, path="/v1/logs").status_code == 200


def glia(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def failed_block(receiver: ReceiverServer, sql: Sql, tmp_path: Path) -> dict[str, Any]:
    """A Python block that raised, with three log records of its own (one of several lines, one hostile)."""
    proc = run_python(tmp_path, RAISES, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 1 and "bad batch 17" in proc.stderr
    (run,) = sql("SELECT trace_id, span_id, start_time_unix_nano AS t FROM spans WHERE name = 'train'")
    post_records(
        receiver,
        run["trace_id"],
        run["span_id"],
        [
            (run["t"] + 3_000_000, "giving up\n  after 3 tries", 17),
            (run["t"] + 1_000_000, "loading batch 17", 9),
            (run["t"] + 2_000_000, "odd \x1b]0;title\x07 bytes", 13),
        ],
    )
    return run


def test_glia_show_prints_the_exception_and_the_logs_newest_last(
    failed_block: dict[str, Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = glia(capsys, "show", failed_block["span_id"], "--database-url", database_url)
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("exception: ValueError: bad batch 17")
    assert lines[at + 1] == "  Traceback (most recent call last):"
    trace = lines[at + 1 : lines.index("logs (3, newest last):")]
    assert any("in load" in line for line in trace) and trace[-1].strip() == "ValueError: bad batch 17"
    logs = lines[lines.index("logs (3, newest last):") + 1 :]
    assert [line[27:] for line in logs[:3]] == [
        "INFO   loading batch 17",
        "WARN   odd \\x1b]0;title\\x07 bytes",  # escaped for the terminal, not acted on
        "ERROR  giving up",
    ]
    assert logs[3:] == ["      after 3 tries"]  # a body's further lines, indented under it
    assert logs[0][:2] == "  " and logs[0][12] == " " and logs[0][21] == "."  # 2026-12-02 19:05:00.380


def test_the_database_and_the_api_print_the_same(
    failed_block: dict[str, Any],
    receiver: ReceiverServer,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GLIA_API_URL", "GLIA_API_KEY", "GLIA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for argv in (["show", failed_block["span_id"]], ["show", failed_block["span_id"], "--format", "json"]):
        want = glia(capsys, *argv, "--database-url", database_url)
        with monkeypatch.context() as m:
            m.setenv("GLIA_API_URL", receiver.url)
            m.setenv("GLIA_DATABASE_URL", "postgresql://glia@127.0.0.1:9/nowhere")
            got = glia(capsys, *argv)
        assert want[0] == 0 and got == want, argv
    detail = httpx.get(f"{receiver.url}/api/runs/{failed_block['span_id']}", timeout=30).json()
    assert [r["body"] for r in detail["logs"]] == [
        "loading batch 17",
        "odd \x1b]0;title\x07 bytes",
        "giving up\n  after 3 tries",
    ]
    assert detail["logs_truncated"] is False
    (exc,) = detail["exceptions"]
    assert (exc["type"], exc["message"]) == ("ValueError", "bad batch 17")
    assert exc["stacktrace"].startswith("Traceback (most recent call last):")


def test_the_logs_shown_are_the_newest_200(
    receiver: ReceiverServer, sql: Sql, database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    assert glia_run(["--name", "chatty", "--", "true"], env).returncode == 0
    (run,) = sql("SELECT trace_id, span_id, start_time_unix_nano AS t FROM spans")
    post_records(receiver, run["trace_id"], run["span_id"], [(run["t"] + i * 400, f"line {i}", 9) for i in range(250)])
    code, out, _ = glia(capsys, "show", run["span_id"], "--database-url", database_url)
    assert code == 0
    lines = out.splitlines()
    logs = lines[lines.index("logs (200, newest last, older ones not shown):") + 1 :]
    assert [line.split("INFO   ")[1] for line in logs] == [f"line {i}" for i in range(50, 250)]
    code, out, _ = glia(capsys, "show", run["span_id"], "--format", "json", "--database-url", database_url)
    shown = json.loads(out)
    assert shown["logs_truncated"] is True and len(shown["logs"]) == 200 and shown["exceptions"] == []


def test_a_kept_stderr_tail_is_shown_as_its_lines(
    receiver: ReceiverServer, sql: Sql, database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    script = "echo 'reading ref.fa' >&2; echo 'error: ref.fa: no such file' >&2; exit 2"
    assert glia_run(["--keep-stderr", "--", "sh", "-c", script], env).returncode == 2
    (run,) = sql("SELECT span_id FROM spans")
    code, out, _ = glia(capsys, "show", run["span_id"], "--database-url", database_url)
    assert code == 0
    lines = out.splitlines()
    at = lines.index("logs (1, newest last):")
    assert lines[at + 1].endswith("  stderr, its last 2 lines:")
    assert lines[at + 2 :] == ["    reading ref.fa", "    error: ref.fa: no such file"]
