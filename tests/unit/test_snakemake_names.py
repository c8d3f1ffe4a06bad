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
