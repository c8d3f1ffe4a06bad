"""Settings of the client, read from the standard `OTEL_*` variables and the few `GLIA_*` ones.

Precedence follows the OpenTelemetry SDK: argument > signal-specific `OTEL_*` > generic `OTEL_*` > default.
Malformed values raise `ValueError` here, at `configure()`, never later at exit. This module imports only the
standard library, because `glia run` reads it before the command starts.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_EXPORT_DEADLINE_S = 0.25
DEFAULT_SPOOL_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_HEARTBEAT_INTERVAL_S = 30.0

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


class Settings:
    """Everything the client needs to know about where and how to send runs.

    A plain class, not a dataclass: importing `dataclasses` alone would cost `glia run` several milliseconds.
    """

    traces_endpoint: str = f"{DEFAULT_ENDPOINT}/v1/traces"
    metrics_endpoint: str = f"{DEFAULT_ENDPOINT}/v1/metrics"
    logs_endpoint: str = f"{DEFAULT_ENDPOINT}/v1/logs"
    traces_headers: Mapping[str, str] = {}
    metrics_headers: Mapping[str, str] = {}
    logs_headers: Mapping[str, str] = {}
    traces_timeout_s: float = DEFAULT_TIMEOUT_S
    metrics_timeout_s: float = DEFAULT_TIMEOUT_S
    logs_timeout_s: float = DEFAULT_TIMEOUT_S
    traces_compression: str = "gzip"
    metrics_compression: str = "gzip"
    logs_compression: str = "gzip"
    service_name: str | None = None
    resource_attributes: Mapping[str, str] = {}
    spool_dir: str = os.path.expanduser("~/.local/state/glia/spool")
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    export_deadline_s: float = DEFAULT_EXPORT_DEADLINE_S
    disabled: bool = False
    record_args: bool = True
    metrics_enabled: bool = True
    metrics_interval_s: float | None = None  # OTEL_METRIC_EXPORT_INTERVAL; None: the sampling ramp (_metrics.py)
    use_cgroup: bool = True
    live: bool = True  # GLIA_LIVE: runs past 1 s send a start record and heartbeats (_live.py)
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S  # GLIA_HEARTBEAT_INTERVAL_MS

    def __init__(self, **values: object) -> None:
        for key, value in values.items():
            if not hasattr(Settings, key):
                raise TypeError(f"unknown setting {key!r}")
            setattr(self, key, value)

    def target(self, signal: str) -> tuple[str, Mapping[str, str], str, float]:
        """(URL, headers, compression, timeout) for `traces`, `metrics` or `logs`."""
        if signal == "metrics":
            return self.metrics_endpoint, self.metrics_headers, self.metrics_compression, self.metrics_timeout_s
        if signal == "logs":
            return self.logs_endpoint, self.logs_headers, self.logs_compression, self.logs_timeout_s
        return self.traces_endpoint, self.traces_headers, self.traces_compression, self.traces_timeout_s

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in Settings.__annotations__)
        return f"Settings({fields})"


def unquote(text: str) -> str:
    """Percent-decode (`%2C` -> `,`) as UTF-8; malformed escapes are kept as they are."""
    if "%" not in text:
        return text
    out = bytearray()
    raw = text.encode("utf-8")
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(c in b"0123456789abcdefABCDEF" for c in b)


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http(s) URL; ValueError if it is not one."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    slash = rest.find("/")
    authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        host, _, port_text = authority[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ValueError("expected an http:// or https:// URL")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("bad port")
        port = int(port_text)
    else:
        port = 443 if scheme == "https" else 80
    return scheme, host, port, target


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean variable; anything but the usual spellings is a `ValueError`."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def parse_key_values(name: str, value: str, lower_keys: bool = False) -> dict[str, str]:
    """Parse `key1=value1,key2=value2`, keys and values URL-encoded (the syntax of the OTLP `*_HEADERS` and
    `OTEL_RESOURCE_ATTRIBUTES` variables)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            raise ValueError(f"{name}: malformed entry {item.strip()!r}, expected key=value")
        out[key.lower() if lower_keys else key] = unquote(val.strip())
    return out


def parse_headers(name: str, value: str) -> dict[str, str]:
    """Parse an OTLP headers variable (header names are case-insensitive: kept lower-case)."""
    return parse_key_values(name, value, lower_keys=True)


def parse_resource_attributes(name: str, value: str) -> dict[str, str]:
    """Parse `OTEL_RESOURCE_ATTRIBUTES` (keys kept as given)."""
    return parse_key_values(name, value)


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a W3C `traceparent` value; None if it is malformed or has a zero id."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) < 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, flags


def parse_timeout_ms(name: str, value: str) -> float:
    """Parse a timeout in milliseconds (the OTLP exporter spec's unit) into seconds."""
    try:
        ms = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number of milliseconds") from None
    if not ms > 0 or ms != ms or ms == float("inf"):
        raise ValueError(f"{name}={value!r}: expected a positive number of milliseconds")
    return ms / 1000.0


def parse_compression(name: str, value: str) -> str:
    """Only `gzip` and `none` exist for OTLP/HTTP."""
    v = value.strip().lower()
    if v not in ("gzip", "none"):
        raise ValueError(f"{name}={value!r}: expected gzip or none")
    return v


def parse_endpoint(name: str, value: str) -> str:
    """Check that an endpoint is an http(s) URL with a host."""
    try:
        split_url(value.strip())
    except ValueError as e:
        raise ValueError(f"{name}={value!r}: {e}") from None
    return value.strip()


def parse_int(name: str, value: str, minimum: int = 0) -> int:
    """Parse a non-negative integer."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer") from None
    if n < minimum:
        raise ValueError(f"{name}={value!r}: must be at least {minimum}")
    return n


def default_spool_dir(env: Mapping[str, str]) -> str:
    """`GLIA_SPOOL_DIR`, else `$XDG_STATE_HOME/glia/spool`, else `~/.local/state/glia/spool`."""
    if env.get("GLIA_SPOOL_DIR"):
        return os.path.expanduser(env["GLIA_SPOOL_DIR"])
    if env.get("XDG_STATE_HOME"):
        return os.path.join(os.path.expanduser(env["XDG_STATE_HOME"]), "glia", "spool")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "state", "glia", "spool")


def _signal(env: Mapping[str, str], signal: str, suffix: str) -> tuple[str, str] | None:
    """The signal-specific variable if set, else the generic one: returns (name, value)."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        value = env.get(name)
        if value is not None and value.strip() != "":
            return name, value
    return None


def _endpoint(env: Mapping[str, str], signal: str, path: str, override: str | None) -> str:
    if override is not None:
        return parse_endpoint("endpoint", override).rstrip("/") + path
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    if specific:
        # The signal-specific endpoint is used as is (OTLP exporter spec).
        return parse_endpoint(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", specific)
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if generic:
        return parse_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", generic).rstrip("/") + path
    return DEFAULT_ENDPOINT + path


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    endpoint: str | None = None,
    service_name: str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    export_deadline_ms: float | None = None,
    record_args: bool | None = None,
    metrics: bool | None = None,
    metrics_interval_ms: float | None = None,
) -> Settings:
    """Build `Settings` from arguments and the environment; raises `ValueError` on a malformed value."""
    env = os.environ if env is None else env

    protocol = _signal(env, "TRACES", "PROTOCOL")
    if protocol is not None and protocol[1].strip() != "http/protobuf":
        raise ValueError(f"{protocol[0]}={protocol[1]!r}: glia_otel sends only http/protobuf")

    def headers(signal: str) -> dict[str, str]:
        found = _signal(env, signal, "HEADERS")
        return parse_headers(*found) if found else {}

    def timeout(signal: str) -> float:
        found = _signal(env, signal, "TIMEOUT")
        return parse_timeout_ms(*found) if found else DEFAULT_TIMEOUT_S

    def compression(signal: str) -> str:
        found = _signal(env, signal, "COMPRESSION")
        return parse_compression(*found) if found else "gzip"

    resource = parse_resource_attributes("OTEL_RESOURCE_ATTRIBUTES", env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    name = service_name or env.get("OTEL_SERVICE_NAME", "").strip() or resource.get("service.name") or None

    if export_deadline_ms is None and env.get("GLIA_EXPORT_DEADLINE_MS", "").strip():
        deadline_s = parse_timeout_ms("GLIA_EXPORT_DEADLINE_MS", env["GLIA_EXPORT_DEADLINE_MS"])
    elif export_deadline_ms is not None:
        deadline_s = parse_timeout_ms("export_deadline_ms", str(export_deadline_ms))
    else:
        deadline_s = DEFAULT_EXPORT_DEADLINE_S

    disabled = parse_bool("OTEL_SDK_DISABLED", env.get("OTEL_SDK_DISABLED", "false")) or parse_bool(
        "GLIA_DISABLED", env.get("GLIA_DISABLED", "false")
    )
    if record_args is None:
        record_args = parse_bool("GLIA_RECORD_ARGS", env.get("GLIA_RECORD_ARGS", "true"))

    if metrics is None:
        exporter = env.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower()
        metrics = exporter != "none"
    interval_s: float | None
    if metrics_interval_ms is not None:
        interval_s = parse_timeout_ms("metrics_interval_ms", str(metrics_interval_ms))
    elif env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip():
        interval_s = parse_timeout_ms("OTEL_METRIC_EXPORT_INTERVAL", env["OTEL_METRIC_EXPORT_INTERVAL"])
    else:
        interval_s = None

    return Settings(
        traces_endpoint=_endpoint(env, "TRACES", "/v1/traces", endpoint),
        metrics_endpoint=_endpoint(env, "METRICS", "/v1/metrics", endpoint),
        logs_endpoint=_endpoint(env, "LOGS", "/v1/logs", endpoint),
        traces_headers=headers("TRACES"),
        metrics_headers=headers("METRICS"),
        logs_headers=headers("LOGS"),
        traces_timeout_s=timeout("TRACES"),
        metrics_timeout_s=timeout("METRICS"),
        logs_timeout_s=timeout("LOGS"),
        traces_compression=compression("TRACES"),
        metrics_compression=compression("METRICS"),
        logs_compression=compression("LOGS"),
        service_name=name,
        resource_attributes=resource,
        spool_dir=os.path.expanduser(os.fspath(spool_dir)) if spool_dir is not None else default_spool_dir(env),
        spool_max_bytes=parse_int("GLIA_SPOOL_MAX_BYTES", env.get("GLIA_SPOOL_MAX_BYTES", "").strip())
        if env.get("GLIA_SPOOL_MAX_BYTES", "").strip()
        else DEFAULT_SPOOL_MAX_BYTES,
        export_deadline_s=deadline_s,
        disabled=disabled,
        record_args=record_args,
        metrics_enabled=metrics,
        metrics_interval_s=interval_s,
        use_cgroup=parse_bool("GLIA_CGROUP", env.get("GLIA_CGROUP", "true")),
        live=parse_bool("GLIA_LIVE", env.get("GLIA_LIVE", "true")),
        heartbeat_interval_s=parse_timeout_ms("GLIA_HEARTBEAT_INTERVAL_MS", env["GLIA_HEARTBEAT_INTERVAL_MS"])
        if env.get("GLIA_HEARTBEAT_INTERVAL_MS", "").strip()
        else DEFAULT_HEARTBEAT_INTERVAL_S,
    )
