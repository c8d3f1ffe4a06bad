"""Real Nextflow with `glia nextflow-config` made under GLIA_KEEP_STDERR: its tasks run under `glia run --keep-stderr`,
so a failed task's stderr is stored with that task's run, while Nextflow still sees the task's stderr as its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, client_env
from tests.nextflow import nextflow, nextflow_lib

PIPELINE = """\
process ok {
    script:
    \"\"\"
    echo fine; echo 'all good' >&2
    \"\"\"
}

process bad {
    script:
    \"\"\"
    echo "reading sample.fq --token s3cr3t" >&2; echo "bad input" >&2; exit 5
    \"\"\"
}

workflow {
    ok()
    bad()
}
"""


def test_a_failed_tasks_stderr_is_stored_with_its_run(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    lib = nextflow_lib()
    work = tmp_path / "pipeline"
    work.mkdir()
    (work / "main.nf").write_text(PIPELINE)
    (work / "test.config").write_text("executor {\n    pollInterval = '50ms'\n}\n")
    env = client_env(receiver.url, tmp_path / "spool")
    config = tmp_path / "glia.config"
    made = subprocess.run(
        [GLIA, "nextflow-config", "-o", str(config)], env={**env, "GLIA_KEEP_STDERR": "true"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "'run', '--keep-stderr', '--nextflow-task'" in config.read_text()

    proc = nextflow(lib, work, env, "main.nf", "-c", str(work / "test.config"), "-c", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "exit status (5)" in proc.stdout + proc.stderr
    # Nextflow's own record of the task's stderr is whole: glia passed it through
    errs = sorted(p.read_text() for p in work.glob("work/*/*/.command.err"))
    assert errs == ["all good\n", "reading sample.fq --token s3cr3t\nbad input\n"]

    tasks = {r["name"]: r for r in sql("SELECT name, trace_id, span_id FROM spans WHERE run_kind = 'task'")}
    assert set(tasks) == {"ok", "bad"}
    (record,) = sql("SELECT trace_id, span_id, body #>> '{}' AS body, attributes FROM log_records")
    assert (record["trace_id"], record["span_id"]) == (tasks["bad"]["trace_id"], tasks["bad"]["span_id"])
    assert record["body"] == "reading sample.fq --token [REDACTED]\nbad input"
    assert json.loads(record["attributes"])["glia.stderr.truncated"] is False


def test_the_switch_is_refused_when_it_means_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [GLIA, "nextflow-config", "--keep-stderr=sometimes", "-o", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "sometimes" in proc.stderr
    always = subprocess.run(
        [GLIA, "nextflow-config", "--keep-stderr=always", "-o", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert always.returncode == 0
    assert "'run', '--keep-stderr=always', '--nextflow-task'" in (tmp_path / "c").read_text()
