"""The gateway tier, all real processes: SDK client -> agent collector (agent.yaml) -> gateway collector
(config.yaml) -> HAProxy (haproxy.cfg) -> two `glia serve` receivers -> one PostgreSQL.

A steady stream of runs flows while one receiver is killed with SIGKILL and started again on its port: every span
id sent is stored exactly once, and both receivers stored some (read from their own /metrics). The kill is made to
land inside a request: a lock on spans holds the inserts for a moment, and the receiver is killed once one of its
own transactions is waiting on it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.collector import CONFIG_DIR, Collector, loopback_env
from tests.conftest import free_port, need
from tests.e2e.conftest import SdkClient, Sql, wait_for_spans, wait_until
from tests.helpers import holding
from tests.serving import GLIA, serve_env

AGENT = CONFIG_DIR / "agent.yaml"
HAPROXY_CONFIG = CONFIG_DIR / "haproxy.cfg"
RUNS = 3000
RATE = 200  # runs a second, sent 20 at a time
KILL_AFTER = 1000  # runs sent before receiver 1 is killed
DOWN_SECONDS = 2.0


def haproxy_binary() -> str:
    """HAProxy from Debian's package (.ci/install-haproxy.sh); skips the test (fails under CI) without it."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    need(found, "no haproxy: install Debian's package (bash .ci/install-haproxy.sh)")
    assert found is not None
    return found


@dataclass
class ReceiverProcess:
    """`glia serve` on a fixed loopback port as a child process, its output in a log file."""

    database_url: str
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [GLIA, "serve", "--database-url", self.database_url, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=serve_env(),
            )
        wait_until(self._ready, 60, lambda: f"receiver on {self.port} not ready:\n{self.log_text()}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"glia serve exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def database_ports(self, database_port: int) -> set[int]:
        """The local ports of this process's connections to PostgreSQL (pg_stat_activity's client_port)."""
        assert self.process is not None
        connections = psutil.Process(self.process.pid).net_connections(kind="tcp")
        return {c.laddr.port for c in connections if c.raddr and c.raddr.port == database_port}

    def stored(self) -> float:
        """Spans this process has stored since it started, from its /metrics."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "glia_receiver_items_stored_total" and sample.labels == {"signal": "traces"}
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@dataclass
class Balancer:
    """HAProxy running collector-config/haproxy.cfg in the foreground, in front of `receivers`."""

    binary: str
    receivers: list[ReceiverProcess]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "GLIA_LB_BIND": f"127.0.0.1:{self.port}",
            **{f"GLIA_RECEIVER_{i}": f"127.0.0.1:{r.port}" for i, r in enumerate(self.receivers, 1)},
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(HAPROXY_CONFIG)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        wait_until(self._ready, 20, lambda: f"haproxy not answering:\n{self.log.read_text(errors='replace')}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


@pytest.fixture
def receivers(database_url: str, tmp_path: Path) -> Iterator[list[ReceiverProcess]]:
    """Two `glia serve` processes on this test's database."""
    made = [ReceiverProcess(database_url, tmp_path / f"receiver{i}.log") for i in (1, 2)]
    try:
        for receiver in made:
            receiver.start()
        yield made
    finally:
        for receiver in made:
            receiver.stop()


@pytest.fixture
def balancer(receivers: list[ReceiverProcess], tmp_path: Path) -> Iterator[Balancer]:
    lb = Balancer(haproxy_binary(), receivers, tmp_path / "haproxy.log")
    try:
        lb.start()
        yield lb
    finally:
        lb.stop()


@pytest.fixture
def tier(otelcol_bin: Path, balancer: Balancer, tmp_path: Path) -> Iterator[tuple[Collector, Collector]]:
    """The gateway collector sending to the balancer, and an agent sending to the gateway."""
    started: list[Collector] = []
    try:
        gateway_env = loopback_env(tmp_path / "gateway-queue", balancer.url)
        started.append(Collector(otelcol_bin, gateway_env, tmp_path / "gateway.log"))
        agent_env = loopback_env(tmp_path / "agent-queue", GLIA_GATEWAY_ENDPOINT=started[0].http_url)
        started.append(Collector(otelcol_bin, agent_env, tmp_path / "agent.log", config=AGENT))
        yield started[0], started[1]
    finally:
        for collector in reversed(started):
            collector.stop(signal.SIGKILL)


@dataclass
class Stream:
    """Runs sent through an SDK client at a steady rate from a thread, their span ids remembered."""

    client: SdkClient
    total: int
    span_ids: list[str] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        try:
            tracer = self.client.provider.get_tracer("gateway")
            step, pause = 20, 20 / RATE
            start = time.monotonic()
            for i in range(0, self.total, step):
                for n in range(i, min(i + step, self.total)):
                    with tracer.start_as_current_span(f"gw-{n}") as span:
                        span.set_attribute("glia.run.kind", "block")
                        self.span_ids.append(format(span.get_span_context().span_id, "016x"))
                time.sleep(max(0.0, start + (i // step + 1) * pause - time.monotonic()))
        except BaseException as exc:
            self.error.append(exc)

    def sent(self) -> int:
        return len(self.span_ids)


def inserts_waiting(sql: Sql, ports: set[int]) -> int:
    """Transactions of the connections from `ports` whose insert into spans waits for a lock."""
    rows = sql(
        "SELECT client_port FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO spans%'"
    )
    return sum(1 for r in rows if r["client_port"] in ports)


def test_a_receiver_killed_under_a_steady_stream_loses_and_duplicates_nothing(
    receivers: list[ReceiverProcess],
    tier: tuple[Collector, Collector],
    sdk_client: Callable[..., SdkClient],
    database_url: str,
    sql: Sql,
) -> None:
    started = time.monotonic()
    gateway, agent = tier
    victim, survivor = receivers
    stream = Stream(sdk_client(agent.http_url, resource={"service.name": "gateway-e2e"}), RUNS)
    thread = threading.Thread(target=stream.run, name="stream", daemon=True)
    thread.start()

    wait_until(lambda: stream.sent() >= KILL_AFTER, 30, lambda: f"only {stream.sent()} runs sent")
    wait_until(lambda: victim.stored() > 0, 15, lambda: "receiver 1 stored nothing before it was killed")
    database_port = int(database_url.rpartition(":")[2].partition("/")[0])
    with holding(database_url, "LOCK TABLE spans IN SHARE MODE"):
        wait_until(
            lambda: inserts_waiting(sql, victim.database_ports(database_port)) > 0,
            15,
            lambda: "no request of receiver 1 is inside its transaction",
        )
        victim.kill()  # its transaction is rolled back; HAProxy or the gateway sends the request again
    killed_at = stream.sent()
    time.sleep(DOWN_SECONDS)
    victim.start()  # the same port: HAProxy's health check brings it back into rotation
    restarted_at = stream.sent()

    thread.join(timeout=60)
    assert not thread.is_alive() and not stream.error, stream.error
    stream.client.flush_all(RUNS)  # the agent acknowledged every run
    assert killed_at < restarted_at < RUNS, (killed_at, restarted_at)

    wait_for_spans(sql, RUNS, timeout=60, where="service_name = 'gateway-e2e'", collector=gateway)
    (counts,) = sql(
        "SELECT count(*) AS n, count(DISTINCT span_id) AS distinct_ids FROM spans WHERE service_name = 'gateway-e2e'"
    )
    assert counts == {"n": RUNS, "distinct_ids": RUNS}
    stored_ids = {r["span_id"] for r in sql("SELECT span_id FROM spans WHERE service_name = 'gateway-e2e'")}
    assert stored_ids == set(stream.span_ids)
    # both receivers took part: the survivor throughout, the victim again after its restart
    assert survivor.stored() > 0
    wait_until(lambda: victim.stored() > 0, 1, lambda: "the restarted receiver stored nothing")
    for collector in (gateway, agent):
        assert "Dropping data" not in collector.log(tail=10_000_000), collector.log()
    assert time.monotonic() - started < 90
