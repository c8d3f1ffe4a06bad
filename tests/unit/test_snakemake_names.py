"""The names a Snakemake job's row gets, and the reading of benchmark: files, as pure functions."""

from __future__ import annotations

import pytest

from glia_otel._import import ImportProblem
from glia_otel._import_snakemake import _literal, _rows, _stem, requested, task_name
from snakemake_logger_plugin_glia._workflow import workflow_name

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"


def test_task_name_is_the_rule_and_its_wildcards() -> None:
    assert task_name("align", {"sample": "S3", "lane": "2"}) == "align (sample=S3, lane=2)"
    assert task_name("all", {}) == "all"


def test_requested_from_threads_and_resources() -> None:
    assert requested(4, {"mem_mb": 300, "mem_mib": 287, "runtime": 90, "tmpdir": "/tmp"}) == {
        "glia.requested.cpus": 4.0,
        "glia.requested.memory_bytes": 300_000_000,  # mem_mb is MB, as the user wrote it
        "glia.requested.seconds": 5400.0,  # runtime is minutes
    }
    assert requested(None, {"mem_mib": 2}) == {"glia.requested.memory_bytes": 2 * 1024 * 1024}
    assert requested("NA", {"mem_mb": "NA", "runtime": True}) == {}


def test_workflow_name_is_the_snakefiles_directory_or_the_project_of_workflow() -> None:
    assert workflow_name("/data/rnaseq/Snakefile") == "rnaseq"
    assert workflow_name("/data/rnaseq/workflow/Snakefile") == "rnaseq"


def test_benchmark_rows_tsv_and_jsonl() -> None:
    measured = "0.4012\t0:00:00\t3.11\t10.2\t1.0\t1.2\t0.00\t0.01\t0.00\t0.00"
    unsampled = "\t".join(["2.5", "0:00:02", *["NA"] * 8])  # over before Snakemake's first poll
    tsv = f"{HEADER}\n{measured}\n{unsampled}\n"
    rows = _rows("b.tsv", tsv)
    assert [r["s"] for r in rows] == ["0.4012", "2.5"] and rows[1]["max_rss"] == "NA"
    jsonl = '{"s": 0.4, "max_rss": 3.11, "rule_name": "alloc", "wildcards": {}}\n'
    assert _rows("b.jsonl", jsonl) == [{"s": 0.4, "max_rss": 3.11, "rule_name": "alloc", "wildcards": {}}]
    with pytest.raises(ImportProblem, match="not a Snakemake benchmark file"):
        _rows("trace.txt", "task_id\thash\n1\tab/cdef\n")
    with pytest.raises(ImportProblem, match="line 2 has 2 values"):
        _rows("b.tsv", f"{HEADER}\n1\t2\n")


def test_extended_cells_are_read_as_literals_never_evaluated() -> None:
    assert _literal("{'sample': 'S1'}") == {"sample": "S1"}
    assert _literal("__import__('os').system('true')") == "__import__('os').system('true')"


def test_task_label_from_a_plain_file_name() -> None:
    assert _stem("bench/count_S01.tsv") == "count_S01"
    assert _stem("benchmarks/S1.bwa.benchmark.txt") == "S1.bwa"
    assert _stem("x.jsonl") == "x"


def test_a_shell_jobs_glia_run_options_and_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from glia_otel._config import load_settings
    from snakemake_logger_plugin_glia import _workflow
    from snakemake_logger_plugin_glia._shell import ShellJob

    monkeypatch.setattr(_workflow, "_NAME_TIMEOUT_S", 0.2)
    run = _workflow.WorkflowRun(load_settings({}))

    def job(attempt: int | None, bench_iteration: int | None = None) -> ShellJob:
        return ShellJob(7, "align", {"sample": "S3"}, 4, {"mem_mb": 100, "_cores": 4}, attempt, bench_iteration, None)

    t0 = time.monotonic()
    env, options = run.plan(job(None))
    run.plan(job(None, 0))  # the next execution: attempt 2, counted (no Job.attempt); and it did not wait
    _, repeat = run.plan(job(None, 1))  # a benchmark repeat of the same attempt
    assert time.monotonic() - t0 < 0.4
    assert env == {"TRACEPARENT": f"00-{run.trace_id:032x}-{run.span_id:016x}-01", "OTEL_SERVICE_NAME": "align"}
    assert options[:2] == ["--name", "align (sample=S3)"]
    attrs = dict(options[i + 1].split("=", 1) for i in range(2, len(options), 2))
    assert attrs["glia.task.attempt"] == "1" and attrs["glia.workflow.run_id"] == run.run_id
    assert attrs["glia.requested.cpus"] == "4.0" and attrs["glia.requested.memory_bytes"] == "100000000"
    assert attrs["glia.snakemake.wildcards.sample"] == "S3" and "glia.snakemake.resources._cores" not in attrs
    assert "glia.task.attempt=2" in repeat and "glia.snakemake.bench_iteration=1" in repeat
    assert "glia.task.attempt=5" in run.plan(job(5))[1]  # Snakemake's own attempt wins
