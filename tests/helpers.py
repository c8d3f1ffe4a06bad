"""Helpers shared by test modules: client processes, seeded runs, OTLP request bodies, a browser.

Test modules import from here (or from tests/serving.py and tests/collector.py for the child processes those
run), never from one another; fixtures live in the conftest.py files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import REPO, PgServer, ReceiverServer, need, run_sql, with_database

Sql = Callable[..., list[dict[str, Any]]]
"""The `sql` fixture: `sql(query, *args)` against this test's database, rows as dicts."""

GLIA = str(Path(sys.executable).with_name("glia"))


# --- client processes -----------------------------------------------------------------------------------------


def r_env(tmp_path: Path, endpoint: str | None, **extra: str) -> dict[str, str]:
    """The environment of an R run: the caller's, minus any OTEL_/GLIA_/SLURM_ settings and trace context; the spool
    in `tmp_path`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "GLIA_", "SLURM_")) and k not in ("TRACEPARENT", "TRACESTATE")
    }
    env["GLIA_SPOOL_DIR"] = str(tmp_path / "spool")
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.update(extra)
    return env


def poll(check: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """The first truthy value of `check()`, tried every `step` s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def client_env(endpoint: str | None, spool: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a client process: no inherited OTEL_/GLIA_/TRACEPARENT settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GLIA_")) and k != "TRACEPARENT"}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint or "http://127.0.0.1:9"
    env["GLIA_SPOOL_DIR"] = str(spool)
    env["GLIA_EXPORT_DEADLINE_MS"] = "5000"  # a loaded test machine; the deadline itself is benchmarked
    env.update(extra)
    return env


def run_python(
    tmp: Path, script: str, env: Mapping[str, str], name: str = "job.py"
) -> subprocess.CompletedProcess[str]:
    """Run `script` as a file in a fresh interpreter and return the finished process."""
    path = tmp / name
    path.write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, str(path)], env=dict(env), capture_output=True, text=True, timeout=60)


def glia_run(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """`glia run ARGS...` to completion, output captured."""
    return subprocess.run([GLIA, "run", *args], env=env, capture_output=True, text=True, timeout=60, **kw)


# --- seeded runs (bench/seed.sql) -----------------------------------------------------------------------------

N = 120


def seed_runs(url: str, n: int = N, months: int = 12, metrics_every: int = 1, newest: datetime | None = None) -> None:
    """Seed `n` synthetic runs (bench/seed.sql): run i has program prog-{i % 50}, host node{i % 20}, ..."""
    from receiver.sqlfiles import parse

    seed_sql = parse((REPO / "bench" / "seed.sql").read_text())
    newest = newest or datetime.now(UTC) - timedelta(hours=1)

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(seed_sql["seed_partitions"], months, newest)
            await conn.execute(seed_sql["seed_runs"], n, months, newest)
            await conn.execute(seed_sql["seed_metric_points"], metrics_every)
        finally:
            await conn.close()

    asyncio.run(go())


def expected(i: int, n: int = N) -> dict[str, Any]:
    """What bench/seed.sql gives run i."""
    return {
        "program_name": f"prog-{i % 50:02d}",
        "host_name": f"node{i % 20:02d}",
        "user_name": ["ada", "bob", "cyd", "dee", "eve", "fay", "gus"][i % 7],
        "exit_code": 137 if i % 101 == 0 else 1 if i % 13 == 0 else 0,
        "wall_seconds": float(1 + (i * 7907) % 3600),
        "peak_rss_bytes": (64 + (i * 37) % 4000) * 1048576,
        "attributes": {
            "sample": f"S{i % 1000}",
            "pipeline": ["rnaseq", "wgs", "chipseq", "qc"][i % 4],
            "reads": (i % 5000) * 1000,
        },
    }


def run_id(i: int) -> str:
    """The run id bench/seed.sql gives run i."""
    return hashlib.md5(f"span{i}".encode()).hexdigest()[:16]


# --- OTLP request bodies --------------------------------------------------------------------------------------

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


def now_ns() -> int:
    return time.time_ns()


def pb_request(spans: int = 1, attrs: int = 0, seed: int = 1, **span_fields: Any) -> ExportTraceServiceRequest:
    """A protobuf request of `spans` spans (service bad-input), each with `attrs` integer attributes."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bad-input"
    ss = rs.scope_spans.add()
    start = now_ns()
    for i in range(spans):
        span = ss.spans.add()
        span.trace_id = seed.to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"span-{i}"
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + 1000
        for a in range(attrs):
            kv = span.attributes.add()
            kv.key, kv.value.int_value = f"a{a}", a
        for key, value in span_fields.items():
            setattr(span, key, value)
    return request


def json_span(trace_id: str = "0" * 31 + "1", span_id: str = "0" * 15 + "1", **extra: Any) -> dict[str, Any]:
    """One OTLP/JSON span named json-span, `extra` fields on top."""
    start = now_ns()
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "json-span",
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": start + 5000,
        "attributes": [{"key": "sample", "value": {"stringValue": "S1"}}],
    }
    span.update(extra)
    return span


def json_body(*spans: dict[str, Any]) -> bytes:
    """An OTLP/JSON request holding `spans` (service json-svc)."""
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                    "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}],
                }
            ]
        }
    )


def post(receiver: ReceiverServer, body: bytes, headers: dict[str, str], path: str = "/v1/traces") -> httpx.Response:
    return httpx.post(receiver.url + path, content=body, headers=headers, timeout=30)


SPAN_JSON = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "keyed"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "keyed-run",
            "startTimeUnixNano": "{start}", "endTimeUnixNano": "{end}",
        }]}],
    }]
}  # fmt: skip


def span_body() -> bytes:
    """An OTLP/JSON request of one span, keyed-run, that ended now."""
    now = time.time_ns()
    return orjson.dumps(SPAN_JSON).replace(b"{start}", str(now - 10**9).encode()).replace(b"{end}", str(now).encode())


# A span tree of hand-picked ids (the read-path tests)
TRACE = "7" * 32
RUN = "1" * 16
SPAN_A = "a" * 16
# start times a millisecond apart: the receiver stores start_time through a float, which can merge two spans a
# microsecond apart into one primary key
MS = 1_000_000


def otlp_span(span_id: str, parent: str | None, name: str, start_ns: int, **attrs: str) -> dict[str, Any]:
    """An OTLP/JSON span in TRACE, 1 ms long, with string attributes."""
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1_000_000),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def post_spans(receiver: ReceiverServer, *spans: dict[str, Any], service: str = "reads") -> None:
    """Post `spans` as OTLP/JSON and assert the receiver took them all."""
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}],
            }
        ]
    }
    response = httpx.post(f"{receiver.url}/v1/traces", content=orjson.dumps(body), headers=JS, timeout=30)
    assert response.status_code == 200 and response.content == b"{}", response.text


# --- databases and keys ---------------------------------------------------------------------------------------


def fresh_database(pg: PgServer, name: str) -> str:
    """An empty database `name` on `pg` (dropped first if it exists); returns its URL."""
    run_sql(pg.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run_sql(pg.admin_url, f'CREATE DATABASE "{name}"')
    return with_database(pg.admin_url, name)


@contextmanager
def holding(url: str, statement: str) -> Iterator[int]:
    """Run `statement` (a LOCK TABLE) in a transaction on a connection of its own and keep it open for the block;
    yields that backend's pid. `LOCK TABLE spans IN SHARE MODE` holds every insert and lets reads through."""
    import threading

    ready, release = threading.Event(), threading.Event()
    pid: list[int] = []
    failed: list[BaseException] = []

    async def hold() -> None:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute(statement)
                pid.append(conn.get_server_pid())
                ready.set()
                await asyncio.to_thread(release.wait)
        finally:
            await conn.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10) and pid, f"could not run {statement!r}: {failed}"
    try:
        yield pid[0]
    finally:
        release.set()
        thread.join(10)


def create_key(capsys: pytest.CaptureFixture[str], url: str, name: str, scope: str) -> str:
    """`glia keys create NAME --scope SCOPE` in this process; returns the secret it printed."""
    from glia_otel._cli import main

    assert main(["keys", "create", name, "--scope", scope, "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert f"created {scope} key '{name}'" in err
    return out.strip()


# --- the browser ----------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium. Started after the database work: Playwright's sync API keeps an event loop running in
    this thread, where the fixtures' asyncio.run() would refuse to start."""
    need(Path(CHROMIUM).exists(), f"no chromium at {CHROMIUM} (Debian package 'chromium')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# --- compose.yaml ---------------------------------------------------------------------------------------------

COMPOSE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in ("?", ":?"):
            raise ValueError(f"required variable {name} is not set: {arg}")
        if op in ("-", ":-"):
            return arg
        return ""

    return COMPOSE_VARIABLE.sub(substitute, text)


def compose_config() -> dict[str, Any]:
    """compose.yaml as `docker compose` sees it with .env copied from .env.example (a new dict on every call)."""
    import yaml

    data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), read_env_file(ENV_EXAMPLE)))
    return data
