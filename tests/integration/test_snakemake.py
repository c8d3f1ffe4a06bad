"""`snakemake --logger glia` and `glia import snakemake` with a real Snakemake 9 and a real receiver.

The workflow has 21 jobs (16 `count` shell jobs with wildcards, a `run:` job, a job allocating 200 MiB, a job
that fails once and is retried, one that always fails, the `all` rule), run with --retries 1 --keep-going: 23 job
attempts, each one row in PostgreSQL, every one a child of the workflow span.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReceiverServer, free_port, need
from tests.helpers import GLIA, Sql, client_env

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
MIB = 1024 * 1024
SAMPLES = [f"S{i:02d}" for i in range(1, 17)]
# Writes 200 MiB (bytes * n touches every page), holds it a moment: GNU time's %M is the reference.
ALLOC = f"{sys.executable} -c \"import time; b = b'x' * (200 << 20); time.sleep(0.3)\""

SNAKEFILE = """\
SAMPLES = [f"S{{i:02d}}" for i in range(1, 17)]
ALLOC = {alloc!r}

rule all:
    input: "merged.txt", "alloc.done", "flaky.txt"

rule count:
    output: "counts/{{sample}}.txt"
    benchmark: "bench/count_{{sample}}.tsv"
    shell: "echo {{wildcards.sample}} > {{output}}"

rule merge:
    input: expand("counts/{{sample}}.txt", sample=SAMPLES)
    output: "merged.txt"
    run:
        with open(output[0], "w") as out:
            for path in input:
                out.write(open(path).read())

rule alloc:
    output: "alloc.done"
    threads: 2
    resources: mem_mb=300, runtime=2
    benchmark: "bench/alloc.tsv"
    shell: ALLOC + " && touch {{output}}"

rule flaky:
    output: "flaky.txt"
    shell: "if [ -e flaky.flag ]; then echo ok > {{output}}; else touch flaky.flag; exit 3; fi"

rule broken:
    output: "broken.txt"
    shell: "exit 3"
"""


def _workflow(root: Path, name: str = "wf") -> Path:
    workdir = root / name
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE.format(alloc=ALLOC))
    return workdir


def _snakemake(workdir: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    # targets first: --logger takes one or more names
    args = [SNAKEMAKE, "all", "broken", "-c", "2", "--retries", "1", "--keep-going", *extra]
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def _bag(row: dict[str, Any]) -> dict[str, Any]:
    value = row["attributes"]
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def _gnu_time_kib(command: str) -> int:
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "/bin/bash", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1])


def test_every_job_attempt_is_a_child_run(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    need(shutil.which(SNAKEMAKE), "Snakemake is not installed (uv sync installs the dev group)")
    need(os.path.exists("/usr/bin/time"), "GNU time (/usr/bin/time, Debian package time) is not installed")
    workdir = _workflow(tmp_path)
    env = client_env(receiver.url, tmp_path / "spool")
    proc = _snakemake(workdir, env, "--logger", "glia")
    assert proc.returncode == 1, proc.stderr  # broken failed (twice); everything else ran
    assert (workdir / "merged.txt").read_text() == "".join(f"{s}\n" for s in SAMPLES)
    assert (workdir / "flaky.txt").read_text() == "ok\n"
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())  # all delivered

    (workflow,) = sql("SELECT * FROM spans WHERE run_kind = 'workflow'")
    run_id = workflow["workflow_run_id"]
    assert len(run_id) == 36 and run_id.count("-") == 4  # a uuid the plugin made
    assert workflow["workflow_engine"] == "snakemake"
    assert workflow["workflow_name"] == "wf"  # the Snakefile's directory
    assert workflow["name"] == "wf" and workflow["parent_span_id"] is None
    assert workflow["status_code"] == 2 and "1 job(s) failed" in workflow["status_message"]
    assert _bag(workflow)["glia.snakemake.jobs"] == 21
    assert workflow["service_name"] == "snakemake"

    tasks = sql("SELECT * FROM spans WHERE run_kind IS DISTINCT FROM 'workflow' ORDER BY start_time")
    assert len(tasks) == 23  # 21 jobs, flaky and broken twice
    for row in tasks:
        assert row["trace_id"] == workflow["trace_id"]
        assert row["parent_span_id"] == workflow["span_id"]
        assert row["workflow_run_id"] == run_id
        assert row["workflow_engine"] == "snakemake"
        assert row["workflow_name"] == "wf"
        assert row["service_name"] == _bag(row)["glia.snakemake.rule"]  # program_name: the rule
        assert row["name"] == row["task_name"]
        assert workflow["start_time"] <= row["start_time"] <= row["end_time"] <= workflow["end_time"]

    by_rule: dict[str, list[dict[str, Any]]] = {}
    for row in tasks:
        by_rule.setdefault(row["service_name"], []).append(row)
    assert {rule: len(rows) for rule, rows in by_rule.items()} == {
        "count": 16,
        "merge": 1,
        "alloc": 1,
        "flaky": 2,
        "broken": 2,
        "all": 1,
    }

    # shell: jobs ran under glia run (measured, with an exit code); the others come from Snakemake's events
    for rule in ("count", "alloc", "flaky", "broken"):
        for row in by_rule[rule]:
            assert row["run_kind"] == "task"
            assert row["peak_rss_method"] in ("wait4", "wait4-python")
            assert row["exit_code"] is not None and row["cpu_user_seconds"] is not None
    for rule in ("merge", "all"):
        (row,) = by_rule[rule]
        assert row["run_kind"] == "task" and row["peak_rss_bytes"] is None and row["status_code"] == 0

    counts = by_rule["count"]
    assert sorted(str(_bag(r)["glia.snakemake.wildcards.sample"]) for r in counts) == SAMPLES
    for row in counts:
        sample = _bag(row)["glia.snakemake.wildcards.sample"]
        assert row["name"] == f"count (sample={sample})"
        assert row["task_attempt"] == 1
        assert row["exit_code"] == 0 and row["status_code"] == 0
        assert _bag(row)["glia.snakemake.benchmark"] == f"bench/count_{sample}.tsv"
    assert len({int(_bag(r)["glia.snakemake.jobid"]) for r in tasks}) == 21  # one jobid per job

    for rule in ("flaky", "broken"):
        first, second = sorted(by_rule[rule], key=lambda r: r["task_attempt"])
        assert [r["task_attempt"] for r in (first, second)] == [1, 2]
        assert _bag(first)["glia.snakemake.jobid"] == _bag(second)["glia.snakemake.jobid"]
        assert first["exit_code"] == 3 and first["status_code"] == 2
        assert first["end_time"] <= second["start_time"]
    assert [r["exit_code"] for r in sorted(by_rule["flaky"], key=lambda r: r["start_time"])] == [3, 0]
    assert [r["exit_code"] for r in by_rule["broken"]] == [3, 3]

    (alloc,) = by_rule["alloc"]
    assert alloc["requested_cpus"] == 2.0
    assert alloc["requested_memory_bytes"] == 300_000_000
    assert alloc["requested_seconds"] == 120.0
    assert str(_bag(alloc)["glia.snakemake.threads"]) == "2"
    assert int(_bag(alloc)["glia.snakemake.resources.mem_mb"]) == 300
    reference = _gnu_time_kib(ALLOC) * 1024
    assert reference > 200 * MIB
    assert abs(alloc["peak_rss_bytes"] - reference) <= 0.03 * reference, (alloc["peak_rss_bytes"], reference)

    # what users query: the runs view, by the engine's run id
    view = sql("SELECT * FROM runs WHERE workflow_run_id = $1 ORDER BY started_at", run_id)
    assert len(view) == 24 and view[0]["run_kind"] == "workflow"
    (alloc_run,) = [r for r in view if r["program_name"] == "alloc"]
    assert alloc_run["task_name"] == "alloc" and alloc_run["max_rss_kb"] == alloc["peak_rss_bytes"] // 1024
    assert sorted(r["task_attempt"] for r in view if r["program_name"] == "flaky") == [1, 2]


@pytest.mark.no_coverage  # the bound is ~30 ms per job's glia run: coverage's tracer adds ~0.3 s to each one's start
def test_endpoint_down_neither_fails_nor_slows_the_workflow(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    need(shutil.which(SNAKEMAKE), "Snakemake is not installed (uv sync installs the dev group)")
    spool = tmp_path / "spool"
    down = client_env(f"http://127.0.0.1:{free_port()}", spool)  # nothing listens there
    plain = _workflow(tmp_path, "plain")
    _snakemake(_workflow(tmp_path, "warmup"), down, "--logger", "glia")  # glia run's spawner built, caches warm
    shutil.rmtree(spool)

    t0 = time.monotonic()
    baseline = _snakemake(plain, down)
    t1 = time.monotonic()
    recorded_dir = _workflow(tmp_path, "recorded")
    recorded = _snakemake(recorded_dir, down, "--logger", "glia")
    t2 = time.monotonic()
    assert baseline.returncode == recorded.returncode == 1, recorded.stderr
    assert (recorded_dir / "merged.txt").read_text() == (plain / "merged.txt").read_text()
    assert (recorded_dir / "flaky.txt").exists() and (recorded_dir / "alloc.done").exists()
    # 23 job attempts, each spooling its run: measured here about 30 ms each (glia run's start, the spool write)
    overhead = (t2 - t1) - (t1 - t0)
    assert overhead < 23 * 0.15, (t1 - t0, t2 - t1)
    assert "kept in the spool" in recorded.stderr

    assert sql("SELECT count(*) AS n FROM spans") == [{"n": 0}]
    flush = subprocess.run(
        [GLIA, "flush"], env={**down, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}, capture_output=True, text=True
    )
    assert flush.returncode == 0, flush.stderr
    rows = sql("SELECT run_kind, parent_span_id, trace_id, span_id FROM spans")
    (workflow,) = [r for r in rows if r["run_kind"] == "workflow"]
    assert len(rows) == 24  # everything was in the spool: the workflow and its 23 job attempts
    assert all(r["parent_span_id"] == workflow["span_id"] for r in rows if r is not workflow)


def test_import_benchmark_files_twice_stores_once(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    need(shutil.which(SNAKEMAKE), "Snakemake is not installed (uv sync installs the dev group)")
    workdir = tmp_path / "bench"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(
        textwrap.dedent(
            f"""\
            rule all:
                input: "a.done", "b.done", "alloc.done"
            rule touch:
                output: "{{name}}.done"
                wildcard_constraints: name="[ab]"
                benchmark: repeat("bench/touch_{{name}}.tsv", 2)
                shell: "touch {{output}}"
            rule alloc:
                output: "alloc.done"
                threads: 2
                resources: mem_mb=300
                benchmark: "bench/alloc.jsonl"
                shell: {ALLOC + " && touch {output}"!r}
            """
        )
    )
    proc = subprocess.run(
        [SNAKEMAKE, "-c", "2", "--benchmark-extended"], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    files = [str(workdir / "bench" / f) for f in ("touch_a.tsv", "touch_b.tsv", "alloc.jsonl")]
    env = client_env(receiver.url, tmp_path / "spool")
    for _ in range(2):
        imported = subprocess.run([GLIA, "import", "snakemake", *files], env=env, capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.count(": sent") == 3
    rows = sql("SELECT * FROM spans ORDER BY start_time")
    assert len(rows) == 3 + 2 + 2 + 1  # a workflow span per file, two repeats of each touch job, one alloc

    tasks = [r for r in rows if r["run_kind"] == "task"]
    assert all(r["peak_rss_method"] == "snakemake-benchmark" for r in tasks if r["peak_rss_bytes"] is not None)
    (alloc,) = [r for r in tasks if r["service_name"] == "alloc"]
    record = json.loads((workdir / "bench" / "alloc.jsonl").read_text())
    assert alloc["peak_rss_method"] == "snakemake-benchmark"
    assert alloc["peak_rss_bytes"] == round(record["max_rss"] * MIB)
    assert alloc["name"] == "alloc" and _bag(alloc)["glia.snakemake.jobid"] == record["jobid"]
    assert alloc["requested_memory_bytes"] == 300_000_000
    assert abs(alloc["duration_ns"] / 1e9 - record["s"]) < 1e-3
    touches = sorted((r for r in tasks if r["service_name"] == "touch"), key=lambda r: r["name"])
    assert [r["name"] for r in touches] == ["touch (name=a)"] * 2 + ["touch (name=b)"] * 2
    assert sorted(_bag(r)["glia.snakemake.bench_iteration"] for r in touches) == [0, 0, 1, 1]
    for row in tasks:
        (parent,) = [r for r in rows if r["span_id"] == row["parent_span_id"]]
        assert parent["run_kind"] == "workflow" and parent["trace_id"] == row["trace_id"]


def test_a_snakefiles_own_shell_settings_still_apply(tmp_path: Path, receiver: ReceiverServer, sql: Sql) -> None:
    need(shutil.which(SNAKEMAKE), "Snakemake is not installed (uv sync installs the dev group)")
    project = tmp_path / "rnaseq"
    (project / "workflow").mkdir(parents=True)
    (project / "workflow" / "Snakefile").write_text(
        textwrap.dedent(
            """\
            shell.executable("/bin/sh")
            shell.prefix("GREETING='it'\\"'\\"'s'; ")
            shell.suffix("; echo after >> suffix.log")
            rule all:
                input: "quoted.txt"
            rule quoted:
                output: "quoted.txt"
                shell: "printf '%s %s\\\\n' \\"$GREETING\\" \\"$0\\" > {output}"
            """
        )
    )
    env = client_env(receiver.url, tmp_path / "spool")
    proc = subprocess.run(
        [SNAKEMAKE, "--logger", "glia", "-c", "1"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert (project / "quoted.txt").read_text() == "it's /bin/sh\n"  # the user's prefix and shell, quotes intact
    assert (project / "suffix.log").read_text() == "after\n"  # the user's suffix, run once
    (row,) = sql("SELECT * FROM spans WHERE service_name = 'quoted'")
    assert row["process_command_args"][:2] == ["/bin/sh", "-c"]
    assert row["exit_code"] == 0 and row["peak_rss_method"] in ("wait4", "wait4-python")
    # the standard layout (workflow/Snakefile) is named after the project's directory
    assert row["workflow_name"] == "rnaseq"
