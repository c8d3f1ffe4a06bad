"""Settings from OTEL_*/GLIA_* variables: the SDK's precedence, and ValueError for malformed values."""

from __future__ import annotations

import pytest

from glia_otel._config import load_settings


def test_defaults() -> None:
    s = load_settings({"HOME": "/home/ada"})
    assert s.traces_endpoint == "http://localhost:4318/v1/traces"
    assert s.metrics_endpoint == "http://localhost:4318/v1/metrics"
    assert s.traces_compression == "gzip"
    assert s.traces_timeout_s == 10.0
    assert s.export_deadline_s == 0.25
    assert s.spool_dir == "/home/ada/.local/state/glia/spool"
    assert s.spool_max_bytes == 100 * 1024 * 1024
    assert not s.disabled and s.record_args and s.metrics_enabled


def test_precedence_argument_signal_generic() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom/path",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Bearer%20x",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
    }
    s = load_settings(env)
    assert s.traces_endpoint == "http://traces:9999/custom/path"  # signal-specific: used as is
    assert s.metrics_endpoint == "http://collector:4318/v1/metrics"  # generic: path appended
    assert s.traces_headers == {"authorization": "Bearer x"}
    assert s.metrics_headers == {"a": "1", "b": "2"}
    assert s.traces_timeout_s == 2.0 and s.metrics_timeout_s == 0.5
    assert s.traces_compression == "none"
    assert load_settings(env, endpoint="http://arg:1").traces_endpoint == "http://arg:1/v1/traces"


def test_service_name_and_resource_attributes() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "lab=genomics,service.name=from-res,team=a%2Cb"}
    s = load_settings(env)
    assert s.service_name == "from-res"
    assert s.resource_attributes == {"lab": "genomics", "service.name": "from-res", "team": "a,b"}
    assert load_settings({**env, "OTEL_SERVICE_NAME": "svc"}).service_name == "svc"
    assert load_settings(env, service_name="arg").service_name == "arg"


def test_glia_variables() -> None:
    env = {
        "GLIA_SPOOL_DIR": "/tmp/x",
        "GLIA_EXPORT_DEADLINE_MS": "100",
        "GLIA_SPOOL_MAX_BYTES": "1000",
        "GLIA_RECORD_ARGS": "false",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "2000",
    }
    s = load_settings(env)
    assert s.spool_dir == "/tmp/x"
    assert s.export_deadline_s == 0.1
    assert s.spool_max_bytes == 1000
    assert not s.record_args and not s.metrics_enabled
    assert s.metrics_interval_s == 2.0
    assert load_settings({"XDG_STATE_HOME": "/state"}).spool_dir == "/state/glia/spool"
    assert load_settings(env, export_deadline_ms=50).export_deadline_s == 0.05


@pytest.mark.parametrize("var", ["OTEL_SDK_DISABLED", "GLIA_DISABLED"])
def test_disable_switch(var: str) -> None:
    assert load_settings({var: "true"}).disabled
    assert not load_settings({var: "false"}).disabled


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318", "http:// or https://"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x", "http:// or https://"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://host:99999", "bad port"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5", "positive"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "key=value"),
        ("OTEL_RESOURCE_ATTRIBUTES", "=x", "key=value"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "http/protobuf"),
        ("OTEL_SDK_DISABLED", "maybe", "true or false"),
        ("GLIA_EXPORT_DEADLINE_MS", "0", "positive"),
        ("GLIA_SPOOL_MAX_BYTES", "lots", "integer"),
        ("GLIA_RECORD_ARGS", "sometimes", "true or false"),
    ],
)
def test_malformed_values_raise_value_error(var: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=var) as info:
        load_settings({var: value})
    assert message in str(info.value)


def test_one_traceparent_parser_for_glia_run_and_the_api() -> None:
    from glia_otel._config import parse_traceparent

    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_traceparent(tp) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1)
    assert parse_traceparent(f"  {tp}\n") is not None
    for bad in ("", "00-xyz-b7ad6b7169203331-01", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "00-abc-def"):
        assert parse_traceparent(bad) is None, bad


def test_headers_and_resource_attributes_share_one_syntax() -> None:
    from glia_otel._config import parse_headers, parse_resource_attributes

    text = "Api-Key=a%20b, service.name=svc ,"
    assert parse_headers("H", text) == {"api-key": "a b", "service.name": "svc"}
    assert parse_resource_attributes("R", text) == {"Api-Key": "a b", "service.name": "svc"}
    with pytest.raises(ValueError, match="R: malformed entry 'novalue'"):
        parse_resource_attributes("R", "a=1,novalue")


def test_logs_have_their_own_endpoint_headers_timeout_and_compression() -> None:
    """The stored stderr tails go to /v1/logs, with the SDK's precedence (OTEL_EXPORTER_OTLP_LOGS_* over generic)."""
    s = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_HEADERS": "a=1"})
    assert s.target("logs") == ("http://collector:4318/v1/logs", {"a": "1"}, "gzip", 10.0)
    s = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:1/in",
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "k=v",
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "1500",
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "none",
        }
    )
    assert s.target("logs") == ("http://logs:1/in", {"k": "v"}, "none", 1.5)
    assert s.target("traces")[0] == "http://collector:4318/v1/traces"
    assert load_settings({}, endpoint="http://arg:2").logs_endpoint == "http://arg:2/v1/logs"
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_LOGS_COMPRESSION"):
        load_settings({"OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "zstd"})
