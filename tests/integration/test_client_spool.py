"""Never slow, never lose: the spool when the endpoint is down, `glia flush`, and the exit deadline."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ReceiverServer, need
from tests.helpers import GLIA, Sql, client_env, run_python

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
SLACK_S = 0.15  # past the deadline: noticing it and giving up the post, on a loaded test machine


def _cost_with_nothing_to_wait_for(measure: Callable[[dict[str, str]], float], env: dict[str, str]) -> float:
    """What `measure` gives for the same job with the same settings when the endpoint refuses connections at once
    (the median of three): glia's own start-up, export attempt, spool write and teardown, and on a loaded or
    coverage-traced machine whatever those cost there. Subtracted, what is left is what a silent endpoint adds to the
    job's exit, which is what the deadline bounds."""
    refused = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    figures = []
    for i in range(3):
        refused["GLIA_SPOOL_DIR"] = f"{env['GLIA_SPOOL_DIR']}-refused-{i}"
        figures.append(measure(refused))
    return sorted(figures)[1]


def _teardown(tmp_path: Path, script: str) -> Callable[[dict[str, str]], float]:
    """From the end of `script` (it prints time.monotonic() last) to the end of its process, in seconds."""

    def measure(env: dict[str, str]) -> float:
        proc = run_python(tmp_path, script, env)
        exited = time.monotonic()
        assert proc.returncode == 0, proc.stderr
        return exited - float(proc.stdout)

    return measure


def _wall(cmd: list[str]) -> Callable[[dict[str, str]], float]:
    """The wall time of `cmd`, start to exit, in seconds."""

    def measure(env: dict[str, str]) -> float:
        t0 = time.monotonic()
        assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
        return time.monotonic() - t0

    return measure


def test_exit_is_bounded_by_the_deadline_and_the_run_is_spooled(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    env = client_env(silent_endpoint, spool, GLIA_EXPORT_DEADLINE_MS=str(int(DEADLINE_S * 1000)))
    script = "import glia_otel, time\nwith glia_otel.track('x'):\n    pass\nprint(time.monotonic())\n"
    proc = run_python(tmp_path, script, env)
    exited = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    # From the end of the script to the end of the process, less the same with nothing to wait for: the deadline.
    added = exited - float(proc.stdout) - _cost_with_nothing_to_wait_for(_teardown(tmp_path, script), env)
    assert added < DEADLINE_S + SLACK_S, added
    assert len(_spooled(spool)) == 1
    assert "exit deadline" in proc.stderr or "timed out" in proc.stderr


def test_glia_run_exit_is_bounded_by_the_deadline(tmp_path: Path, silent_endpoint: str) -> None:
    spool = tmp_path / "spool"
    env = client_env(silent_endpoint, spool, GLIA_EXPORT_DEADLINE_MS=str(int(DEADLINE_S * 1000)))
    measure = _wall([GLIA, "run", "--", "true"])
    wall = measure(env)
    assert len(_spooled(spool)) == 1
    added = wall - _cost_with_nothing_to_wait_for(measure, env)
    assert added < DEADLINE_S + SLACK_S, (wall, added)


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
from glia_otel._track import _state
with glia_otel.track('long'):
    t = time.monotonic() + 10
    while not _state.metrics.is_sampling() and time.monotonic() < t:
        time.sleep(0.02)
    time.sleep(0.15)
assert _state.metrics.is_sampling()
print(time.monotonic())
"""
    teardown = _teardown(tmp_path, script)
    seconds = teardown(env)
    files = _spooled(spool)
    assert any(not p.name.startswith("metrics-") for p in files), files  # the run
    assert any(p.name.startswith("metrics-") for p in files), files  # the samples
    added = seconds - _cost_with_nothing_to_wait_for(teardown, env)
    assert added < DEADLINE_S + SLACK_S, (seconds, added)

    measure = _wall([GLIA, "run", "--", "sleep", "0.4"])
    wall = measure(env)
    added = wall - _cost_with_nothing_to_wait_for(measure, env)  # the 0.4 s sleep is in both
    assert added < DEADLINE_S + SLACK_S, (wall, added)


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


# --- A spool that cannot be trusted (issue 9, item 9) -------------------------------------------------------------
# Tests run as root here; `nobody` plays the other user who plants files and owns directories.


def _nobody() -> tuple[int, int]:
    import pwd

    need(os.geteuid() == 0, "planting files as another user needs root")
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory `nobody` can traverse (pytest's tmp_path is root's alone), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="glia-test-spool-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _request_file(tmp_path: Path, name: str) -> Path:
    """A real spool file holding one run called `name` (spooled by `glia run` with the endpoint down)."""
    private = tmp_path / f"made-{name}"
    env = client_env(None, private)
    assert subprocess.run([GLIA, "run", "--name", name, "--", "true"], env=env, capture_output=True).returncode == 0
    (made,) = _spooled(private)
    return made


def _names(sql: Sql) -> list[str]:
    return sorted(r["name"] for r in sql("SELECT name FROM spans"))


def _flush(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GLIA, "flush"], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_spool_is_created_0700_and_its_files_0600(tmp_path: Path) -> None:
    spool = tmp_path / "state" / "glia" / "spool"
    env = client_env(None, spool)
    assert subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True).returncode == 0
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.parent.stat().st_mode) == 0o700  # what glia creates, it creates private (XDG)
    (made,) = _spooled(spool)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_flush_does_not_follow_a_symlink_to_a_private_file(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    receiver.stop()
    env = client_env(receiver.url, spool)
    assert subprocess.run([GLIA, "run", "--name", "good", "--", "true"], env=env, capture_output=True).returncode == 0
    # A private file elsewhere that would be stored if it were posted, and a link to it named like a spool file.
    secret = tmp_path / "secret.pb.gz"
    _request_file(tmp_path, "secret").rename(secret)
    secret.chmod(0o600)
    link = spool / "1000000000000000000-1-00000000.pb.gz"
    link.symlink_to(secret)
    receiver.start()

    flushed = _flush(env)
    assert _names(sql) == ["good"]  # the good file was sent, nothing through the link
    assert link.is_symlink() and secret.exists()  # left where they are
    assert flushed.returncode == 1, flushed
    assert str(link) in flushed.stderr and "symbolic link" in flushed.stderr, flushed.stderr
    assert "1 refused" in flushed.stderr, flushed.stderr


def test_a_fifo_in_the_spool_does_not_hang_flush(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    receiver.stop()
    env = client_env(receiver.url, spool)
    assert subprocess.run([GLIA, "run", "--name", "good", "--", "true"], env=env, capture_output=True).returncode == 0
    fifo = spool / "1000000000000000000-1-00000000.pb"
    os.mkfifo(fifo)
    receiver.start()
    flushed = _flush(env, timeout=10)  # opening a FIFO to read blocks until a writer comes: never
    assert _names(sql) == ["good"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert flushed.returncode == 1 and str(fifo) in flushed.stderr and "FIFO" in flushed.stderr, flushed.stderr


def test_flush_refuses_files_of_another_user_and_hard_links(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    uid, gid = _nobody()
    spool = tmp_path / "spool"
    receiver.stop()
    env = client_env(receiver.url, spool)
    assert subprocess.run([GLIA, "run", "--name", "good", "--", "true"], env=env, capture_output=True).returncode == 0
    theirs = spool / "1000000000000000000-1-00000001.pb.gz"
    _request_file(tmp_path, "theirs").rename(theirs)
    os.chown(theirs, uid, gid)
    linked = spool / "1000000000000000000-1-00000002.pb.gz"
    outside = tmp_path / "outside.pb.gz"
    _request_file(tmp_path, "linked").rename(outside)
    os.link(outside, linked)
    receiver.start()

    flushed = _flush(env)
    assert _names(sql) == ["good"]
    assert theirs.exists() and linked.exists()
    assert flushed.returncode == 1, flushed
    assert f"{theirs}: owned by nobody" in flushed.stderr, flushed.stderr
    assert f"{linked}: has 2 hard links" in flushed.stderr, flushed.stderr


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o720], ids=lambda m: f"{m:o}")
def test_flush_refuses_a_spool_others_can_write(tmp_path: Path, receiver: ReceiverServer, sql: Sql, mode: int) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    _request_file(tmp_path, "planted").rename(spool / "1000000000000000000-1-00000000.pb.gz")
    spool.chmod(mode)
    flushed = _flush(client_env(receiver.url, spool))
    assert flushed.returncode == 2, flushed
    assert _names(sql) == []
    assert f"the spool directory {spool} is writable by others (mode {mode:o}" in flushed.stderr, flushed.stderr
    assert f"chmod go-w {spool}" in flushed.stderr, flushed.stderr
    assert len(_spooled(spool)) == 1


def test_root_does_not_send_what_nobody_planted(
    shared_dir: Path, tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    """The reported case: a world-writable spool, a file written there by `nobody`, flushed by root with a key."""
    _nobody()
    spool = shared_dir / "spool"
    spool.mkdir()
    spool.chmod(0o777)
    body = _request_file(tmp_path, "planted").read_bytes()
    planted = spool / "1000000000000000000-1-00000000.pb.gz"
    subprocess.run(["sh", "-c", f"cat > {planted}"], input=body, user="nobody", check=True)
    env = client_env(receiver.url, spool, OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20root-key")
    flushed = _flush(env)
    assert flushed.returncode == 2 and "writable by others" in flushed.stderr, flushed
    assert _names(sql) == []
    assert planted.exists()


def test_flush_refuses_a_spool_owned_by_another_user(
    tmp_path: Path, shared_dir: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    uid, gid = _nobody()
    spool = shared_dir / "theirs"
    spool.mkdir(mode=0o755)
    os.chown(spool, uid, gid)
    body = _request_file(tmp_path, "planted").read_bytes()
    subprocess.run(
        ["sh", "-c", f"cat > {spool}/1000000000000000000-1-00000000.pb.gz"], input=body, user="nobody", check=True
    )
    # directly, and through a link of root's own that points there
    link = tmp_path / "spool-link"
    link.symlink_to(spool)
    for path in (spool, link):
        flushed = _flush(client_env(receiver.url, path))
        assert flushed.returncode == 2, flushed
        assert "belongs to nobody" in flushed.stderr and "not to you (root" in flushed.stderr, flushed.stderr
        assert "GLIA_SPOOL_DIR" in flushed.stderr, flushed.stderr
    assert _names(sql) == []


def test_a_spool_that_is_a_link_owned_by_another_user_is_refused(
    tmp_path: Path, shared_dir: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    """The link's owner can point it anywhere, at any time: refused even while it points at root's own directory."""
    _nobody()
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    _request_file(tmp_path, "mine").rename(own / "1000000000000000000-1-00000000.pb.gz")
    public = shared_dir / "public"
    public.mkdir()
    public.chmod(0o777)
    link = public / "spool"
    subprocess.run(["ln", "-s", str(own), str(link)], user="nobody", check=True)
    assert link.lstat().st_uid != 0
    flushed = _flush(client_env(receiver.url, link))
    assert flushed.returncode == 2, flushed
    assert f"the spool directory {link} is a symbolic link owned by nobody" in flushed.stderr, flushed.stderr
    assert _names(sql) == []
    # The same directory, named directly, is fine.
    assert _flush(client_env(receiver.url, own)).returncode == 0
    assert _names(sql) == ["mine"]


def test_background_resend_refuses_a_spool_others_can_write(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    planted = spool / "1000000000000000000-1-00000000.pb.gz"
    _request_file(tmp_path, "planted").rename(planted)
    spool.chmod(0o777)
    env = client_env(receiver.url, spool)
    proc = subprocess.run([GLIA, "run", "--name", "job", "--", "sleep", "1"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _names(sql) == ["job"]  # the run itself went straight to the receiver; nothing from the spool
    assert planted.exists()
    assert proc.stderr.count("will not use the spool") == 1, proc.stderr
    assert "writable by others" in proc.stderr, proc.stderr


def test_a_tracked_run_never_writes_into_a_refused_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o777)
    env = client_env(None, spool, GLIA_EXPORT_DEADLINE_MS="250")
    t0 = time.monotonic()
    proc = run_python(tmp_path, FIFTY_RUNS, env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 10
    assert list(spool.iterdir()) == []
    assert proc.stderr.count("will not use the spool") == 1, proc.stderr
    assert "are lost" in proc.stderr, proc.stderr
    run = subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr.count("will not use the spool") == 1, run.stderr
    assert list(spool.iterdir()) == []


def test_a_link_in_the_spool_never_counts_towards_its_bound(tmp_path: Path) -> None:
    """A link to a big file must neither make the client drop real runs to stay under the bound nor be deleted."""
    spool = tmp_path / "spool"
    env = client_env(None, spool, GLIA_SPOOL_MAX_BYTES="100000")
    assert subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True).returncode == 0
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1_000_000)
    link = spool / "1000000000000000000-1-00000000.pb"
    link.symlink_to(big)
    assert subprocess.run([GLIA, "run", "--", "true"], env=env, capture_output=True).returncode == 0
    assert link.is_symlink() and big.stat().st_size == 1_000_000
    assert len([p for p in _spooled(spool) if not p.is_symlink()]) == 2
