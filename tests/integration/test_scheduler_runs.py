"""Runs under a scheduler, with no option given: `glia run`, a tracked Python block and an R script in an environment
set as a Slurm array task's (or a GitLab CI job's), tokens included, store the scheduler's context in the row."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ReceiverServer, need
from tests.helpers import Sql, client_env, glia_run, run_python

MIB = 1024 * 1024
# what a task of `sbatch --array=1-3 --mem=500M --cpus-per-task=2 -p short` sees (DESIGN.md, Slurm 22.05)
SLURM_ARRAY_TASK = {
    "SLURM_JOB_ID": "4245",
    "SLURM_ARRAY_JOB_ID": "4242",
    "SLURM_ARRAY_TASK_ID": "3",
    "SLURM_ARRAY_TASK_COUNT": "3",
    "SLURM_JOB_NAME": "align.sh",
    "SLURM_JOB_PARTITION": "short",
    "SLURM_MEM_PER_NODE": "500",
    "SLURM_CPUS_PER_TASK": "2",
    "SLURM_CPUS_ON_NODE": "2",
    "SLURM_JOB_USER": "alice",
    "SLURM_CLUSTER_NAME": "cluster",
    "SLURM_SUBMIT_DIR": "/home/alice",
}
TOKENS = {"CI_JOB_TOKEN": "SECRET-job-token", "GITHUB_TOKEN": "SECRET-github-token"}

COLUMNS = "scheduler, scheduler_job_id, requested_memory_bytes, requested_cpus, requested_seconds, resource"


def _bag(row: dict[str, Any]) -> dict[str, Any]:
    value = row["resource"]
    return json.loads(value) if isinstance(value, str) else dict(value)


def test_glia_run_in_a_slurm_array_task_stores_its_job(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool", **SLURM_ARRAY_TASK, **TOKENS)
    assert glia_run(["--", "true"], env).returncode == 0
    (row,) = sql(f"SELECT {COLUMNS} FROM spans")
    assert row["scheduler"] == "slurm" and row["scheduler_job_id"] == "4242_3"
    assert row["requested_memory_bytes"] == 500 * MIB and row["requested_cpus"] == 2.0
    assert row["requested_seconds"] is None  # Slurm 22.05 does not say
    bag = _bag(row)
    assert bag["glia.scheduler.partition"] == "short" and bag["glia.scheduler.job_name"] == "align.sh"
    assert bag["glia.scheduler.array_task_id"] == "3"
    # the runs view has the same names
    (run,) = sql("SELECT scheduler, scheduler_job_id, requested_memory_bytes FROM runs")
    assert run == {"scheduler": "slurm", "scheduler_job_id": "4242_3", "requested_memory_bytes": 500 * MIB}
    everything = json.dumps(sql("SELECT * FROM spans"), default=str)
    assert "SECRET" not in everything, "a token reached the database"


def test_a_task_s_own_request_wins_over_the_job_s(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    env = client_env(receiver.url, tmp_path / "spool", **SLURM_ARRAY_TASK)
    args = ["--attr", f"glia.requested.memory_bytes={100 * MIB}", "--attr", "glia.task.attempt=2", "--", "true"]
    assert glia_run(args, env).returncode == 0
    (row,) = sql("SELECT requested_memory_bytes, requested_cpus, task_attempt, attributes FROM spans")
    assert row["requested_memory_bytes"] == 100 * MIB and row["requested_cpus"] == 2.0
    assert row["task_attempt"] == 2
    attributes = json.loads(row["attributes"])
    assert "glia.requested.memory_bytes" not in attributes and "glia.task.attempt" not in attributes


def test_a_tracked_block_in_a_gitlab_job_records_the_pipeline(
    tmp_path: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    gitlab = {
        "GITLAB_CI": "true",
        "CI_PIPELINE_ID": "991",
        "CI_JOB_ID": "31337",
        "CI_JOB_NAME": "test",
        "CI_PROJECT_PATH": "lab/pipeline",
        "CI_REPOSITORY_URL": "https://gitlab-ci-token:SECRET-job-token@gitlab.example.org/lab/pipeline.git",
    }
    env = client_env(receiver.url, tmp_path / "spool", **gitlab, **TOKENS)
    proc = run_python(tmp_path, "import glia_otel\nwith glia_otel.track('job'):\n    pass\n", env)
    assert proc.returncode == 0, proc.stderr
    (row,) = sql(f"SELECT {COLUMNS} FROM spans")
    assert row["scheduler"] == "gitlab-ci" and row["scheduler_job_id"] == "31337"
    bag = _bag(row)
    assert bag["cicd.pipeline.run.id"] == "991" and bag["cicd.pipeline.name"] == "lab/pipeline"
    assert "SECRET" not in json.dumps(sql("SELECT * FROM spans"), default=str)


def test_an_r_script_in_a_slurm_array_task_stores_its_job(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    need(shutil.which("Rscript"), "Rscript is not installed (run .ci/install-r.sh)")
    script = tmp_path / "job.R"
    script.write_text('library(glia)\ninvisible(glia_track(sum(1:10), name = "step"))\n')
    env = client_env(receiver.url, tmp_path / "spool", **SLURM_ARRAY_TASK, **TOKENS)
    proc = subprocess.run(["Rscript", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = sql(f"SELECT {COLUMNS} FROM spans")
    assert row["scheduler"] == "slurm" and row["scheduler_job_id"] == "4242_3"
    assert row["requested_memory_bytes"] == 500 * MIB and row["requested_cpus"] == 2.0
    assert _bag(row)["glia.scheduler.partition"] == "short"
    assert "SECRET" not in json.dumps(sql("SELECT * FROM spans"), default=str)
