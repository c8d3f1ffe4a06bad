"""The receiver's derived values and its error model, without I/O: the settings the database commands read without
pydantic agree with the receiver's, the flatten and read limits come from the settings, and every error is rendered
by one rule (Retry-After on what is retryable, its headers, its status)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import annotated_types
import orjson
import pytest
from google.rpc import code_pb2, status_pb2
from starlette.requests import Request

from receiver import decode, errors, flatten, http_errors
from receiver.command_settings import CommandSettings
from receiver.query import ReadLimits
from receiver.settings import Settings


def _lower_bound(name: str) -> int | None:
    for item in Settings.model_fields[name].metadata:
        if isinstance(item, annotated_types.Ge):
            return int(item.ge)  # type: ignore[call-overload]
    return None


def test_command_settings_have_the_receivers_names_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("GLIA_")]:
        monkeypatch.delenv(key)
    receiver, command = Settings(), CommandSettings.load({})
    for f in dataclasses.fields(CommandSettings):
        assert f.name in Settings.model_fields, f"{f.name}: not a setting of the receiver"
        assert getattr(command, f.name) == getattr(receiver, f.name), f"{f.name}: the defaults differ"
        bound = _lower_bound(f.name)
        if bound is not None:
            variable = f"GLIA_{f.name.upper()}"
            with pytest.raises(ValueError, match=variable):
                CommandSettings.load({variable: str(bound - 1)})
            assert getattr(CommandSettings.load({variable: str(bound)}), f.name) == bound


def test_command_settings_take_arguments_then_variables_then_defaults() -> None:
    env = {"GLIA_DATABASE_URL": "postgresql://env/db", "GLIA_DATA_DIR": "/env/dir", "GLIA_API_RESPONSE_BYTES": "70000"}
    loaded = CommandSettings.load(env, database_url=None, data_dir=None)
    assert (loaded.database_url, loaded.data_dir, loaded.api_response_bytes) == (
        "postgresql://env/db",
        Path("/env/dir"),
        70000,
    )
    given = CommandSettings.load(env, database_url="postgresql://arg/db", data_dir=Path("/arg"))
    assert (given.database_url, given.data_dir) == ("postgresql://arg/db", Path("/arg"))
    assert CommandSettings.load({"GLIA_DATABASE_URL": ""}).database_url is None
    with pytest.raises(ValueError, match="GLIA_READ_STATEMENT_TIMEOUT_MS='soon' is not a whole number"):
        CommandSettings.load({"GLIA_READ_STATEMENT_TIMEOUT_MS": "soon"})


def test_read_limits_come_from_either_settings_alike() -> None:
    given: dict[str, Any] = {
        "read_statement_timeout_ms": 1234,
        "api_response_bytes": 100_000,
        "api_list_value_chars": 77,
        "api_list_row_bytes": 2048,
        "api_detail_value_chars": 99,
    }
    limits = ReadLimits.from_settings(Settings(**given))
    assert limits == ReadLimits.from_settings(CommandSettings(**given))
    assert limits == ReadLimits(1234, 100_000, 77, 2048, 99)


def test_flatten_limits_come_from_the_settings() -> None:
    settings = Settings(
        max_attributes_per_span=3,
        max_attribute_value_bytes=300,
        max_events_per_span=4,
        max_span_age_days=5,
        max_span_future_days=6,
    )
    assert flatten.Limits.from_settings(settings) == flatten.Limits(3, 300, 4, 5, 6)
    # and the defaults agree: a Limits() made anywhere (bench, tests) is what a receiver uses unconfigured
    assert flatten.Limits.from_settings(Settings()) == flatten.Limits()


def _request(path: str, content_type: str | None = None) -> Request:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    return Request({"type": "http", "method": "GET", "path": path, "headers": headers, "query_string": b""})


@pytest.mark.parametrize(
    ("exc", "status", "headers"),
    [
        (errors.Unavailable("db away"), 503, {"retry-after": "7"}),
        (errors.LockNotGranted("busy"), 503, {"retry-after": "7"}),
        (errors.BadRequest("bad"), 400, {}),
        (errors.Unauthenticated("no key"), 401, {"www-authenticate": "Bearer"}),
        (errors.PermissionDenied("other scope"), 403, {}),
        (errors.MethodNotAllowed("GET"), 405, {"allow": "POST"}),
        (errors.PayloadTooLarge("big"), 413, {}),
        (errors.InternalError(), 500, {}),
    ],
)
def test_one_rule_renders_every_error(exc: errors.RequestError, status: int, headers: dict[str, str]) -> None:
    protobuf = http_errors.render(_request("/v1/traces", "application/x-protobuf"), exc, retry_after=7)
    json_otlp = http_errors.render(_request("/v1/metrics", "application/json"), exc, retry_after=7)
    api = http_errors.render(_request("/api/runs"), exc, retry_after=7)
    for response in (protobuf, json_otlp, api):
        assert response.status_code == status
        got = {k: v for k, v in response.headers.items() if k in ("retry-after", "www-authenticate", "allow")}
        assert got == headers, (response, got)
    assert protobuf.headers["content-type"] == decode.PROTOBUF
    status_message = status_pb2.Status.FromString(bytes(protobuf.body))
    assert status_message.message == exc.message and status_message.code != code_pb2.OK
    assert orjson.loads(json_otlp.body) == {"code": status_message.code, "message": exc.message}
    assert orjson.loads(api.body) == {"detail": exc.message}


def test_a_new_retryable_error_gets_retry_after_by_its_flag_alone() -> None:
    class Throttled(errors.RequestError):
        status_code = 429
        retryable = True

    response = http_errors.render(_request("/v1/traces", "application/json"), Throttled("slow down"), retry_after=3)
    assert response.status_code == 429 and response.headers["retry-after"] == "3"


def test_an_invalid_query_is_fastapis_422_shape_and_a_usage_error() -> None:
    named = errors.InvalidQuery("since", "is not a time")
    body = orjson.loads(http_errors.render(_request("/api/runs"), named, retry_after=2).body)
    assert body == {"detail": [{"loc": ["query", "since"], "msg": "is not a time", "type": "value_error"}]}
    unnamed = errors.InvalidQuery(None, "PostgreSQL refused a value")
    assert orjson.loads(http_errors.render(_request("/api/runs"), unnamed, retry_after=2).body)["detail"][0]["loc"] == [
        "query"
    ]
    # the commands print str() and exit 2 for a ValueError
    assert isinstance(named, ValueError) and str(named) == "since: is not a time"


def test_every_exception_of_the_receiver_is_a_glia_error() -> None:
    import inspect

    import receiver

    modules = [p.stem for p in Path(receiver.__file__).parent.glob("*.py") if p.stem != "__init__"]
    defined = []
    for name in modules:
        module = __import__(f"receiver.{name}", fromlist=["_"])
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                defined.append(f"{module.__name__}.{value.__name__}")
    # only errors.py defines exceptions (the private _Unfit of flatten is control flow inside one function)
    assert [d for d in defined if not d.startswith("receiver.errors.")] == ["receiver.flatten._Unfit"]
