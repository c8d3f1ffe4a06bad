"""Spans created with the OpenTelemetry API and glia's runs, in one process, without the SDK: the rows in PostgreSQL.

Glia records runs with its own spans when the application has no TracerProvider, and hands the API its own provider
once the application imports the API (before a run, or inside one): such spans are children of the run they start in,
go out with the runs, and the SDK is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env, run_python

API_INSIDE_A_RUN = """
import sys
import glia_otel

with glia_otel.track("outer", step=1) as run:
    from opentelemetry import trace  # first imported here, inside a run that began without it

    tracer = trace.get_tracer("app.lib", "2.0")
    with tracer.start_as_current_span("api-span", attributes={"rows": 3, "tags": ["a", "b"]}) as span:
        span.add_event("checkpoint", {"n": 1})
        trace.get_current_span().set_attribute("late", True)
        with glia_otel.track("inner-run"):
            with tracer.start_as_current_span("deepest"):
                pass
    try:
        with tracer.start_as_current_span("fails"):
            raise KeyError("missing")
    except KeyError:
        pass
    print(run.trace_id)
print(any(m.startswith("opentelemetry.sdk") for m in sys.modules))
"""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_api_imported_inside_a_run_nests_under_it_without_the_sdk(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    proc = run_python(tmp_path, API_INSIDE_A_RUN, client_env(receiver.url, tmp_path / "spool"), name="bridge.py")
    assert proc.returncode == 0, proc.stderr
    trace_hex, sdk_loaded = proc.stdout.split()
    assert sdk_loaded == "False"
    rows = {r["name"]: r for r in sql("SELECT * FROM spans")}
    assert set(rows) == {"outer", "api-span", "inner-run", "deepest", "fails"}
    assert {r["trace_id"] for r in rows.values()} == {trace_hex}
    outer, api, inner, deepest, fails = (rows[n] for n in ("outer", "api-span", "inner-run", "deepest", "fails"))
    assert outer["parent_span_id"] is None
    assert api["parent_span_id"] == outer["span_id"]
    assert inner["parent_span_id"] == api["span_id"]  # a run inside an API span is its child
    assert deepest["parent_span_id"] == inner["span_id"]
    assert fails["parent_span_id"] == outer["span_id"]
    assert api["run_kind"] is None and inner["run_kind"] == "block"
    assert api["scope_name"] == "app.lib" and outer["scope_name"] == "glia_otel"
    assert api["service_name"] == outer["service_name"] == "bridge"  # one resource for all
    attrs = _json(api["attributes"])
    assert attrs["rows"] == 3 and attrs["tags"] == ["a", "b"] and attrs["late"] is True
    (event,) = _json(api["events"])
    assert event["name"] == "checkpoint"
    assert fails["status_code"] == 2 and "KeyError" in fails["status_message"]
    assert "exception.stacktrace" in json.dumps(_json(fails["events"]))
    assert _json(outer["attributes"])["step"] == 1 and outer["peak_rss_bytes"] > 0


API_FIRST = """
import sys
from opentelemetry import trace
import glia_otel

glia_otel.configure()
tracer = trace.get_tracer("app")
with tracer.start_as_current_span("request"):
    with glia_otel.track("work"):
        with tracer.start_as_current_span("query"):
            pass
with tracer.start_as_current_span("after"):
    pass
print(type(trace.get_tracer_provider()).__name__, any(m.startswith("opentelemetry.sdk") for m in sys.modules))
"""


def test_api_imported_first_gets_glias_provider_and_runs_nest_in_api_spans(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    proc = run_python(tmp_path, API_FIRST, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["GliaTracerProvider", "False"]
    rows = {r["name"]: r for r in sql("SELECT name, span_id, parent_span_id, trace_id, run_kind FROM spans")}
    assert set(rows) == {"request", "work", "query", "after"}
    assert rows["request"]["parent_span_id"] is None
    assert rows["work"]["parent_span_id"] == rows["request"]["span_id"]
    assert rows["work"]["run_kind"] == "block"
    assert rows["query"]["parent_span_id"] == rows["work"]["span_id"]
    assert rows["after"]["parent_span_id"] is None and rows["after"]["trace_id"] != rows["work"]["trace_id"]
