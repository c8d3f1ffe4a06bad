"""`glia serve` as a child process: shared by the serve, embedded-files and embedded-instances tests."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import free_port, run_sql

GLIA = str(Path(sys.executable).parent / "glia")


def serve_env(**extra: str) -> dict[str, str]:
    """The environment for a `glia serve` child: no inherited database URL, `extra` on top."""
    env = {k: v for k, v in os.environ.items() if k != "GLIA_DATABASE_URL"}
    return {**env, **extra}


def start_serve(
    *args: str, port: int | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start `glia serve --port PORT ARGS...`; returns the process and its base URL (not waited for)."""
    port = port or free_port()
    proc = subprocess.Popen(
        [GLIA, "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else serve_env(),
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until `/readyz` answers 200; fail with the process's stderr if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"glia serve exited with {proc.returncode}: {err}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("glia serve did not become ready")


def wait_exit(proc: subprocess.Popen[str], timeout: float) -> int | None:
    """The process's exit status once it exits within `timeout` seconds, else None (it is left running)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def interrupt(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    """Stop a running `glia serve` as Ctrl-C does; returns its stdout and stderr."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.communicate(timeout=60)


def span_body(name: str) -> tuple[bytes, str]:
    """An OTLP/JSON request with one span named `name`; returns the body and the span's id."""
    span_id = secrets.token_hex(8)
    start = time.time_ns()
    body = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "serve-test"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": secrets.token_hex(16),
                                    "spanId": span_id,
                                    "name": name,
                                    "kind": 1,
                                    "startTimeUnixNano": str(start),
                                    "endTimeUnixNano": str(start + 1000),
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    )
    return body, span_id


def send_span(url: str, name: str) -> tuple[int, str]:
    """POST one span to the receiver at `url`; returns the status and the span's id."""
    body, span_id = span_body(name)
    try:
        response = httpx.post(
            url + "/v1/traces", content=body, headers={"Content-Type": "application/json"}, timeout=10
        )
    except httpx.TransportError:
        return 0, span_id
    return response.status_code, span_id


def stored(database_url: str, span_id: str) -> bool:
    """Whether the span with this id is a row in the database."""
    rows = run_sql(database_url, "SELECT count(*) AS n FROM spans WHERE span_id = $1", span_id)
    return bool(rows[0]["n"])


def embedded_url(data_dir: Path) -> str:
    """The embedded default's full database URL, read as a user would: from its 0600 file."""
    return (data_dir / "database-url").read_text().strip()
