"""Process samples without I/O: the hand-written OTLP metrics encoder read back by the generated classes, and the
sampling schedule (the ramp, the fixed interval, the bound)."""

from __future__ import annotations

import itertools
import math

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from glia_otel import _metrics, _run
from glia_otel._metrics import MAX_SAMPLES, _Timeline, encode_samples, next_offset
from glia_otel._otlp_metrics import SumMetric, encode_metrics_request


def _attrs(point: object) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in point.attributes}  # type: ignore[attr-defined]


def test_encoded_metrics_decode_with_generated_classes() -> None:
    body = encode_metrics_request(
        {"service.name": "svc", "service.instance.id": "abc"},
        "glia_otel",
        "1.2.3",
        [
            SumMetric("process.cpu.time", "s", "cpu", True, [(10, 20, {"type": "user"}, 1.5), (10, 30, {}, 2.25)]),
            SumMetric("process.memory.usage", "By", "rss", False, [(10, 20, {"glia.scope": "tree"}, 2**40 + 3)]),
            SumMetric("process.thread.count", "{thread}", "", False, []),  # no points: left out
        ],
    )
    req = ExportMetricsServiceRequest.FromString(body)
    (rm,) = req.resource_metrics
    assert {kv.key: kv.value.string_value for kv in rm.resource.attributes} == {
        "service.name": "svc",
        "service.instance.id": "abc",
    }
    (sm,) = rm.scope_metrics
    assert (sm.scope.name, sm.scope.version) == ("glia_otel", "1.2.3")
    cpu, memory = sm.metrics
    assert (cpu.name, cpu.unit, cpu.description, cpu.WhichOneof("data")) == ("process.cpu.time", "s", "cpu", "sum")
    assert cpu.sum.is_monotonic and cpu.sum.aggregation_temporality == AggregationTemporality.Value(
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    )
    first, second = cpu.sum.data_points
    assert (first.start_time_unix_nano, first.time_unix_nano, first.as_double) == (10, 20, 1.5)
    assert _attrs(first) == {"type": "user"} and _attrs(second) == {} and second.as_double == 2.25
    assert not memory.sum.is_monotonic and memory.unit == "By"
    (point,) = memory.sum.data_points
    assert point.WhichOneof("value") == "as_int" and point.as_int == 2**40 + 3
    assert _attrs(point) == {"glia.scope": "tree"}


def test_samples_become_the_series_the_page_reads() -> None:
    samples: list[_metrics.Sample] = [
        (100, 100, "t" * 32, "s" * 16, None, 0.0, 0.0, None),  # the zero point: CPU only
        (100, 200, "t" * 32, "s" * 16, 4096, 0.5, 0.25, 3),
    ]
    req = ExportMetricsServiceRequest.FromString(encode_samples({"service.name": "x"}, samples, {"glia.scope": "tree"}))
    metrics = {m.name: m for m in req.resource_metrics[0].scope_metrics[0].metrics}
    assert set(metrics) == {"process.memory.usage", "process.cpu.time", "process.thread.count"}
    link = {"glia.trace_id": "t" * 32, "glia.span_id": "s" * 16, "glia.scope": "tree"}
    cpu = [(p.time_unix_nano, _attrs(p)["type"], p.as_double) for p in metrics["process.cpu.time"].sum.data_points]
    assert cpu == [(100, "user", 0.0), (100, "system", 0.0), (200, "user", 0.5), (200, "system", 0.25)]
    assert all(p.start_time_unix_nano == 100 for p in metrics["process.cpu.time"].sum.data_points)
    (rss,) = metrics["process.memory.usage"].sum.data_points
    assert (rss.time_unix_nano, rss.as_int, _attrs(rss)) == (200, 4096, link)
    assert metrics["process.thread.count"].sum.data_points[0].as_int == 3


def _schedule(fixed: float | None = None) -> list[float]:
    times: list[float] = []
    offset = next_offset(0, 0.0, fixed)
    while offset is not None:
        times.append(offset)
        offset = next_offset(len(times), offset, fixed)
    return times


def test_the_ramp_samples_early_then_less_often() -> None:
    times = _schedule()
    assert times[:10] == [float(s) for s in range(1, 11)]  # every second for the first 10 (Nextflow's ramp)
    assert times[10:12] == [15.0, 20.0] and times[119] - times[118] == 5.0  # then every 5 s to the 120th
    assert times[120] - times[119] == 30.0  # then every 30 s
    assert sum(t <= 4.0 for t in times) >= 3  # a 4 s run: at least 3 samples
    assert not any(t < 1.0 for t in times)  # a run within its first second: none
    assert _run._FIRST_SAMPLE_S == _metrics.FIRST_SAMPLE_S == times[0]
    assert sum(t <= 60 for t in times) == 20


def test_the_number_of_samples_is_bounded_however_long_the_run() -> None:
    times = _schedule()
    assert len(times) == MAX_SAMPLES
    assert times[-1] > 50 * 365 * 86400  # the bound is reached only after decades
    for start in (3600.0, 86400.0, 30 * 86400.0):  # each doubling of the run's length adds at most 42 samples
        assert sum(start < t <= 2 * start for t in times) <= math.ceil(60 * math.log(2))
    assert len(_schedule(0.001)) == MAX_SAMPLES  # a tiny fixed interval too


def test_a_fixed_interval_replaces_the_ramp() -> None:
    times = _schedule(2.5)
    assert times[:500] == [2.5 * (i + 1) for i in range(500)]
    assert all(b - a >= 2.5 for a, b in itertools.pairwise(times))


def test_late_slots_are_skipped_not_taken_in_a_burst() -> None:
    timeline = _Timeline(0, 100.0, None)
    assert timeline.due == 101.0
    timeline.advance(104.5)  # the first sample came 3.5 s late
    assert timeline.due == 105.0 and timeline.taken == 1
    timeline.advance(105.0)
    assert timeline.due == 106.0
