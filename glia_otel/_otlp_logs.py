"""A small hand-written encoder of OTLP `ExportLogsServiceRequest` protobuf bytes, for the stderr tails `glia run
--keep-stderr` keeps.

The same reason as `_otlp.py` for spans: `glia run` imports nothing of protobuf. Field numbers are
opentelemetry-proto's logs.proto; `tests/unit/test_client_stderr.py` decodes the output with the generated classes.
"""

from __future__ import annotations

from ._otlp import _U32, _attributes, _fixed64, _key, _len, _str, _uint, any_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any


class LogData:
    """The fields of one log record, enough for what glia sends (a plain class: `dataclasses` is slow to import)."""

    __slots__ = ("attributes", "body", "event_name", "observed_ns", "severity", "span_id", "time_ns", "trace_id")

    def __init__(
        self,
        time_ns: int,
        body: Any,
        attributes: Mapping[str, Any] | None = None,
        trace_id: int = 0,
        span_id: int = 0,
        observed_ns: int = 0,
        severity: int = 0,  # SEVERITY_NUMBER_UNSPECIFIED
        event_name: str = "",
    ) -> None:
        self.time_ns = time_ns
        self.body = body
        self.attributes = attributes or {}
        self.trace_id = trace_id
        self.span_id = span_id
        self.observed_ns = observed_ns or time_ns
        self.severity = severity
        self.event_name = event_name


def encode_log(r: LogData) -> bytes:
    """Encode one LogRecord message."""
    out = [_fixed64(1, r.time_ns), _uint(2, r.severity), _len(5, any_value(r.body)), _attributes(6, r.attributes)]
    if r.trace_id:
        out.append(_key(8, 5) + _U32.pack(1))  # flags: sampled, as the span it belongs to
        out.append(_len(9, r.trace_id.to_bytes(16, "big")))
    if r.span_id:
        out.append(_len(10, r.span_id.to_bytes(8, "big")))
    out += [_fixed64(11, r.observed_ns), _str(12, r.event_name)]
    return b"".join(out)


def encode_logs_request(
    resource: Mapping[str, Any], scope_name: str, scope_version: str, records: Iterable[LogData]
) -> bytes:
    """Encode an ExportLogsServiceRequest of one resource and one scope."""
    scope = _str(1, scope_name) + _str(2, scope_version)
    scope_logs = _len(1, scope) + b"".join(_len(2, encode_log(r)) for r in records)
    return _len(1, _len(1, _attributes(1, resource)) + _len(2, scope_logs))
