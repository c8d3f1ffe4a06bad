"""Pure helpers of the client: spool names, `glia run` arguments, exit codes, script detection."""

from __future__ import annotations

import os
import signal

import pytest

from glia_otel._resource import host_arch, script_of_command, service_name_for
from glia_otel._run import UsageError, exit_code_of, parse_args
from glia_otel._spool import parse_name, spool_name


def test_spool_names_round_trip() -> None:
    name = spool_name("traces", "pb", True)
    assert name.endswith(".pb.gz") and not name.startswith("metrics-")
    signal_, ts, ext, gz = parse_name(name) or ("", 0, "", False)
    assert (signal_, ext, gz) == ("traces", "pb", True) and ts > 0
    assert parse_name(spool_name("metrics", "json", False))[0::2] == ("metrics", "json")  # type: ignore[index]
    for bad in ("x.tmp", "123-1-ab.pb.gz.tmp", "abc-1-ff.pb", "1-2-3.txt", "1-2-3.pb.gz.rejected"):
        assert parse_name(bad) is None, bad


def _older_parse_name(name: str) -> tuple[str, int] | None:
    """glia_otel 0.x's reading of a spool name (before the logs signal), kept here verbatim in what it decides."""
    signal, rest = "traces", name
    if rest.startswith("metrics-"):
        signal, rest = "metrics", rest[len("metrics-") :]
    rest = rest.removesuffix(".gz")
    stem, _, ext = rest.rpartition(".")
    if ext not in ("pb", "json"):
        return None
    ts = stem.split("-", 1)[0]
    return (signal, int(ts)) if ts.isdigit() else None


def test_spool_names_carry_their_signal_and_older_names_still_read() -> None:
    for signal_ in ("traces", "metrics", "logs"):
        name = spool_name(signal_, "pb", True)
        assert name.startswith(f"{signal_}-")
        assert parse_name(name)[0] == signal_  # type: ignore[index]
        # an older client never posts a new file to another path than its signal's: it skips it or reads it right
        older = _older_parse_name(name)
        assert older is None or older[0] == signal_, (name, older)
    # what older clients and the R client wrote
    assert parse_name("1700000000000000000-12-abcd0123.pb.gz") == ("traces", 1700000000000000000, "pb", True)
    assert parse_name("1700000000000000000-12-abcd0123.json") == ("traces", 1700000000000000000, "json", False)
    assert parse_name("metrics-1700000000000000000-12-ab.pb")[0] == "metrics"  # type: ignore[index]
    assert parse_name("logs-x-1-ab.pb") is None and parse_name("spans-1-1-ab.pb") is None
    with pytest.raises(ValueError):
        spool_name("profiles", "pb", False)


def test_parse_run_args() -> None:
    assert parse_args(["--name", "n", "--attr", "a=1", "--attr=b=2=3", "--no-args", "--", "ls", "-l"]) == (
        "n",
        {"a": "1", "b": "2=3"},
        False,
        ["ls", "-l"],
    )
    assert parse_args(["ls", "--name", "x"]) == (None, {}, True, ["ls", "--name", "x"])
    assert parse_args([]) == (None, {}, True, [])
    for bad in (["--attr", "novalue", "--", "x"], ["--bogus", "x"], ["--name"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def test_exit_codes_like_a_shell() -> None:
    assert exit_code_of(3 << 8) == 3
    assert exit_code_of(signal.SIGKILL) == 128 + 9
    assert exit_code_of(0) == 0


def test_script_of_command(tmp_path: os.PathLike[str]) -> None:
    script = os.path.join(tmp_path, "align.py")
    open(script, "w").close()
    assert script_of_command(["python3", "-u", script, "--x"]) == script
    assert script_of_command(["Rscript", script]) == script
    assert script_of_command(["python3", "-c", "print(1)"]) is None
    assert script_of_command([script]) == script
    assert script_of_command(["ls", script]) is None
    assert service_name_for("/a/b/align.py") == "align"
    assert service_name_for("sort") == "sort"
    assert host_arch("x86_64") == "amd64" and host_arch("aarch64") == "arm64"


def test_split_url_and_unquote() -> None:
    from glia_otel._config import split_url, unquote

    assert split_url("http://localhost:4318/v1/traces") == ("http", "localhost", 4318, "/v1/traces")
    assert split_url("https://user@collector.example") == ("https", "collector.example", 443, "/")
    assert split_url("http://[::1]:9/x?y=1") == ("http", "::1", 9, "/x?y=1")
    for bad in ("localhost:4318", "http://", "http://h:0", "http://h:port", "grpc://h:4317"):
        with pytest.raises(ValueError):
            split_url(bad)
    assert unquote("Bearer%20abc%2C%zz%") == "Bearer abc,%zz%"
    assert unquote("caf%C3%A9") == "café"


def test_uuid4_and_proc_io_parsing() -> None:
    import uuid

    from glia_otel._measure import parse_io
    from glia_otel._resource import uuid4

    value = uuid.UUID(uuid4())
    assert value.version == 4 and value.variant == uuid.RFC_4122
    text = b"rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"
    assert parse_io(text) == (4096, 8192)
    assert parse_io(b"") == (0, 0)


def test_rpc_status_message_from_protobuf_and_json_bodies() -> None:
    from google.rpc import status_pb2

    from glia_otel._export import rpc_status_message

    pb = status_pb2.Status(code=3, message="request body over 1024 bytes").SerializeToString()
    assert rpc_status_message(pb, "application/x-protobuf") == "request body over 1024 bytes"
    assert rpc_status_message(b'{"code": 3, "message": "bad json"}', "application/json") == "bad json"
    assert rpc_status_message(b"\xff\xff", "application/x-protobuf") == ""
    assert rpc_status_message(b"", "application/json") == ""


def test_one_rule_for_what_an_answer_means() -> None:
    from glia_otel._export import KEEP, NO_ANSWER, REJECTED, SENT, outcome

    assert [outcome(s) for s in (200, 204, 299)] == [SENT] * 3
    # Down, busy, or the endpoint is misconfigured: the same bytes will do later.
    assert {outcome(s) for s in (NO_ANSWER, 429, 502, 503, 504, 401, 403, 404, 405, 407, 408)} == {KEEP}
    # Refused for what they are: sending them again as they are cannot help.
    assert {outcome(s) for s in (400, 413, 415, 422, 500, 501)} == {REJECTED}
