"""`glia run` inside real Slurm jobs (a single-node Slurm 22.05, tests/slurm.py) against a real receiver: each job's
row carries the scheduler context Slurm gave the job, read from PostgreSQL; an array job, a plain one, and real
Nextflow 24.10 submitting its tasks through its Slurm executor with `glia nextflow-config`.

Jobs run as the submitting user with the submitting environment (sbatch's default `--export=ALL`), so the job finds
the venv's `glia` by absolute path and the receiver through OTEL_EXPORTER_OTLP_ENDPOINT. Every wait is bounded: a
job that does not end in time is cancelled and the test fails with the daemons' last log lines.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env
from tests.nextflow import glia_config, nextflow, nextflow_lib
from tests.slurm import SlurmCluster, start_cluster, stop_cluster

MIB = 1024 * 1024

# The job's own view: its pid (the row's process_pid) and every SLURM_* variable Slurm set for it.
REPORT = "import json, os; print(json.dumps({'pid': os.getpid(), **{k: v for k, v in os.environ.items() if k.startswith('SLURM_')}}))"  # noqa: E501


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A running single-node Slurm cluster for the session, stopped at the end if this session started it."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def job_env(receiver: ReceiverServer, spool: Path) -> dict[str, str]:
    """The submitting environment: a clean client's, with no Slurm variables of the test's own to pass on."""
    env = client_env(receiver.url, spool)
    return {k: v for k, v in env.items() if not k.startswith(("SLURM_", "SBATCH_"))}


def reports(out_dir: Path, pattern: str) -> list[dict[str, Any]]:
    """What each job printed (REPORT's line), one dict per output file."""
    return [json.loads(path.read_text().splitlines()[-1]) for path in sorted(out_dir.glob(pattern))]


SCHEDULER_ROW = """
    SELECT process_pid, exit_code, run_kind, service_name, scheduler, scheduler_job_id, requested_memory_bytes,
           requested_cpus, resource
    FROM spans ORDER BY process_pid
"""


def test_array_job_rows(tmp_path: Path, slurm: SlurmCluster, receiver: ReceiverServer, sql: Sql) -> None:
    spool = tmp_path / "spool"
    job_id = slurm.submit(
        [
            "--array=1-3",
            "--mem=500M",
            "--cpus-per-task=1",
            "--job-name=glia-array",
            f"--output={tmp_path}/%A_%a.out",
            f"--error={tmp_path}/%A_%a.err",
            "--time=5",
            "--wrap",
            shlex.join([GLIA, "run", "--", sys.executable, "-c", REPORT]),
        ],
        job_env(receiver, spool),
        tmp_path,
    )
    jobs = slurm.wait(job_id, tasks=3, timeout=180)
    errors = {p.name: p.read_text() for p in tmp_path.glob("*.err")}
    assert [(j.state, j.exit_code) for j in jobs] == [("COMPLETED", "0:0")] * 3, errors
    assert [j.scheduler_job_id for j in jobs] == [f"{job_id}_{task}" for task in (1, 2, 3)]

    seen = reports(tmp_path, f"{job_id}_*.out")
    # what Slurm told each job: the variables the client reads
    assert sorted(r["SLURM_ARRAY_TASK_ID"] for r in seen) == ["1", "2", "3"]
    for r in seen:
        assert r["SLURM_ARRAY_JOB_ID"] == job_id
        assert r["SLURM_ARRAY_TASK_COUNT"] == "3"
        assert r["SLURM_MEM_PER_NODE"] == "500"
        assert r["SLURM_CPUS_PER_TASK"] == "1"
        assert r["SLURM_JOB_NAME"] == "glia-array"
        assert r["SLURM_JOB_PARTITION"]
    assert not list(spool.glob("*")), "the jobs spooled instead of delivering"

    rows = sql(SCHEDULER_ROW)
    by_pid = {r["pid"]: r for r in seen}
    assert sorted(row["process_pid"] for row in rows) == sorted(by_pid)
    for row in rows:
        job = by_pid[row["process_pid"]]
        resource = json.loads(row["resource"])
        assert row["run_kind"] == "command" and row["exit_code"] == 0
        assert row["scheduler"] == "slurm"
        assert row["scheduler_job_id"] == f"{job_id}_{job['SLURM_ARRAY_TASK_ID']}"
        assert row["requested_memory_bytes"] == 500 * MIB
        assert row["requested_cpus"] == 1.0
        assert resource["glia.scheduler.job_name"] == "glia-array"
        assert resource["glia.scheduler.partition"] == job["SLURM_JOB_PARTITION"]
        assert resource["glia.scheduler.array_job_id"] == job_id
        assert resource["glia.scheduler.array_task_id"] == job["SLURM_ARRAY_TASK_ID"]
        assert resource["glia.scheduler.node"] == slurm.node


def test_plain_job_row(tmp_path: Path, slurm: SlurmCluster, receiver: ReceiverServer, sql: Sql) -> None:
    """A job that is no array task: its own job id, what it asked for, and its exit code through glia and Slurm."""
    command = shlex.join([GLIA, "run", "--", sys.executable, "-c", REPORT + "; raise SystemExit(3)"])
    job_id = slurm.submit(
        [
            "--mem=1G",
            f"--cpus-per-task={min(2, os.cpu_count() or 1)}",
            "--job-name=plain job",
            f"--output={tmp_path}/%j.out",
            f"--error={tmp_path}/%j.err",
            "--time=5",
            "--wrap",
            command,
        ],
        job_env(receiver, tmp_path / "spool"),
        tmp_path,
    )
    (job,) = slurm.wait(job_id, timeout=120)
    assert (job.state, job.exit_code) == ("FAILED", "3:0"), (tmp_path / f"{job_id}.err").read_text()
    (seen,) = reports(tmp_path, f"{job_id}.out")
    assert "SLURM_ARRAY_JOB_ID" not in seen

    (row,) = sql(SCHEDULER_ROW)
    resource = json.loads(row["resource"])
    assert row["process_pid"] == seen["pid"] and row["exit_code"] == 3
    assert row["scheduler"] == "slurm"
    assert row["scheduler_job_id"] == job_id
    assert row["requested_memory_bytes"] == 1024 * MIB
    assert row["requested_cpus"] == float(seen["SLURM_CPUS_PER_TASK"])
    assert resource["glia.scheduler.job_name"] == "plain job"
    assert "glia.scheduler.array_job_id" not in resource and "glia.scheduler.array_task_id" not in resource


# --- Nextflow's Slurm executor ---------------------------------------------------------------------------------

PIPELINE = """\
process hello {
    tag "$i"
    cpus 1
    memory '300 MB'
    time '5m'
    input: val i
    script:
    \"\"\"
    echo hello $i
    \"\"\"
}

process flaky {
    errorStrategy 'retry'
    maxRetries 1
    memory '200 MB'
    script:
    \"\"\"
    test ${task.attempt} -ge 2 || exit 3
    \"\"\"
}

workflow {
    hello(Channel.of(1..3))
    flaky()
}
"""

# Nextflow polls a grid's queue every minute and waits 270 s for a job's exit file by default: a second here.
SLURM_CONFIG = """\
process.executor = 'slurm'
executor {
    queueStatInterval = '1 sec'
    pollInterval = '1 sec'
    exitReadTimeout = '1 sec'
}
trace {
    enabled = true
    file = 'trace.txt'
    fields = 'hash,name,attempt,native_id,status,exit'
}
"""

TASK_ROW = """
    SELECT trace_id, span_id, parent_span_id, name, service_name, run_kind, exit_code, workflow_run_id, task_name,
           task_attempt, scheduler, scheduler_job_id, requested_memory_bytes, requested_cpus, attributes, resource
    FROM spans ORDER BY start_time
"""


def test_nextflow_slurm_executor_rows(tmp_path: Path, slurm: SlurmCluster, receiver: ReceiverServer, sql: Sql) -> None:
    """Each task attempt Nextflow submits to Slurm is a row under its workflow, with the job Slurm ran it as."""
    lib = nextflow_lib()
    (tmp_path / "main.nf").write_text(PIPELINE)
    (tmp_path / "slurm.config").write_text(SLURM_CONFIG)
    config = glia_config(tmp_path / "glia.config")
    env = job_env(receiver, tmp_path / "spool")
    proc = nextflow(lib, tmp_path, env, "main.nf", "-c", str(tmp_path / "slurm.config"), "-c", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    with open(tmp_path / "trace.txt", newline="") as f:
        trace = list(csv.DictReader(f, delimiter="\t"))
    # Nextflow's record of the jobs it submitted: five attempts, each its own Slurm job
    assert sorted((t["name"], t["attempt"], t["status"]) for t in trace) == [
        ("flaky", "1", "FAILED"),
        ("flaky", "2", "COMPLETED"),
        ("hello (1)", "1", "COMPLETED"),
        ("hello (2)", "1", "COMPLETED"),
        ("hello (3)", "1", "COMPLETED"),
    ]
    assert len({t["native_id"] for t in trace}) == 5

    rows = sql(TASK_ROW)
    (workflow,) = [r for r in rows if r["run_kind"] == "workflow"]
    tasks = [r for r in rows if r["run_kind"] == "task"]
    assert len(rows) == 6 and len(tasks) == 5
    for t in trace:
        short = t["hash"].replace("/", "")
        (row,) = [r for r in tasks if json.loads(r["attributes"])["glia.nextflow.hash"].startswith(short)]
        resource = json.loads(row["resource"])
        assert (row["trace_id"], row["parent_span_id"]) == (workflow["trace_id"], workflow["span_id"]), t["name"]
        assert row["workflow_run_id"] == workflow["workflow_run_id"] is not None
        assert (row["task_name"], row["task_attempt"]) == (t["name"], int(t["attempt"]))
        assert row["exit_code"] == int(t["exit"])
        # the job Slurm ran the attempt as: the row's scheduler context is the job's own
        assert row["scheduler"] == "slurm"
        assert row["scheduler_job_id"] == t["native_id"], t["name"]
        assert resource["glia.scheduler.job_name"] == f"nf-{t['name'].replace(' ', '_')}"
        assert resource["glia.scheduler.node"] == slurm.node
        expected_mib = 300 if row["service_name"] == "hello" else 200  # Nextflow's and Slurm's figure alike
        assert row["requested_memory_bytes"] == expected_mib * MIB
        assert row["requested_cpus"] == 1.0
