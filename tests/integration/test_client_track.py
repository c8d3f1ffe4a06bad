"""Tracked blocks and functions in a real Python process, exported to a real receiver: the rows in PostgreSQL.

Each test runs its script in a fresh interpreter, so the exit path (deadline, spool) is the real one too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env, run_python


def test_block_row_has_resource_and_usage_columns(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import glia_otel
        with glia_otel.track("train", dataset="cifar10", params={"lr": 0.1, "layers": [64, 32]}) as run:
            run.set(accuracy=0.93, tags=["a", "b"])
            sum(range(100000))
        """,
        client_env(receiver.url, tmp_path / "spool", OTEL_RESOURCE_ATTRIBUTES="lab=genomics"),
        name="train_model.py",
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = sql("SELECT * FROM spans")
    assert row["name"] == "train"
    assert row["run_kind"] == "block"
    assert row["exit_code"] == 0
    assert row["status_code"] == 0
    assert row["parent_span_id"] is None
    assert row["service_name"] == "train_model"
    assert row["host_name"] == os.uname().nodename
    assert row["process_runtime_name"] == "cpython"
    assert row["process_executable_path"] == sys.executable
    assert row["script_path"] == str(tmp_path / "train_model.py")
    assert len(row["script_sha256"]) == 64
    assert row["process_owner"]
    assert row["peak_rss_method"] == "hwm-reset"
    assert row["peak_rss_bytes"] > 1_000_000
    assert row["cpu_user_seconds"] >= 0 and row["cpu_system_seconds"] >= 0 and row["cpu_percent"] >= 0
    assert row["io_read_bytes"] is not None and row["io_write_bytes"] is not None
    assert row["duration_ns"] > 0
    import json

    attrs = json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]
    assert attrs["dataset"] == "cifar10"
    assert attrs["params.lr"] == 0.1
    assert attrs["params.layers"] == [64, 32]
    assert attrs["accuracy"] == 0.93
    assert attrs["tags"] == ["a", "b"]
    resource = json.loads(row["resource"]) if isinstance(row["resource"], str) else row["resource"]
    assert resource["lab"] == "genomics"
    assert not list((tmp_path / "spool").glob("*")), "nothing should be spooled with the receiver up"


def test_decorators_sync_async_and_nested_runs(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import asyncio
        import glia_otel

        @glia_otel.track
        def step(x):
            return x * 2

        @glia_otel.track("fetch", source="s3")
        async def fetch():
            await asyncio.sleep(0.01)
            return 5

        with glia_otel.track("pipeline"):
            assert step(2) == 4
            assert asyncio.run(fetch()) == 5
            with glia_otel.track("inner"):
                pass
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in sql("SELECT * FROM spans")}
    assert set(rows) == {"pipeline", "step", "fetch", "inner"}
    root = rows["pipeline"]
    assert root["run_kind"] == "block" and root["parent_span_id"] is None
    for name in ("step", "fetch", "inner"):
        assert rows[name]["trace_id"] == root["trace_id"]
        assert rows[name]["parent_span_id"] == root["span_id"], name
    assert rows["step"]["run_kind"] == "function"
    assert rows["fetch"]["run_kind"] == "function"
    assert rows["fetch"]["duration_ns"] >= 10_000_000
    assert rows["inner"]["run_kind"] == "block"


def test_exception_marks_error_and_is_reraised_unchanged(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import glia_otel

        class Boom(Exception):
            pass

        @glia_otel.track
        def fails():
            raise Boom("bad input")

        err = Boom("original")
        try:
            with glia_otel.track("block"):
                raise err
        except Boom as e:
            assert e is err
        try:
            fails()
        except Boom as e:
            assert str(e) == "bad input"
            print("reraised")
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "reraised" in proc.stdout
    rows = {r["name"]: r for r in sql("SELECT name, status_code, status_message, exit_code, events FROM spans")}
    assert set(rows) == {"block", "fails"}
    import json

    for name, message in (("block", "original"), ("fails", "bad input")):
        row = rows[name]
        assert row["status_code"] == 2
        assert row["exit_code"] == 1
        assert message in row["status_message"]
        events = json.loads(row["events"]) if isinstance(row["events"], str) else row["events"]
        (event,) = events
        assert event["name"] == "exception"
        text = json.dumps(event)
        assert "Boom" in text and message in text and "exception.stacktrace" in text


def test_existing_tracer_provider_is_used(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        f"""
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=Resource.create({{"service.name": "app-owned"}}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint="{receiver.url}/v1/traces")))
        trace.set_tracer_provider(provider)

        import glia_otel
        tracer = trace.get_tracer("app")
        with tracer.start_as_current_span("request"):
            with glia_otel.track("work", k=1):
                pass
        provider.shutdown()
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in sql("SELECT * FROM spans")}
    assert set(rows) == {"request", "work"}
    assert rows["work"]["service_name"] == "app-owned"
    assert rows["work"]["run_kind"] == "block"
    assert rows["work"]["parent_span_id"] == rows["request"]["span_id"]
    assert rows["work"]["peak_rss_bytes"] > 0


def test_sdk_disabled_makes_everything_a_no_op(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import glia_otel
        with glia_otel.track("x") as run:
            run.set(a=1)

        @glia_otel.track
        def f():
            return 1

        assert f() == 1
        print(run.trace_id == "")
        """,
        client_env(receiver.url, tmp_path / "spool", OTEL_SDK_DISABLED="true"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 0


def test_malformed_setting_is_a_value_error_at_configure(tmp_path: Path) -> None:
    proc = run_python(
        tmp_path,
        """
        import glia_otel
        try:
            glia_otel.configure()
        except ValueError as e:
            print("ValueError:", e)
        with glia_otel.track("still runs"):
            print("body ran")
        """,
        client_env(None, tmp_path / "spool", OTEL_EXPORTER_OTLP_TIMEOUT="soon"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "ValueError: OTEL_EXPORTER_OTLP_TIMEOUT='soon'" in proc.stdout
    assert "body ran" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_configure_again_switches_endpoint_and_spool(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        f"""
        import glia_otel
        from opentelemetry import trace
        glia_otel.configure(endpoint="http://127.0.0.1:9", export_deadline_ms=2000)
        with glia_otel.track("first"):
            pass
        glia_otel.configure(endpoint="{receiver.url}", service_name="second-svc", export_deadline_ms=5000)
        with glia_otel.track("second"):
            pass
        with trace.get_tracer("other-lib").start_as_current_span("library-span"):
            pass
        """,
        client_env(None, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in sql("SELECT name, service_name FROM spans")}
    assert rows["second"]["service_name"] == "second-svc"
    assert "library-span" in rows  # spans of other instrumentation follow the new settings too
    # The first run was spooled; the second configure() resends the spool in the background, so it is stored by
    # now, or still in the spool, or both (sent, but the process ended before the file was deleted: resent later,
    # stored once). Never lost.
    spooled = list((tmp_path / "spool").glob("*.pb.gz"))
    assert "first" in rows or spooled, (rows.keys(), spooled)


def test_one_tracker_entered_by_concurrent_tasks(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(
        tmp_path,
        """
        import asyncio
        import glia_otel

        step = glia_otel.track("step")

        async def work(i, delay):
            async with step as run:
                run.set(i=i)
                await asyncio.sleep(delay)
                if i == 1:
                    raise ValueError("task 1 fails")

        async def main():
            results = await asyncio.gather(work(0, 0.05), work(1, 0.01), work(2, 0.03), return_exceptions=True)
            assert isinstance(results[1], ValueError)

        asyncio.run(main())
        """,
        client_env(receiver.url, tmp_path / "spool"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = sql("SELECT (attributes->>'i')::int AS i, status_code, exit_code, duration_ns FROM spans ORDER BY 1")
    assert [(r["i"], r["status_code"], r["exit_code"]) for r in rows] == [(0, 0, 0), (1, 2, 1), (2, 0, 0)]
    assert rows[0]["duration_ns"] >= 50_000_000 and rows[1]["duration_ns"] < 50_000_000


UNPRINTABLE = """
import glia_otel

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")

try:
    with glia_otel.track("bad"):
        raise Unprintable()
except Unprintable:
    print("re-raised")
with glia_otel.track("after"):
    pass
"""


def test_an_exception_whose_str_raises_still_ends_the_run(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(tmp_path, UNPRINTABLE, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "re-raised\n"
    rows = {r["name"]: r for r in sql("SELECT name, status_code, status_message, exit_code, parent_span_id FROM spans")}
    assert set(rows) == {"bad", "after"}
    assert rows["bad"]["status_code"] == 2 and rows["bad"]["exit_code"] == 1
    assert rows["bad"]["status_message"].startswith("Unprintable: ")
    assert rows["after"]["parent_span_id"] is None  # the failed run's context was detached
