"""The pure parts of `glia run --keep-stderr`: the switch, the tail cut to whole lines, the redaction, and the log
record's bytes read back with the generated protobuf classes."""

from __future__ import annotations

import os

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from glia_otel import _stderr
from glia_otel._otlp_logs import LogData, encode_logs_request


def test_the_switch_and_its_variable() -> None:
    assert _stderr.take_option(["--keep-stderr", "--", "x"]) == (["--", "x"], "")
    assert _stderr.take_option(["--name", "--keep-stderr", "--keep-stderr=always", "x"]) == (
        ["--name", "--keep-stderr", "x"],
        "always",
    )
    assert _stderr.take_option(["--", "cmd", "--keep-stderr"]) == (["--", "cmd", "--keep-stderr"], None)
    assert _stderr.take_option(["cmd", "--keep-stderr"]) == (["cmd", "--keep-stderr"], None)
    assert _stderr.resolve("", {}) == "failed"
    assert _stderr.resolve("always", {}) == "always"
    assert _stderr.resolve("never", {"GLIA_KEEP_STDERR": "always"}) is None
    assert _stderr.resolve(None, {"GLIA_KEEP_STDERR": "TRUE"}) == "failed"
    assert _stderr.resolve(None, {"GLIA_KEEP_STDERR": "0"}) is None
    assert _stderr.resolve(None, {}) is None
    with pytest.raises(ValueError, match="GLIA_KEEP_STDERR='sometimes'"):
        _stderr.resolve(None, {"GLIA_KEEP_STDERR": "sometimes"})
    assert _stderr.wrapper_options({"GLIA_KEEP_STDERR": "yes"}) == ["--keep-stderr"]
    assert _stderr.wrapper_options({"GLIA_KEEP_STDERR": "always"}) == ["--keep-stderr=always"]
    assert _stderr.wrapper_options({"GLIA_KEEP_STDERR": "off"}) == []
    assert _stderr.wrapper_options({}) == []


def test_the_tail_is_whole_lines_at_most_64() -> None:
    assert _stderr.tail_lines(0, b"") == ([], False)
    assert _stderr.tail_lines(6, b"a\nb\nc\n") == (["a", "b", "c"], False)
    assert _stderr.tail_lines(5, b"a\nb\nc") == (["a", "b", "c"], False)  # no final newline
    # more was written than kept: the first kept line lost its start, and is dropped
    assert _stderr.tail_lines(100, b"tail of x\nb\nc\n") == (["b", "c"], True)
    # ... unless it is all there is (one very long line)
    assert _stderr.tail_lines(100, b"end of a long line") == (["end of a long line"], True)
    many = b"".join(b"%d\n" % i for i in range(100))
    lines, cut = _stderr.tail_lines(len(many), many)
    assert lines == [str(i) for i in range(36, 100)] and cut
    assert _stderr.tail_lines(3, b"\xff\xfe\n") == (["\ufffd\ufffd"], False)


def test_the_tail_file_round_trips() -> None:
    fd = _stderr.tail_file()
    try:
        assert _stderr.read_tail(fd) == (0, b"")
        _stderr.write_tail(fd, 123456, b"x" * 100)
        assert _stderr.read_tail(fd) == (123456, b"x" * 100)
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_each_line_is_redacted_by_the_command_line_rules() -> None:
    assert _stderr.redact_line("  run --token  s3cr3t now") == "  run --token  [REDACTED] now"
    assert _stderr.redact_line("DB_PASSWORD=x ok") == "DB_PASSWORD=[REDACTED] ok"
    assert _stderr.redact_line("fetch https://u:p@h/x\tdone ") == "fetch https://u:[REDACTED]@h/x\tdone "
    assert _stderr.redact_line("--password") == "--password"  # nothing follows on the line
    assert _stderr.redact_line("plain text, nothing secret") == "plain text, nothing secret"


def test_the_record_decodes_with_the_generated_classes() -> None:
    body = _stderr.log_request(
        {"service.name": "align", "process.pid": 7}, 0xABC, 0xDEF, 1_700_000_000_000_000_000, ["x --pass y"], 99, True
    )
    request = ExportLogsServiceRequest.FromString(body)
    (rl,) = request.resource_logs
    assert {kv.key for kv in rl.resource.attributes} == {"service.name", "process.pid"}
    (sl,) = rl.scope_logs
    assert sl.scope.name == "glia_otel.run"
    (record,) = sl.log_records
    assert record.time_unix_nano == 1_700_000_000_000_000_000
    assert record.observed_time_unix_nano >= record.time_unix_nano
    assert record.trace_id == (0xABC).to_bytes(16, "big") and record.span_id == (0xDEF).to_bytes(8, "big")
    assert record.flags == 1 and record.severity_number == 0
    assert record.body.string_value == "x --pass [REDACTED]"
    assert record.event_name == "glia.run.stderr"
    attributes = {kv.key: kv.value for kv in record.attributes}
    assert attributes["log.iostream"].string_value == "stderr"
    assert attributes["glia.stderr.lines"].int_value == 1 and attributes["glia.stderr.bytes"].int_value == 99
    assert attributes["glia.stderr.truncated"].bool_value is True


def test_a_record_outside_a_span_has_no_ids() -> None:
    request = ExportLogsServiceRequest.FromString(encode_logs_request({}, "s", "1", [LogData(5, {"k": [1, "v"]})]))
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id == b"" and record.span_id == b"" and record.flags == 0
    assert record.observed_time_unix_nano == 5
    assert record.body.kvlist_value.values[0].key == "k"
