"""Old history through a real receiver: a span from 2018 is stored in a partition made for its month, while the
clock faults the window is there for (an unset time, seconds read as nanoseconds) are still refused by name."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from tests.conftest import ReceiverServer
from tests.helpers import JS, Sql, post

# opentelemetry-proto's own example, examples/trace.json (upper-case hex ids, as there), dated 2018-12-13
PROTO_EXAMPLE = b"""{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0",
                "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "I'm a server span",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "kind": 2,
        "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}]
      }]
    }]
  }]
}"""


def _partitions(sql: Sql) -> set[str]:
    return {r["partition"] for r in sql("SELECT partition FROM glia_partitions() WHERE parent = 'spans'")}


def test_the_opentelemetry_proto_example_trace_of_2018_is_stored(receiver: ReceiverServer, sql: Sql) -> None:
    assert "spans_2018_12" not in _partitions(sql)
    response = post(receiver, PROTO_EXAMPLE, JS)
    assert response.status_code == 200 and response.content == b"{}", response.text
    (row,) = sql("SELECT trace_id, span_id, name, start_time, duration_ns, service_name, attributes FROM spans")
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c" and row["span_id"] == "eee19b7ec3c1b174"
    assert row["start_time"].isoformat() == "2018-12-13T14:51:00+00:00"
    assert row["duration_ns"] == 10**9 and row["service_name"] == "my.service"
    assert orjson.loads(row["attributes"]) == {"my.span.attr": "some value"}
    assert "spans_2018_12" in _partitions(sql)  # made on demand, before the request's transaction
    # an import resent stores nothing new
    assert post(receiver, PROTO_EXAMPLE, JS).status_code == 200
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 1}]


def _one_span(start_ns: int, span_id: str) -> bytes:
    span = {
        "traceId": "1" * 32,
        "spanId": span_id,
        "name": "clock",
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1000),
    }
    return orjson.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]})


def test_clock_faults_are_still_refused_and_make_no_partition(receiver: ReceiverServer, sql: Sql) -> None:
    before = _partitions(sql)
    # an unset time, and a time in seconds, milliseconds, microseconds sent as nanoseconds: all in 1970
    for i, start in enumerate((0, 1_544_712_660, 1_544_712_660_000, 1_544_712_660_000_000), start=1):
        response = post(receiver, _one_span(start, f"{i:016x}"), JS)
        assert response.status_code == 200
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "1"
        assert "outside the accepted window 2000-01-01" in partial["errorMessage"]
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
    assert _partitions(sql) == before


def test_an_age_limit_set_by_the_operator_still_applies(
    receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    receiver = receiver_factory(max_span_age_days=400)
    response = post(receiver, PROTO_EXAMPLE, JS)
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["partialSuccess"]["rejectedSpans"] == "1"
    assert "GLIA_MAX_SPAN_AGE_DAYS" in body["partialSuccess"]["errorMessage"]
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]


def test_ten_years_of_history_in_one_request_makes_its_months_partitions(receiver: ReceiverServer, sql: Sql) -> None:
    spans = []
    for i in range(120):  # one span in each month of 2010..2019
        start = int(datetime(2010 + i // 12, i % 12 + 1, 15, tzinfo=UTC).timestamp()) * 10**9
        spans.append(
            {
                "traceId": "2" * 32,
                "spanId": f"{i + 1:016x}",
                "name": f"m{i}",
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(start + 1000),
            }
        )
    body = orjson.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": spans}]}]})
    response = post(receiver, body, JS)
    assert response.status_code == 200 and response.content == b"{}", response.text
    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 120}]
    made = {p for p in _partitions(sql) if p < "spans_2020"}
    assert made == {f"spans_{2010 + i // 12}_{i % 12 + 1:02d}" for i in range(120)}
