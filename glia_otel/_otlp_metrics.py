"""A small hand-written encoder of OTLP `ExportMetricsServiceRequest` protobuf bytes, for glia's process samples.

The same reason as `_otlp.py` for spans: the generated protobuf modules and the metrics SDK cost hundreds of
milliseconds to import, more than a second of sampling is worth. Only what glia sends is written: Sum metrics
(cumulative; monotonic for counters such as `process.cpu.time`, not for `process.memory.usage`) of number points.
Field numbers are opentelemetry-proto's metrics.proto; `tests/unit/test_client_metrics.py` decodes the output with
the generated classes.
"""

from __future__ import annotations

import struct

from ._otlp import _attributes, _fixed64, _key, _len, _str

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    # (start_time_unix_nano, time_unix_nano, attributes, value): an int value is sent as `as_int`, a float as
    # `as_double`; the start is when the cumulative value began counting (the run's start)
    Point = tuple[int, int, Mapping[str, Any], int | float]

_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_CUMULATIVE = 2  # AggregationTemporality


class SumMetric:
    """One metric of cumulative number points (a plain class: `dataclasses` is slow to import)."""

    __slots__ = ("description", "monotonic", "name", "points", "unit")

    def __init__(self, name: str, unit: str, description: str, monotonic: bool, points: Sequence[Point]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.monotonic = monotonic
        self.points = points


def _number_point(point: Point) -> bytes:
    start_ns, time_ns, attrs, value = point
    if isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
        number = _key(6, 1) + _I64.pack(value)  # as_int (sfixed64)
    else:
        number = _key(4, 1) + _F64.pack(float(value))  # as_double
    return _attributes(7, attrs) + _fixed64(2, start_ns) + _fixed64(3, time_ns) + number


def encode_metric(m: SumMetric) -> bytes:
    """Encode one Metric message holding a Sum."""
    points = b"".join(_len(1, _number_point(p)) for p in m.points)
    data = points + _key(2, 0) + bytes([_CUMULATIVE])
    if m.monotonic:
        data += _key(3, 0) + b"\x01"
    return _str(1, m.name) + _str(2, m.description) + _str(3, m.unit) + _len(7, data)


def encode_metrics_request(
    resource: Mapping[str, Any], scope_name: str, scope_version: str, metrics: Iterable[SumMetric]
) -> bytes:
    """Encode an ExportMetricsServiceRequest of one resource and one scope."""
    scope = _str(1, scope_name) + _str(2, scope_version)
    scope_metrics = _len(1, scope) + b"".join(_len(2, encode_metric(m)) for m in metrics if m.points)
    return _len(1, _len(1, _attributes(1, resource)) + _len(2, scope_metrics))
