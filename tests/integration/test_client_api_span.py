"""The rest of the OpenTelemetry API's `Span` on the spans glia hands the API inside a run (no SDK): renaming,
links, status, events, attribute values the SDK would drop, and a span used as its own context manager. The rows in
PostgreSQL say what each call did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env, run_python

SPAN_API = """
import sys
import glia_otel
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

tracer = trace.get_tracer("lib")
with glia_otel.track("run"):
    with tracer.start_as_current_span("draft") as first:
        first.update_name("renamed")
        first.set_attribute("text", b"utf-8 bytes")
        first.set_attribute("blob", b"\\xff\\xfe")
        first.set_attributes({"object": object(), "kept": 7})
        first.add_event("checkpoint", {"step": 3})
        first.set_status(StatusCode.OK)
        print(first.is_recording())
    first.update_name("too late")
    print(first.is_recording())
    linked = tracer.start_span("linked")
    linked.add_link(first.get_span_context(), {"why": "retry"})
    linked.add_link(trace.INVALID_SPAN_CONTEXT)
    linked.set_status(Status(StatusCode.ERROR, "three samples failed"))
    linked.end()
    try:
        with tracer.start_span("own-context") as own:
            raise ValueError("no reads")
    except ValueError:
        pass
    quiet = tracer.start_span("quiet", record_exception=False, set_status_on_exception=False)
    try:
        with quiet:
            raise KeyError("x")
    except KeyError:
        pass
print(any(m.startswith("opentelemetry.sdk") for m in sys.modules))
"""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_the_span_api_on_glias_spans(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    proc = run_python(tmp_path, SPAN_API, client_env(receiver.url, tmp_path / "spool"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "False"]  # recording until it ends; the SDK never imported
    rows = {r["name"]: r for r in sql("SELECT * FROM spans")}
    assert set(rows) == {"run", "renamed", "linked", "own-context", "quiet"}, "a name set after the end is ignored"

    renamed = rows["renamed"]
    attrs = _json(renamed["attributes"])
    assert attrs["text"] == "utf-8 bytes" and attrs["kept"] == 7
    assert "blob" not in attrs and "object" not in attrs, "what the SDK would drop is dropped"
    assert "dropped an attribute of type object (key 'object')" in proc.stderr, proc.stderr
    assert [e["name"] for e in _json(renamed["events"])] == ["checkpoint"]
    assert renamed["status_code"] == 1  # OK

    linked = rows["linked"]
    (link,) = _json(linked["links"])  # the invalid context is not a link
    assert link == {"trace_id": renamed["trace_id"], "span_id": renamed["span_id"], "attributes": {"why": "retry"}}
    assert (linked["status_code"], linked["status_message"]) == (2, "three samples failed")

    own = rows["own-context"]
    assert (own["status_code"], own["status_message"]) == (2, "ValueError: no reads")
    assert "ValueError" in json.dumps(_json(own["events"]))
    quiet = rows["quiet"]
    assert quiet["status_code"] != 2 and not _json(quiet["events"]), "told not to record the exception, it does not"
    for name in ("renamed", "linked", "own-context", "quiet"):
        assert rows[name]["parent_span_id"] == rows["run"]["span_id"], name
