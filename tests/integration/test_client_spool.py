"""Never slow, never lose: the spool when the endpoint is down, `glia flush`, and the exit deadline."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ReceiverServer
from tests.integration.test_client_track import GLIA, Sql, client_env, run_python

FIFTY_RUNS = """
import glia_otel
for i in range(50):
    with glia_otel.track("job", i=i):
        pass
"""


def _spooled(spool: Path) -> list[Path]:
    return sorted(p for p in spool.glob("*") if not p.name.endswith(".tmp") and p.name != ".lock")


def test_fifty_runs_spool_then_flush_delivers_exactly_fifty(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    receiver.stop()
    env = client_env(receiver.url, spool, GLIA_EXPORT_DEADLINE_MS="250")
    t0 = time.monotonic()
    proc = run_python(tmp_path, FIFTY_RUNS, env)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 10
    assert proc.stderr.count("could not reach") == 1, proc.stderr  # logged once, clearly
    assert _spooled(spool)

    down = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "kept for later" in down.stderr

    receiver.start()
    flushed = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert flushed.returncode == 0, flushed.stderr
    assert "50 span(s)" in flushed.stdout
    assert not _spooled(spool)
    rows = sql("SELECT attributes->>'i' AS i FROM spans WHERE name = 'job'")
    assert sorted(int(r["i"]) for r in rows) == list(range(50))

    again = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert "sent 0 request(s)" in again.stdout


def test_next_glia_process_resends_in_the_background(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    receiver.stop()
    env = client_env(receiver.url, spool)
    for _ in range(3):
        assert subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True).returncode == 0
    assert len(_spooled(spool)) == 3
    receiver.start()
    assert subprocess.run([GLIA, "run", "--", "sleep", "1"], env=env, capture_output=True).returncode == 0
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 4
    assert not _spooled(spool)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


DEADLINE_S = 0.25
SLACK_S = 0.15  # interpreter teardown on a loaded test machine


def test_exit_is_bounded_by_the_deadline_and_the_run_is_spooled(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    env = client_env(silent_endpoint, spool, GLIA_EXPORT_DEADLINE_MS=str(int(DEADLINE_S * 1000)))
    script = "import glia_otel, time\nwith glia_otel.track('x'):\n    pass\nprint(time.monotonic())\n"
    proc = run_python(tmp_path, script, env)
    exited = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    # From the end of the script to the end of the process: the deadline plus interpreter teardown.
    assert exited - float(proc.stdout) < DEADLINE_S + SLACK_S
    assert len(_spooled(spool)) == 1
    assert "exit deadline" in proc.stderr or "timed out" in proc.stderr


def test_glia_run_exit_is_bounded_by_the_deadline(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    env = client_env(silent_endpoint, spool, GLIA_EXPORT_DEADLINE_MS=str(int(DEADLINE_S * 1000)))
    t0 = time.monotonic()
    assert subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True).returncode == 0
    assert time.monotonic() - t0 < DEADLINE_S + SLACK_S + 0.1  # + glia's own start-up
    assert len(_spooled(spool)) == 1


def test_exit_with_sampling_on_keeps_one_deadline_in_total(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    env = client_env(
        silent_endpoint,
        spool,
        GLIA_EXPORT_DEADLINE_MS=str(int(DEADLINE_S * 1000)),
        OTEL_METRIC_EXPORT_INTERVAL="100",
        OTEL_EXPORTER_OTLP_TIMEOUT="60000",
    )
    script = """
import glia_otel, time
from glia_otel import _metrics
with glia_otel.track('long'):
    t = time.monotonic() + 10
    while not _metrics.is_sampling() and time.monotonic() < t:
        time.sleep(0.02)
    time.sleep(0.15)
assert _metrics.is_sampling()
print(time.monotonic())
"""
    proc = run_python(tmp_path, script, env)
    exited = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    assert exited - float(proc.stdout) < DEADLINE_S + SLACK_S
    files = _spooled(spool)
    assert any(not p.name.startswith("metrics-") for p in files), files  # the run
    assert any(p.name.startswith("metrics-") for p in files), files  # the samples

    t0 = time.monotonic()
    cmd = [GLIA, "run", "--", "sleep", "0.4"]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert time.monotonic() - t0 < 0.4 + DEADLINE_S + SLACK_S + 0.1


def test_unwritable_spool_loses_only_what_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = client_env(None, blocker / "spool")
    proc = run_python(tmp_path, "import glia_otel\nwith glia_otel.track('x'):\n    print('ran')\n", env)
    assert proc.returncode == 0 and proc.stdout == "ran\n"
    assert proc.stderr.count("could not write to the spool") == 1, proc.stderr
    assert "were lost" in proc.stderr and "Traceback" not in proc.stderr
    run = subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "could not write to the spool" in run.stderr


def test_spool_is_bounded_oldest_dropped_first_with_one_warning(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = client_env(None, spool, GLIA_SPOOL_MAX_BYTES="6000")
    proc = run_python(
        tmp_path,
        """
        import glia_otel
        for i in range(40):
            with glia_otel.track("job", i=i, pad="x" * 300):
                pass
            glia_otel.force_flush()
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    files = _spooled(spool)
    assert sum(p.stat().st_size for p in files) <= 6000
    assert 1 < len(files) < 40
    assert proc.stderr.count("dropped the") == 1, proc.stderr
    # The newest runs survive: the last file holds the last run.
    import gzip

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    req.ParseFromString(gzip.decompress(files[-1].read_bytes()))
    (span,) = req.resource_spans[0].scope_spans[0].spans
    assert {kv.key: kv.value.int_value for kv in span.attributes if kv.key == "i"} == {"i": 39}


INTERRUPTED_FLUSH = """
import signal, glia_otel

def interrupt(signum, frame):
    raise KeyboardInterrupt

with glia_otel.track("interrupted"):
    pass
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    glia_otel.force_flush()
except KeyboardInterrupt:
    print("interrupted")
"""


def test_an_interrupt_during_export_spools_the_batch(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    proc = run_python(tmp_path, INTERRUPTED_FLUSH, client_env(silent_endpoint, spool))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "interrupted\n"
    assert len(_spooled(spool)) == 1


def test_glia_run_signalled_during_export_spools_and_keeps_the_exit_code(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    env = client_env(silent_endpoint, spool, GLIA_EXPORT_DEADLINE_MS="2000")
    proc = subprocess.Popen([GLIA, "run", "--", "sh", "-c", "exit 3"], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)  # the command is over; glia is waiting on the silent endpoint
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 3, err
    assert len(_spooled(spool)) == 1


BIG_RUN = "import glia_otel\nwith glia_otel.track('big', pad='x' * 4000):\n    pass\n"


def test_a_rejected_request_is_kept_as_rejected_and_resent_on_demand(
    tmp_path: Path, receiver_factory: Callable[..., ReceiverServer], sql: Sql
) -> None:
    spool = tmp_path / "spool"
    small = receiver_factory(max_body_bytes=1024)
    env = client_env(small.url, spool, OTEL_EXPORTER_OTLP_COMPRESSION="none")
    proc = run_python(tmp_path, BIG_RUN, env)
    assert proc.returncode == 0, proc.stderr
    (kept,) = spool.glob("*.rejected")
    assert "413" in proc.stderr and "retry-rejected" in proc.stderr, proc.stderr
    assert "1024" in proc.stderr, proc.stderr  # the receiver's own google.rpc.Status message is in the line
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 0

    plain = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert plain.returncode == 0 and kept.exists()  # not resent by itself

    big = receiver_factory()
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = big.url
    again = subprocess.run([GLIA, "flush", "--retry-rejected"], env=env, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert not _spooled(spool)
    assert [r["name"] for r in sql("SELECT name FROM spans")] == ["big"]


def test_a_wrong_endpoint_path_keeps_the_runs_for_later(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    env = client_env(receiver.url, spool, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url + "/v1/nope")
    proc = run_python(tmp_path, "import glia_otel\nwith glia_otel.track('x'):\n    pass\n", env)
    assert proc.returncode == 0, proc.stderr
    assert "404" in proc.stderr and "check the endpoint URL" in proc.stderr, proc.stderr
    assert len(_spooled(spool)) == 1 and not list(spool.glob("*.rejected"))

    wrong = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 1 and "404" in wrong.stderr and "1 kept for later" in wrong.stderr
    assert len(_spooled(spool)) == 1

    del env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    right = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert right.returncode == 0, right.stderr
    assert [r["name"] for r in sql("SELECT name FROM spans")] == ["x"]


def test_a_second_flusher_steps_aside(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    import fcntl

    spool = tmp_path / "spool"
    receiver.stop()
    env = client_env(receiver.url, spool)
    assert subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True).returncode == 0
    assert len(_spooled(spool)) == 1
    receiver.start()
    with open(spool / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
        assert busy.returncode == 0 and "another flush" in busy.stdout, busy
        assert len(_spooled(spool)) == 1
        assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 0
    done = subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 1
