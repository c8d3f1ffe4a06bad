"""Real Snakemake with `--logger glia` under GLIA_KEEP_STDERR=true: a failed shell job's stderr is stored with the
job's run; a successful job's is not, and Snakemake's own output is as it would be."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ReceiverServer
from tests.helpers import Sql, client_env

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SNAKEFILE = """\
rule all:
    input: "ok.txt", "bad.txt"

rule ok:
    output: "ok.txt"
    shell: "echo 'ok says hi' >&2; touch {output}"

rule bad:
    output: "bad.txt"
    shell: "echo 'cannot open ref.fa' >&2; exit 4"
"""


def test_a_failed_shell_jobs_stderr_is_stored_with_its_run(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE)
    env = client_env(receiver.url, tmp_path / "spool", GLIA_KEEP_STDERR="true")
    proc = subprocess.run(
        [SNAKEMAKE, "all", "-c", "1", "--keep-going", "--logger", "glia"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "cannot open ref.fa" in proc.stderr and "ok says hi" in proc.stderr  # passed through to Snakemake's log
    jobs = {
        r["service_name"]: r for r in sql("SELECT service_name, span_id, exit_code FROM spans WHERE run_kind = 'task'")
    }
    assert jobs["bad"]["exit_code"] == 4 and jobs["ok"]["exit_code"] == 0
    (record,) = sql("SELECT span_id, body #>> '{}' AS body FROM log_records")
    assert record == {"span_id": jobs["bad"]["span_id"], "body": "cannot open ref.fa"}
