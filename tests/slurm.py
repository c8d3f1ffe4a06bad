"""A single-node Slurm cluster for the tests: munged, slurmctld and slurmd, started for a test session or reused.

`.ci/install-slurm.sh` installs Slurm 22.05 and writes the munge key and /etc/slurm/slurm.conf; this module only
runs the daemons, each in the foreground as a child of the session that started it. Test sessions may run side by
side (CI and a developer, two agents): starting is serialised by a lock, every session holds a shared "user" lock
while it submits jobs, and the last session out stops the daemons test sessions started (a daemon found running
when the first session came is someone else's and is left alone). Without the packages, or as a user who cannot
start them, `need()` skips the test (fails it under CI=true).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.conftest import need

CONF = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
# slurm.conf's defaults (.ci/install-slurm.sh sets no others): how to tell a daemon is already there
SLURMCTLD_PORT = 6817
SLURMD_PORT = 6818

STATE_DIR = Path(tempfile.gettempdir()) / "glia-slurm"
START_LOCK = STATE_DIR / "start.lock"
USERS_LOCK = STATE_DIR / "users.lock"
STARTED = STATE_DIR / "started.json"  # the daemons test sessions started: [{"name": ..., "pid": ...}]

TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE"}
)  # fmt: skip
READY_STATES = frozenset({"idle", "mixed", "allocated"})  # the last two: another session's jobs are running


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def _run(args: Sequence[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int, name: str) -> bool:
    """Whether `pid` is still the daemon `name` (not exited, not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z" and Path(cmdline).name == name


@dataclass
class Job:
    """One job (an array task is one) as `scontrol show job` reports it."""

    job_id: str
    array_job_id: str | None
    array_task_id: str | None
    state: str
    exit_code: str

    @property
    def scheduler_job_id(self) -> str:
        """What Slurm calls the job: ARRAYJOB_TASK for an array task, else the job id."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id


@dataclass
class SlurmCluster:
    """A running single-node cluster; `submit` and `wait` drive jobs on it."""

    node: str
    log_dir: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _users: IO[bytes] | None = None

    def submit(self, args: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
        """`sbatch --parsable ARGS...` from `cwd` with `env` (sbatch passes it on to the job); the job id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, f"sbatch failed ({proc.returncode}): {proc.stderr}"
        return proc.stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[Job]:
        """The job, or every task of an array job, as the controller knows it now."""
        proc = _run(["scontrol", "-o", "show", "job", job_id])
        assert proc.returncode == 0, f"scontrol show job {job_id}: {proc.stderr}"
        jobs = []
        for line in proc.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            jobs.append(
                Job(
                    job_id=fields["JobId"],
                    array_job_id=fields.get("ArrayJobId"),
                    array_task_id=fields.get("ArrayTaskId"),
                    state=fields["JobState"],
                    exit_code=fields.get("ExitCode", ""),
                )
            )
        return jobs

    def wait(self, job_id: str, tasks: int = 1, timeout: float = 120) -> list[Job]:
        """Wait until the job's `tasks` tasks have all ended; cancels the job and fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(job_id)
            if len(jobs) == tasks and all(j.state in TERMINAL_STATES for j in jobs):
                return sorted(jobs, key=lambda j: int(j.array_task_id or 0))
            if time.monotonic() > deadline:
                _run(["scancel", job_id])
                raise AssertionError(f"job {job_id} did not end within {timeout} s: {jobs}\n{self.logs()}")
            time.sleep(0.3)

    def logs(self) -> str:
        """The last lines of each daemon's output, for a failure message."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def _record(name: str, pid: int) -> None:
    started = json.loads(STARTED.read_text()) if STARTED.exists() else []
    started.append({"name": name, "pid": pid})
    STARTED.write_text(json.dumps(started))


def _spawn(cluster: SlurmCluster, name: str, args: list[str], user: str | None = None) -> subprocess.Popen[bytes]:
    with (cluster.log_dir / f"{name}.log").open("ab") as out:
        # its own session: a Ctrl-C meant for pytest does not reach it; the teardown stops it
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    cluster.started.append(proc)
    _record(name, proc.pid)
    return proc


def _wait_for(what: str, ready: Callable[[], bool], cluster: SlurmCluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for proc in cluster.started:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}\n{cluster.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout} s\n{cluster.logs()}")
        time.sleep(0.2)


def _munge_ok() -> bool:
    return MUNGE_SOCKET.exists() and _run(["munge", "-n"]).returncode == 0


def _ctld_ok() -> bool:
    return _listening(SLURMCTLD_PORT) and _run(["scontrol", "ping"]).returncode == 0


def _node_states() -> dict[str, str]:
    proc = _run(["sinfo", "-h", "-N", "-o", "%N %t"])
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip()) if proc.returncode == 0 else {}


def start_cluster(timeout: float = 60) -> SlurmCluster:
    """A running cluster: munged, slurmctld and slurmd are started where not running, then the node is awaited."""
    daemons = {name: _tool(name) for name in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")}
    missing = [name for name, path in daemons.items() if path is None]
    need(not missing and CONF.exists(), f"Slurm is not installed ({missing or CONF} missing): .ci/install-slurm.sh")
    STATE_DIR.mkdir(exist_ok=True)
    cluster = SlurmCluster(node="", log_dir=STATE_DIR)
    cluster._users = USERS_LOCK.open("ab")
    fcntl.flock(cluster._users, fcntl.LOCK_SH)
    try:
        with START_LOCK.open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = _munge_ok() and _ctld_ok() and _listening(SLURMD_PORT)
            need(running or os.geteuid() == 0, "Slurm's daemons are not running and only root can start them")
            if not _munge_ok():
                MUNGE_SOCKET.parent.mkdir(mode=0o755, exist_ok=True)
                shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
                _spawn(cluster, "munged", [str(daemons["munged"]), "-F"], user="munge")
                _wait_for("munged", _munge_ok, cluster)
            if not _ctld_ok():
                _spawn(cluster, "slurmctld", [str(daemons["slurmctld"]), "-D"])
                _wait_for("slurmctld", _ctld_ok, cluster)
            if not _listening(SLURMD_PORT):
                _spawn(cluster, "slurmd", [str(daemons["slurmd"]), "-D"])
            _wait_for(
                "the node (sinfo: idle)",
                lambda: any(state in READY_STATES for state in _node_states().values()),
                cluster,
                timeout,
            )
        cluster.node = next(node for node, state in _node_states().items() if state in READY_STATES)
        return cluster
    except BaseException:
        stop_cluster(cluster)
        raise


def _cancel_jobs(timeout: float) -> None:
    """Cancel this user's jobs still queued or running (a test that timed out leaves its jobs behind) and wait
    for them to go: only on a controller test sessions started, which no one else submits to."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    _run(["scancel", f"--user={user}"])
    deadline = time.monotonic() + timeout
    while _run(["squeue", "-h", f"--user={user}"]).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.3)


def stop_cluster(cluster: SlurmCluster, timeout: float = 30) -> None:
    """Leave the cluster; the last session out stops every daemon test sessions started, by pid."""
    if cluster._users is None:
        return
    fcntl.flock(cluster._users, fcntl.LOCK_UN)
    try:
        fcntl.flock(cluster._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        cluster._users.close()  # another session still submits jobs: it stops the daemons when it leaves
        return
    try:
        with START_LOCK.open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            started = json.loads(STARTED.read_text()) if STARTED.exists() else []
            if any(d["name"] == "slurmctld" and _alive(d["pid"], d["name"]) for d in started):
                _cancel_jobs(timeout)
            # slurmd and slurmctld before munged, which they need to say goodbye
            for daemon in reversed(started):
                if _alive(daemon["pid"], daemon["name"]):
                    os.kill(daemon["pid"], signal.SIGTERM)
                    deadline = time.monotonic() + timeout
                    while _alive(daemon["pid"], daemon["name"]) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    if _alive(daemon["pid"], daemon["name"]):
                        os.kill(daemon["pid"], signal.SIGKILL)
            for proc in cluster.started:
                proc.wait(timeout=timeout)  # reap this session's own children
            STARTED.unlink(missing_ok=True)
    finally:
        cluster._users.close()
        cluster._users = None
