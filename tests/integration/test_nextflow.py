"""Real Nextflow 24.10 (core jars, local executor) with `glia nextflow-config`, into a real receiver and PostgreSQL.

One pipeline of 24 task attempts (17 light tasks, allocations of 50, 150 and 200 MiB, a task retried once, a failing
task that is ignored, a task whose tag needs quoting) is checked row by row: one row per attempt, the workflow span
and its children, the names, ids, requested resources, and the 200 MiB task's peak within 3% of GNU time's %M for the
same program. glia itself sits at a path that needs escaping in the config. A second run, endpoint down, fails by its
own task: the pipeline behaves as without glia and its runs come out of the spool, the workflow span with its error
and, the run being a Slurm job's, that job's id like its tasks.

A JVM start costs seconds: each test starts Nextflow once, bounded by NXF_TIMEOUT_S.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from glia_otel._nextflow import workflow_ids
from tests.conftest import REPO, ReceiverServer, need
from tests.helpers import GLIA, Sql, client_env

NXF_TIMEOUT_S = 180
GNU_TIME = "/usr/bin/time"

ALLOC = """\
import os, sys, time
mib, hold = int(sys.argv[1]), float(sys.argv[2])
b = bytearray(mib << 20)
page = os.sysconf("SC_PAGE_SIZE")
b[::page] = b"\\x01" * len(range(0, len(b), page))  # resident: one byte written per page
time.sleep(hold)
"""

PIPELINE = """\
params.python = 'python3'
params.alloc = 'alloc.py'

process light {
    tag "$i"
    cpus 1
    memory '64 MB'
    time '10m'
    input: val i
    script:
    \"\"\"
    echo light $i
    \"\"\"
}

process alloc {
    tag "${mib} MiB"
    memory '1 GB'
    input: val mib
    script:
    \"\"\"
    '${params.python}' '${params.alloc}' ${mib} 0.3
    \"\"\"
}

process flaky {
    errorStrategy 'retry'
    maxRetries 2
    script:
    \"\"\"
    test ${task.attempt} -ge 2 || exit 3
    \"\"\"
}

process broken {
    errorStrategy 'ignore'
    script:
    \"\"\"
    exit 7
    \"\"\"
}

process quoted {
    tag "it's \\"quoted\\" \\$HOME *"
    script:
    \"\"\"
    true
    \"\"\"
}

workflow {
    light(Channel.of(1..17))
    alloc(Channel.of(50, 150, 200))
    flaky()
    broken()
    quoted()
}
"""

FAILING = """\
process ok {
    script:
    \"\"\"
    echo fine
    \"\"\"
}

process bad {
    script:
    \"\"\"
    sleep 1; echo "bad input" >&2; exit 5
    \"\"\"
}

workflow {
    ok()
    bad()
}
"""

# The tests' own settings: faster polling of the local executor (its default is 100 ms between checks).
TEST_CONFIG = "executor {\n    pollInterval = '50ms'\n}\n"


def nextflow_lib() -> Path | None:
    """The jar directory of .ci/install-nextflow.sh (NXF_LIB, else .build/nextflow/env)."""
    given = os.environ.get("NXF_LIB")
    if given:
        return Path(given)
    env = REPO / ".build" / "nextflow" / "env"
    if env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith("NXF_LIB="):
                return Path(line.split("=", 1)[1])
    return None


@pytest.fixture
def nxf_lib() -> Path:
    lib = nextflow_lib()
    need(lib is not None and lib.is_dir(), "no Nextflow jars (run `bash .ci/install-nextflow.sh`)")
    need(shutil.which("java"), "java is not installed")
    assert lib is not None
    return lib


def nextflow(lib: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`nextflow ARGS...` from the core jars, in `cwd`, offline, its home inside `cwd`."""
    env = {**env, "NXF_HOME": str(cwd / ".nxf-home"), "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    command = ["java", "-cp", f"{lib}/*", "nextflow.cli.Launcher", "run", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=NXF_TIMEOUT_S)


def glia_config(tmp: Path, *args: str) -> Path:
    """`glia nextflow-config ARGS` written to a file, with glia at a path that needs escaping in Groovy and bash."""
    odd = tmp / "it's a $dir \\ here"
    odd.mkdir()
    (odd / "glia").symlink_to(GLIA)
    config = tmp / "glia.config"
    proc = subprocess.run(
        [GLIA, "nextflow-config", "--glia", str(odd / "glia"), "-o", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return config


def gnu_time_peak_kib(argv: list[str]) -> int:
    """GNU time's %M (KiB) for `argv`."""
    proc = subprocess.run([GNU_TIME, "-f", "%M", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1])


# The contract's attributes that revision 0004 made typed columns (the receiver moves them out of the bag).
COLUMNS = {
    "glia.workflow.engine": "workflow_engine",
    "glia.workflow.run_id": "workflow_run_id",
    "glia.workflow.name": "workflow_name",
    "glia.task.name": "task_name",
    "glia.task.attempt": "task_attempt",
    "glia.requested.memory_bytes": "requested_memory_bytes",
    "glia.requested.cpus": "requested_cpus",
    "glia.requested.seconds": "requested_seconds",
}


def attr(row: dict[str, Any], name: str) -> Any:
    """An attribute of a stored span (a row of `SELECT *`): its typed column where there is one, else the bag's."""
    bag = row["attributes"]
    bag = json.loads(bag) if isinstance(bag, str) else bag
    column = COLUMNS.get(name)
    if column is not None:
        assert name not in bag, f"{name} in the bag, not only in its column {column}"
        return row[column]
    return bag.get(name)


def spans(sql: Sql, trace_id: str) -> list[dict[str, Any]]:
    return sql("SELECT * FROM spans WHERE trace_id = $1 ORDER BY start_time", trace_id)


def test_a_pipeline_records_one_run_per_task_attempt_under_its_workflow(
    tmp_path: Path, nxf_lib: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    need(os.path.exists(GNU_TIME), "GNU time is not installed (Debian package `time`)")
    work = tmp_path / "pipeline"
    work.mkdir()
    (work / "main.nf").write_text(PIPELINE)
    (work / "alloc.py").write_text(ALLOC)
    (work / "test.config").write_text(TEST_CONFIG)
    config = glia_config(tmp_path)
    env = client_env(receiver.url, tmp_path / "spool")
    proc = nextflow(
        nxf_lib,
        work,
        env,
        "main.nf",
        "-c",
        str(work / "test.config"),
        "-c",
        str(config),
        "-with-trace",
        "trace.txt",
        "--python",
        sys.executable,
        "--alloc",
        str(work / "alloc.py"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    (workflow,) = sql("SELECT * FROM spans WHERE run_kind = 'workflow'")
    session = attr(workflow, "glia.workflow.run_id")
    run_name = workflow["name"]
    trace_id, span_id = workflow_ids(session, run_name)
    assert (workflow["trace_id"], workflow["span_id"]) == (f"{trace_id:032x}", f"{span_id:016x}")
    assert workflow["parent_span_id"] is None
    assert workflow["status_code"] == 0
    assert workflow["service_name"] == "main"  # the script's name: main.nf
    assert attr(workflow, "glia.workflow.engine") == "nextflow"
    # Nextflow's own counts: two failed attempts (flaky's first, retried; broken, ignored)
    counts = {k: attr(workflow, f"glia.nextflow.tasks.{k}") for k in ("succeeded", "failed", "ignored", "retries")}
    assert counts == {"succeeded": 22, "failed": 2, "ignored": 1, "retries": 1}, counts

    rows = spans(sql, workflow["trace_id"])
    tasks = [r for r in rows if r["run_kind"] == "task"]
    assert len(rows) == len(tasks) + 1  # nothing else in the trace
    assert len(tasks) == 24, sorted(r["name"] for r in tasks)
    for row in tasks:
        assert row["parent_span_id"] == workflow["span_id"], row["name"]
        assert attr(row, "glia.workflow.run_id") == session
        assert attr(row, "glia.workflow.engine") == "nextflow"
        assert attr(row, "glia.task.name") == row["name"]
        assert attr(row, "glia.nextflow.process") == row["service_name"]
        assert row["start_time"] >= workflow["start_time"] and row["end_time"] <= workflow["end_time"]
        digest = attr(row, "glia.nextflow.hash")
        assert len(digest) == 32 and attr(row, "glia.nextflow.workdir").endswith(f"/{digest[:2]}/{digest[2:]}")
        assert row["peak_rss_method"] == "wait4"
        assert row["process_command_args"][-1].endswith("/.command.sh")

    names = sorted(r["name"] for r in tasks)
    expected = sorted(
        [f"light ({i})" for i in range(1, 18)]
        + [f"alloc ({m} MiB)" for m in (50, 150, 200)]
        + ["flaky", "flaky", "broken", 'quoted (it\'s "quoted" $HOME *)']
    )
    assert names == expected
    by_name = {r["name"]: r for r in tasks}
    assert {r["service_name"] for r in tasks} == {"light", "alloc", "flaky", "broken", "quoted"}

    light = by_name["light (3)"]
    assert (light["status_code"], light["exit_code"]) == (0, 0)
    assert attr(light, "glia.task.attempt") == 1
    assert attr(light, "glia.requested.cpus") == 1.0
    assert attr(light, "glia.requested.memory_bytes") == 64 * 1024 * 1024
    assert attr(light, "glia.requested.seconds") == 600.0

    flaky = sorted((r for r in tasks if r["name"] == "flaky"), key=lambda r: attr(r, "glia.task.attempt"))
    assert [attr(r, "glia.task.attempt") for r in flaky] == [1, 2]
    assert [(r["status_code"], r["exit_code"]) for r in flaky] == [(2, 3), (0, 0)]
    assert attr(flaky[0], "glia.nextflow.hash") != attr(flaky[1], "glia.nextflow.hash")
    broken = by_name["broken"]
    assert (broken["status_code"], broken["exit_code"], broken["status_message"]) == (2, 7, "exit code 7")

    # the 200 MiB task against GNU time's %M for the same program, run the same way
    reference = gnu_time_peak_kib([sys.executable, str(work / "alloc.py"), "200", "0.3"]) * 1024
    glia_peak = by_name["alloc (200 MiB)"]["peak_rss_bytes"]
    assert abs(glia_peak - reference) <= 0.03 * reference, (glia_peak, reference)

    # Nextflow's own trace of the same run: one line per attempt, the same hashes
    with open(work / "trace.txt", newline="") as f:
        trace = list(csv.DictReader(f, delimiter="\t"))
    assert len(trace) == 24
    assert sorted(t["hash"] for t in trace) == sorted(
        f"{attr(r, 'glia.nextflow.hash')[:2]}/{attr(r, 'glia.nextflow.hash')[2:8]}" for r in tasks
    )

    # ... imported, Nextflow's own figures sit beside glia's: its peak_rss typed (nextflow-poll) and in the bag
    imported = subprocess.run(
        [GLIA, "import", "nextflow", str(work / "trace.txt")], env=env, capture_output=True, text=True, timeout=60
    )
    assert imported.returncode == 0, imported.stderr
    assert len(spans(sql, workflow["trace_id"])) == 25  # the live rows are untouched: the import has its own trace
    polled = {
        attr(r, "glia.nextflow.hash_short"): r
        for r in sql("SELECT * FROM spans WHERE run_kind = 'task' AND trace_id <> $1", workflow["trace_id"])
    }
    assert len(polled) == 24
    table = []
    for t in trace:
        live = next(r for r in tasks if attr(r, "glia.nextflow.hash").startswith(t["hash"].replace("/", "")))
        row = polled[t["hash"]]
        assert row["name"] == live["name"] == t["name"]
        assert attr(row, "glia.nextflow.peak_rss_bytes") == row["peak_rss_bytes"]
        assert row["peak_rss_method"] == ("nextflow-poll" if row["peak_rss_bytes"] is not None else None)
        if t["name"].startswith("alloc"):
            table.append((t["name"], t["peak_rss"], row["peak_rss_bytes"], live["peak_rss_bytes"]))
    print("FIGURES (task, Nextflow's text, Nextflow's bytes, glia's bytes)", sorted(table), "GNU time 200:", reference)


def test_endpoint_down_the_pipeline_runs_as_without_glia_and_its_runs_are_spooled(
    tmp_path: Path, nxf_lib: Path, receiver: ReceiverServer, sql: Sql
) -> None:
    work = tmp_path / "pipeline"
    work.mkdir()
    (work / "main.nf").write_text(FAILING)
    (work / "test.config").write_text(TEST_CONFIG)
    config = glia_config(tmp_path)
    spool = tmp_path / "spool"
    # a port nothing listens on; and the run is a Slurm job's (a head job running the local executor)
    env = client_env(None, spool, SLURM_JOB_ID="4711", SLURM_JOB_NAME="nf-head")
    proc = nextflow(nxf_lib, work, env, "main.nf", "-c", str(work / "test.config"), "-c", str(config))
    # Nextflow's own verdict: its task `bad` failed (exit 5); glia added no failure of its own
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "exit status (5)" in proc.stdout + proc.stderr
    outs = [p.read_text() for p in work.glob("work/*/*/.command.out")]
    assert "fine\n" in outs
    assert sorted(os.listdir(spool))  # the runs are waiting there
    assert sql("SELECT count(*) AS n FROM spans")[0]["n"] == 0

    flushed = subprocess.run(
        [GLIA, "flush"], env=client_env(receiver.url, spool), capture_output=True, text=True, timeout=60
    )
    assert flushed.returncode == 0, flushed.stderr
    (workflow,) = sql("SELECT * FROM spans WHERE run_kind = 'workflow'")
    assert workflow["status_code"] == 2
    # the error is the task's own stderr: glia's warnings went to the task's .command.glia.log
    assert attr(workflow, "glia.nextflow.error_message") == "bad input"
    assert workflow["status_message"] == "bad input"
    assert attr(workflow, "glia.nextflow.exit_status") == 5
    assert (workflow["scheduler"], workflow["scheduler_job_id"]) == ("slurm", "4711")
    errs = list(work.glob("work/*/*/.command.err"))
    assert len(errs) == 2
    for err in errs:
        assert "glia" not in err.read_text()
        assert "could not reach" in (err.parent / ".command.glia.log").read_text()
    rows = {r["name"]: r for r in spans(sql, workflow["trace_id"]) if r["run_kind"] == "task"}
    assert rows["ok"]["exit_code"] == 0 and rows["ok"]["parent_span_id"] == workflow["span_id"]
    assert (rows["bad"]["exit_code"], rows["bad"]["status_code"]) == (5, 2)
    assert {(r["scheduler"], r["scheduler_job_id"]) for r in rows.values()} == {("slurm", "4711")}
    assert rows["bad"]["parent_span_id"] == workflow["span_id"]
