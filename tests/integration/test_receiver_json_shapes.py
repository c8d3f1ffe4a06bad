"""OTLP/JSON bodies of the wrong shape at each level: a request whose structure is wrong is a 400 naming the place;
an item (span, metric, link, exemplar) that is wrong is rejected alone, with partial success, and the rest stored.
Hex ids in links and exemplars are read as hex, as the OTLP/JSON spec says."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest

from tests.conftest import ReceiverServer
from tests.helpers import JS, Sql, json_body, json_span, post

TRACE_HEX, SPAN_HEX = "ab" * 16, "cd" * 8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [42]}', "resourceSpans[0] is not an object"),
        (b'{"resourceSpans": [{"scopeSpans": [7]}]}', "resourceSpans[0].scopeSpans[0] is not an object"),
        (
            b'{"resourceSpans": [{"resource": 5, "scopeSpans": []}]}',
            "resourceSpans[0].resource must be an object, not int",
        ),
    ],
)
def test_a_request_of_the_wrong_structure_is_400_naming_the_place(
    receiver: ReceiverServer, sql: Sql, body: bytes, message: str
) -> None:
    response = post(receiver, body, JS)
    assert response.status_code == 400
    assert response.json() == {"code": 3, "message": message}
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_wrong_spans_and_links_are_rejected_alone_and_hex_link_ids_stored(receiver: ReceiverServer, sql: Sql) -> None:
    linked = json_span(span_id="0" * 15 + "3", links=[{"traceId": TRACE_HEX, "spanId": SPAN_HEX}])
    not_an_object: Any = 42
    body = json_body(not_an_object, {}, json_span(span_id="0" * 15 + "2", links=["x"]), linked)
    response = post(receiver, body, JS)
    assert response.status_code == 200
    where = "resourceSpans[0].scopeSpans[0].spans"
    assert response.json() == {
        "partialSuccess": {
            "rejectedSpans": "3",
            "errorMessage": f"{where}[0]: not an object; {where}[1]: traceId is missing;"
            f" {where}[2]: links[0] is not an object",
        }
    }
    (row,) = sql("SELECT span_id, links FROM spans")
    assert row["span_id"] == "0" * 15 + "3"
    assert _json(row["links"]) == [{"trace_id": TRACE_HEX, "span_id": SPAN_HEX, "attributes": {}}]


def _metrics(*metrics: Any) -> bytes:
    return orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": list(metrics)}]}]})


def test_wrong_metrics_and_exemplars_are_rejected_alone_and_hex_exemplar_ids_stored(
    receiver: ReceiverServer, sql: Sql
) -> None:
    now = str(time.time_ns())
    bad_exemplar = {"name": "bad", "gauge": {"dataPoints": [{"asDouble": 1, "timeUnixNano": now, "exemplars": [3]}]}}
    exemplar = {"traceId": TRACE_HEX, "spanId": SPAN_HEX, "asDouble": 2, "timeUnixNano": now}
    good = {"name": "good", "gauge": {"dataPoints": [{"asDouble": 1, "timeUnixNano": now, "exemplars": [exemplar]}]}}
    response = post(receiver, _metrics(42, bad_exemplar, good), JS, "/v1/metrics")
    assert response.status_code == 200
    where = "resourceMetrics[0].scopeMetrics[0].metrics"
    assert response.json() == {
        "partialSuccess": {
            "rejectedDataPoints": "2",
            "errorMessage": f"{where}[0]: not an object; {where}[1]: dataPoints[0].exemplars[0] is not an object",
        }
    }
    (row,) = sql("SELECT metric_name, value, trace_id, span_id FROM metric_points")
    assert row == {"metric_name": "good", "value": 1.0, "trace_id": TRACE_HEX, "span_id": SPAN_HEX}
