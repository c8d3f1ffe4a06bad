"""`glia suggest` and `glia compare` (and /api/suggest, /api/compare) on runs whose answer is known.

Runs are posted as OTLP/JSON to a real receiver, stored in a real PostgreSQL, and read back through both CLI paths
(the database, and the query API with GLIA_API_URL): a program whose version b doubles its memory is flagged with
the sentence the issue asks for, programs whose versions or hosts do not differ (or differ on too few runs) are
not, and the recommendation follows its stated rule figure by figure (tree peak over per-process peak, failed runs
left out, an OOM kill raising memory and exit 137 alone not). The ready-to-paste formats are read by the real
tools: the #SBATCH lines by Slurm 22.05's sbatch (a held job, its limits read back with scontrol), the withName: block
by Nextflow 24.10 running a process, the resources: block by Snakemake 9 running a rule, each beside programs whose
names try to break out of their place (a regex matching the real process, a quote, a newline and a directive).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from glia_otel._cli import main
from tests.conftest import ReceiverServer
from tests.helpers import JS, client_env
from tests.nextflow import nextflow, nextflow_lib
from tests.slurm import SlurmCluster, start_cluster, stop_cluster

MIB = 1024 * 1024
GIB = 1024 * MIB
SHA_A, SHA_B, SHA_C, SHA_D, SHA_E = (c * 64 for c in "abcde")
_ids = itertools.count(1)


@dataclass
class Run:
    """One run as a client would send it (only what these tests vary)."""

    program: str
    hours_ago: float
    tree_peak: int | None = None
    peak_rss: int | None = None
    wall: float = 60.0
    cpu_percent: float | None = None
    sha: str | None = None
    host: str = "node01"
    exit_code: int = 0
    error: bool = False
    oom_kills: int | None = None
    requested: dict[str, float] = field(default_factory=dict)  # memory_bytes, cpus, seconds
    task: str | None = None
    engine: str | None = None
    workflow: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)


def _value(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _attrs(pairs: dict[str, object]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in pairs.items() if v is not None]


def post_runs(receiver: ReceiverServer, runs: list[Run]) -> None:
    """Post the runs as OTLP/JSON (one resource per program, version and host) and check all were stored."""
    now = time.time_ns()
    resources: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}
    for run in runs:
        n = next(_ids)
        start = now - int(run.hours_ago * 3600 * 10**9)
        cpu = run.wall * run.cpu_percent / 100 if run.cpu_percent is not None else None
        span = {
            "traceId": f"{n:032x}",
            "spanId": f"{n:016x}",
            "name": run.program,
            "kind": 1,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + int(run.wall * 10**9)),
            "status": {"code": 2, "message": "failed"} if run.error else {"code": 0},
            "attributes": _attrs(
                {
                    "glia.run.kind": "task" if run.task else "command",
                    "process.exit.code": run.exit_code,
                    "glia.cpu.user_seconds": cpu,
                    "glia.cpu.system_seconds": 0.0 if cpu is not None else None,
                    "glia.cpu.percent": run.cpu_percent,
                    "glia.memory.peak_rss_bytes": run.peak_rss,
                    "glia.memory.tree_peak_bytes": run.tree_peak,
                    "glia.memory.oom_kills": run.oom_kills,
                    "glia.task.name": run.task,
                    "glia.workflow.engine": run.engine,
                    "glia.workflow.name": run.workflow,
                    **{f"glia.requested.{k}": v for k, v in run.requested.items()},
                    **run.attrs,
                }
            ),
        }
        resources.setdefault((run.program, run.sha, run.host), []).append(span)
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": _attrs({"service.name": program, "glia.script.sha256": sha, "host.name": host})
                },
                "scopeSpans": [{"scope": {"name": "glia"}, "spans": spans}],
            }
            for (program, sha, host), spans in resources.items()
        ]
    }
    response = httpx.post(f"{receiver.url}/v1/traces", content=orjson.dumps(body), headers=JS, timeout=60)
    assert response.status_code == 200 and response.content == b"{}", response.text


def days_ago(days: float) -> str:
    """An absolute --since, so that both paths of one command read the same window (an age is measured from now)."""
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def glia(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def both_paths(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, receiver: ReceiverServer, *argv: str
) -> str:
    """What `glia ARGV...` prints from the database, checked to be byte for byte what it prints from the API."""
    monkeypatch.delenv("GLIA_API_URL", raising=False)
    code, from_db, err = glia(capsys, *argv, "--database-url", receiver.database_url)
    assert code == 0, err
    monkeypatch.setenv("GLIA_API_URL", receiver.url)
    code, from_api, err = glia(capsys, *argv)
    monkeypatch.delenv("GLIA_API_URL")
    assert code == 0, err
    assert from_api == from_db
    return from_db


# --- compare ------------------------------------------------------------------------------------------------------


def versions_runs() -> list[Run]:
    """memhog: version b (bbbb...) doubles version a's memory, same wall and CPU time; five failed runs of a with
    10 GiB are not counted. steady: versions c, d and e of the same figures (e 5% more memory: an effect below
    10%, not flagged whatever p). A third program on two hosts: 20 runs on big, 3 on odd whose median is 1.14x big's
    but whose values fall among big's (an effect the rank test does not bear out)."""
    runs = []
    for k in range(30):
        wall = 60.0 + (k * 7) % 30
        runs.append(Run("memhog", 200 - k, tree_peak=(100 + k) * MIB, wall=wall, cpu_percent=90.0, sha=SHA_A))
        runs.append(Run("memhog", 100 - k, tree_peak=(200 + 2 * k) * MIB, wall=wall, cpu_percent=90.0, sha=SHA_B))
        runs.append(Run("steady", 300 - k, peak_rss=(100 + k) * MIB, wall=wall, cpu_percent=50.0, sha=SHA_C))
        runs.append(
            Run("steady", 200 - k, peak_rss=(100 + (k * 11) % 30) * MIB, wall=wall, cpu_percent=50.0, sha=SHA_D)
        )
        runs.append(
            Run("steady", 100 - k, peak_rss=round((100 + k) * 1.05 * MIB), wall=wall, cpu_percent=50.0, sha=SHA_E)
        )
    for k in range(5):
        runs.append(Run("memhog", 150 - k, tree_peak=10 * GIB, wall=500.0, sha=SHA_A, error=True, exit_code=1))
    for k in range(20):
        runs.append(Run("hosts", 50 - k, peak_rss=(100 + k) * MIB, wall=30.0, host="big", attrs={"sample": "S1"}))
    for k, peak in enumerate((105, 125, 160)):
        runs.append(Run("hosts", 20 - k, peak_rss=peak * MIB, wall=30.0, host="odd", attrs={"sample": "S2"}))
    return runs


def test_a_version_that_doubles_memory_is_flagged(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    post_runs(receiver, versions_runs())
    answer = json.loads(both_paths(capsys, monkeypatch, receiver, "compare", "memhog", "--format", "json"))
    assert answer["findings"] == ["version bbbb uses 2.0x the memory of aaaa (p < 0.001, 30 vs 30 runs)"]
    first, second = answer["groups"]
    assert (first["group"], second["group"]) == (SHA_A, SHA_B)
    assert first["runs"] == second["runs"] == 30  # the failed runs of a are not counted
    assert first["reference"] is None and second["reference"] == SHA_A
    assert first["memory_bytes"]["median"] == pytest.approx(114.5 * MIB)
    assert second["memory_bytes"]["median"] == pytest.approx(229 * MIB)
    assert second["memory_bytes"]["p95"] == pytest.approx((200 + 2 * 27.55) * MIB)
    memory = second["versus"]["memory_bytes"]
    assert memory["ratio"] == pytest.approx(2.0) and memory["u"] == 900 and memory["p"] < 1e-9
    assert memory["flagged"]
    wall = second["versus"]["wall_seconds"]
    assert wall["ratio"] == pytest.approx(1.0) and wall["p"] == 1.0 and not wall["flagged"]

    table = both_paths(capsys, monkeypatch, receiver, "compare", "memhog")
    assert "version bbbb uses 2.0x the memory of aaaa (p < 0.001, 30 vs 30 runs)" in table
    lines = table.splitlines()
    assert lines[0].startswith("glia compare memhog by script version: successful runs")
    assert lines[1].split()[:3] == ["VERSION", "FIRST", "SEEN"]
    assert lines[2].split()[0] == "aaaa" and lines[2].rstrip().endswith("(reference)")
    assert lines[3].split()[0] == "bbbb" and "mem 2.00x*" in lines[3] and "wall 1.00x," in lines[3]


def test_versions_and_hosts_that_do_not_differ_are_not_flagged(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    post_runs(receiver, versions_runs())
    answer = json.loads(both_paths(capsys, monkeypatch, receiver, "compare", "steady", "--format", "json"))
    assert [g["group"] for g in answer["groups"]] == [SHA_C, SHA_D, SHA_E]  # by first seen
    assert [g["reference"] for g in answer["groups"]] == [None, SHA_C, SHA_D]  # each against the one before
    assert answer["findings"] == []
    d_vs_c = answer["groups"][1]["versus"]["memory_bytes"]
    assert d_vs_c["ratio"] == pytest.approx(1.0) and d_vs_c["p"] == pytest.approx(1.0)
    e_vs_d = answer["groups"][2]["versus"]["memory_bytes"]
    assert e_vs_d["ratio"] == pytest.approx(1.05, abs=0.01) and not e_vs_d["flagged"]
    table = both_paths(capsys, monkeypatch, receiver, "compare", "steady")
    assert "nothing flagged: no median differs from its reference's by more than 10% with p < 0.01" in table

    by_host = json.loads(
        both_paths(capsys, monkeypatch, receiver, "compare", "hosts", "--by", "host", "--format", "json")
    )
    big, odd = by_host["groups"]
    assert (big["group"], big["runs"], big["reference"]) == ("big", 20, None)  # the largest is the reference
    assert (odd["group"], odd["runs"], odd["reference"]) == ("odd", 3, "big")
    assert odd["versus"]["memory_bytes"]["ratio"] == pytest.approx(125 / 109.5)
    assert odd["versus"]["memory_bytes"]["p"] > 0.05 and not odd["versus"]["memory_bytes"]["flagged"]
    assert by_host["findings"] == []

    by_attr = json.loads(
        both_paths(capsys, monkeypatch, receiver, "compare", "hosts", "--by", "attr", "sample", "--format", "json")
    )
    assert [(g["label"], g["runs"]) for g in by_attr["groups"]] == [("sample=S1", 20), ("sample=S2", 3)]


def test_compare_over_the_api_and_its_errors(receiver: ReceiverServer, capsys: pytest.CaptureFixture[str]) -> None:
    post_runs(receiver, versions_runs())
    response = httpx.get(f"{receiver.url}/api/compare", params={"program": "memhog"}, timeout=30)
    assert response.status_code == 200
    assert response.json()["findings"] == ["version bbbb uses 2.0x the memory of aaaa (p < 0.001, 30 vs 30 runs)"]
    response = httpx.get(f"{receiver.url}/api/compare", params={"program": "hosts", "by": "attr"}, timeout=30)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "key"]
    response = httpx.get(
        f"{receiver.url}/api/compare", params={"program": "hosts", "by": "host", "key": "x"}, timeout=30
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "key"]
    assert httpx.get(f"{receiver.url}/api/compare", timeout=30).status_code == 422  # program is required

    with pytest.raises(SystemExit):
        main(["compare", "hosts", "--by", "attr", "--database-url", receiver.database_url])
    assert "--by attr needs the custom value's key" in capsys.readouterr().err
    code, out, _ = glia(capsys, "compare", "nothing-here", "--database-url", receiver.database_url)
    assert code == 0 and "no successful runs of nothing-here with a script version" in out


# --- suggest ------------------------------------------------------------------------------------------------------


def suggest_runs() -> list[Run]:
    """align (a Nextflow process): 20 successful task runs, tree peak k x 10 MiB (the per-process peak half that),
    wall 60k s, cpu 10k %, each asking for 1 GiB, 4 cpus and an hour; failed runs with 10 GiB that must not count;
    an exit 137 without an OOM kill (a time limit) that must not raise memory; one OOM kill of a 200 MiB task that
    must. blocky: 5 runs with only the per-process peak."""
    runs = []
    asked = {"memory_bytes": GIB, "cpus": 4.0, "seconds": 3600.0}
    for k in range(1, 21):
        runs.append(
            Run(
                "align", k, tree_peak=k * 10 * MIB, peak_rss=k * 5 * MIB, wall=60.0 * k, cpu_percent=10.0 * k,
                requested=asked, task=f"align (S{k})", engine="nextflow", workflow="rnaseq",
            )
        )  # fmt: skip
    for k in range(3):
        runs.append(Run("align", 30 + k, tree_peak=10 * GIB, wall=5000.0, cpu_percent=800.0, error=True, exit_code=1,
                        task="align (S9)", engine="nextflow", workflow="rnaseq"))  # fmt: skip
    runs.append(Run("align", 40, tree_peak=8 * GIB, exit_code=137, error=True, task="align (S7)", engine="nextflow",
                    workflow="rnaseq"))  # fmt: skip
    runs.append(Run("align", 41, tree_peak=200 * MIB, exit_code=137, error=True, oom_kills=1,
                    requested={"memory_bytes": 200 * MIB}, task="align (S3)", engine="nextflow",
                    workflow="rnaseq"))  # fmt: skip
    for k in range(1, 6):
        runs.append(Run("blocky", k, peak_rss=k * 100 * MIB, wall=10.0 * k, cpu_percent=100.0))
    runs.append(Run("old", 24 * 40, peak_rss=MIB, wall=1.0, cpu_percent=1.0))  # outside the default 30 days
    return runs


def test_suggest_follows_its_rule(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    post_runs(receiver, suggest_runs())
    answer = json.loads(
        both_paths(capsys, monkeypatch, receiver, "suggest", "--since", days_ago(30), "--format", "json")
    )
    assert [g["program_name"] for g in answer["groups"]] == ["align", "blocky"]
    align, blocky = answer["groups"]
    assert align["runs"] == 20 and align["workflow_engines"] == ["nextflow"]
    assert align["memory"]["measure"] == "tree_peak_bytes"
    assert align["memory"]["p95_bytes"] == pytest.approx(190.5 * MIB)  # percentile_cont(0.95) of 10..200 MiB
    assert align["memory"]["oom_runs"] == 1 and align["memory"]["oom_had_bytes"] == 200 * MIB
    assert align["wall_seconds"]["p95"] == pytest.approx(1143.0)
    assert align["cpu_percent"]["p95"] == pytest.approx(190.5)
    # 190.5 MiB x 1.2 = 228.6 -> 229 MiB, but the OOM-killed run had 200 MiB: 1.5x = 300 MiB;
    # 1143 s x 1.5 = 28.6 min -> 29 min; 190.5% / 100 -> 2 cpus
    assert align["recommended"] == {"memory_bytes": 300 * MIB, "memory_raised_by_oom": True, "seconds": 29 * 60,
                                    "cpus": 2}  # fmt: skip
    assert align["notes"] == ["memory raised by 1 run the OOM killer ended"]
    requested = align["requested"]
    assert requested["memory"] == {"runs": 20, "median_bytes": GIB, "median_used": pytest.approx(105 / 1024)}
    assert requested["time"] == {"runs": 20, "median_seconds": 3600.0, "median_used": pytest.approx(630 / 3600)}
    assert requested["cpus"] == {"runs": 20, "median_cpus": 4.0, "median_used": pytest.approx(1.05 / 4)}

    assert blocky["memory"]["measure"] == "peak_rss_bytes" and blocky["runs"] == 5
    # p95 of 100..500 MiB is 480 MiB: x 1.2 = 576 MiB; of 10..50 s, 48 s: x 1.5 = 72 s -> 2 min; 100% -> 1 cpu
    assert blocky["recommended"] == {"memory_bytes": 576 * MIB, "memory_raised_by_oom": False, "seconds": 120,
                                     "cpus": 1}  # fmt: skip
    assert blocky["requested"] is None
    assert blocky["notes"][0].startswith("only 5 successful runs")
    assert set(answer["rule"]) == {"runs", "memory", "oom", "time", "cpus", "efficiency"}

    # the filters: a task's label before " (", the workflow's name, the program; --since
    for argv in (["--task-name", "align"], ["--task-name", "align (S3)"], ["--workflow-name", "rnaseq"],
                 ["--program", "align"]):  # fmt: skip
        code, out, err = glia(capsys, "suggest", *argv, "--format", "json", "--database-url", receiver.database_url)
        assert code == 0, err
        assert [g["program_name"] for g in json.loads(out)["groups"]] == ["align"], argv
    code, out, _ = glia(
        capsys, "suggest", "--since", "60d", "--format", "json", "--database-url", receiver.database_url
    )
    assert [g["program_name"] for g in json.loads(out)["groups"]] == ["align", "blocky", "old"]

    table = both_paths(capsys, monkeypatch, receiver, "suggest", "--since", days_ago(30))
    lines = table.splitlines()
    assert lines[1].split() == ["PROGRAM", "RUNS", "MEMORY", "TIME", "CPUS", "PEAK", "p95", "WALL", "p95", "CPU%",
                                "p95", "REQUESTED"]  # fmt: skip
    assert lines[2].split()[:7] == ["align", "20", "300", "MiB", "(OOM)", "29m", "2"]
    shares = f"{105 / 1024:.0%}", f"{630 / 3600:.0%}", f"{1.05 / 4:.0%}"
    assert "mem 1.0 GiB ({} used), time 1h00m00s ({} used), cpus 4 ({} used)".format(*shares) in lines[2]
    assert any(line.startswith("rule:") for line in lines)


def test_suggest_formats_for_schedulers_and_engines(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    post_runs(receiver, suggest_runs())
    slurm = both_paths(
        capsys, monkeypatch, receiver, "suggest", "--since", days_ago(30), "--program", "align", "--format", "slurm"
    )
    assert [line for line in slurm.splitlines() if line.startswith("#SBATCH")] == [
        "#SBATCH --mem=300M",
        "#SBATCH --time=00:29:00",
        "#SBATCH --cpus-per-task=2",
    ]
    assert all(line == "" or line.startswith("#") for line in slurm.splitlines())
    nextflow = both_paths(
        capsys, monkeypatch, receiver, "suggest", "--since", days_ago(30), "--program", "align", "--format", "nextflow"
    )
    assert (
        "    withName: 'align' {\n        memory = '300 MB'\n        time = '29m'\n        cpus = 2\n    }" in nextflow
    )
    snakemake = both_paths(
        capsys, monkeypatch, receiver, "suggest", "--since", days_ago(30), "--program", "align", "--format", "snakemake"
    )
    # 300 MiB in Snakemake's megabytes (10^6 bytes), rounded up: 314.57 -> 315
    assert "rule align:\n    threads: 2\n    resources:\n        mem_mb=315,\n        runtime=29," in snakemake


def test_suggest_over_the_api(receiver: ReceiverServer) -> None:
    post_runs(receiver, suggest_runs())
    response = httpx.get(f"{receiver.url}/api/suggest", params={"program": "align"}, timeout=30)
    assert response.status_code == 200
    (group,) = response.json()["groups"]
    assert group["recommended"]["memory_bytes"] == 300 * MIB
    response = httpx.get(f"{receiver.url}/api/suggest", params={"since": "last tuesday"}, timeout=30)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "since"]
    response = httpx.get(f"{receiver.url}/api/suggest", params={"program": "a\x00b"}, timeout=30)
    assert response.status_code == 422


# --- the formats, read by the tools ---------------------------------------------------------------------------------

# Programs whose names are hostile where a name is written: a selector regex matching `align` and another
# one's block, a Groovy string closed early, a comment line ended by a newline and followed by a directive.
HOSTILE = [
    Run("align|x", 3, peak_rss=50 * MIB, wall=600.0, cpu_percent=100.0),
    Run(".*", 3, peak_rss=70 * MIB, wall=700.0, cpu_percent=100.0),
    Run("x'; throw new Exception('boom') //\n#SBATCH --partition=nope\nprocess.cpus = 64", 3, peak_rss=60 * MIB),
]


def suggest(capsys: pytest.CaptureFixture[str], receiver: ReceiverServer, *argv: str) -> str:
    """What `glia suggest ARGV...` prints from the database."""
    code = main(["suggest", *argv, "--database-url", receiver.database_url])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_nextflow_takes_the_block_for_its_process_only(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lib = nextflow_lib()
    post_runs(receiver, suggest_runs() + HOSTILE)
    config = tmp_path / "suggested.config"
    config.write_text(suggest(capsys, receiver, "--format", "nextflow"))
    assert config.read_text().count("withName:") == 5
    (tmp_path / "main.nf").write_text(
        'process align {\n    output: stdout\n    script:\n    """\n'
        '    echo "${task.memory}|${task.cpus}|${task.time}"\n    """\n}\n\nworkflow {\n    align() | view\n}\n'
    )
    proc = nextflow(lib, tmp_path, client_env(None, tmp_path / "spool"), "main.nf", "-c", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # align's own block (300 MB, 2 cpus, 29 min), not `align|x`'s or `.*`'s, which come after it and would win
    assert re.search(r"^300 MB\|2\|29m$", proc.stdout, re.MULTILINE), proc.stdout
    # each hostile name stayed one selector, read as the text it is (Nextflow names those matching no process)
    log = (tmp_path / ".nextflow.log").read_text()
    assert "config selector: align\\|x -- Did you mean: align?" in log
    assert "config selector: x\\'\\;\\ throw\\ new\\ Exception\\(\\'boom\\'\\)" in log
    assert "Exception: boom" not in proc.stdout + proc.stderr + log


def test_snakemake_runs_the_rule_with_its_resources(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    post_runs(receiver, suggest_runs() + HOSTILE)
    whole = suggest(capsys, receiver, "--format", "snakemake")
    block = suggest(capsys, receiver, "--program", "align", "--format", "snakemake")
    snakefile = tmp_path / "Snakefile"
    # the whole output is a Snakefile of its own (the hostile names only in comments) ...
    snakefile.write_text(whole)
    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "-s", str(snakefile)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert set(listed.stdout.split()) >= {"align", "blocky"} and "boom" not in listed.stdout
    # ... and align's block, given an output and a command, runs with those resources
    snakefile.write_text(
        block
        + '\n    output: "out.txt"\n    shell: "echo {threads} {resources.mem_mb} {resources.runtime} > {output}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GLIA_"))}
    ran = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(snakefile)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert (tmp_path / "out.txt").read_text().split() == ["2", "315", "29"]


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def test_sbatch_holds_a_job_with_the_suggested_limits(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], tmp_path: Path, slurm: SlurmCluster
) -> None:
    post_runs(receiver, suggest_runs() + HOSTILE)
    whole = suggest(capsys, receiver, "--format", "slurm")
    # no name brings a line of its own: every line is a comment, an #SBATCH line of a figure, or blank
    for line in whole.splitlines():
        assert (
            line == ""
            or re.fullmatch(r"#SBATCH --(mem=\d+M|time=\d\d:\d\d:00|cpus-per-task=\d+)", line)
            or (line.startswith("# ") and not line.startswith("#SBATCH"))
        ), line
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n" + suggest(capsys, receiver, "--program", "align", "--format", "slurm") + "\ntrue\n")
    submitted = subprocess.run(
        ["sbatch", "--hold", "--parsable", "-o", str(tmp_path / "out.txt"), str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60, check=False)
    assert re.search(r"\bMinMemoryNode=300M\b", shown), shown
    assert re.search(r"\bTimeLimit=00:29:00\b", shown), shown
    assert re.search(r"\bMinCPUsNode=2\b", shown) or re.search(r"\bCPUs/Task=2\b", shown), shown


# --- what each path imports ---------------------------------------------------------------------------------------

IMPORTS = """
import atexit, sys
atexit.register(lambda: print("IMPORTED", *sorted({m.split(".")[0] for m in sys.modules})))
from glia_otel._cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.exit(code)
"""
WEB = {"fastapi", "starlette", "pydantic", "pydantic_core", "uvicorn"}


@pytest.mark.parametrize("path", ["database", "api"])
def test_the_commands_import_no_web_framework_and_the_api_path_no_server_part(
    path: str, receiver: ReceiverServer
) -> None:
    post_runs(receiver, versions_runs())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLIA_")}
    where = ["--database-url", receiver.database_url] if path == "database" else []
    if path == "api":
        env["GLIA_API_URL"] = receiver.url
    for argv in (["suggest", "--format", "slurm"], ["compare", "memhog"]):
        proc = subprocess.run(
            [sys.executable, "-c", IMPORTS, *argv, *where], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTED")]
        modules = set(line.split()[1:])
        assert not modules & WEB, (argv, modules & WEB)
        if path == "api":
            assert not modules & {"receiver", "asyncpg", "orjson"}, argv
        assert ("#SBATCH --mem=" in proc.stdout) or ("version bbbb uses 2.0x the memory of aaaa" in proc.stdout)


@pytest.mark.parametrize("command", ["suggest", "compare"])
def test_both_paths_take_the_same_options(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def options() -> set[str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        return set(re.findall(r"--[\w-]+(?: \{[^}]*\})?", capsys.readouterr().out.partition("options:")[2]))

    monkeypatch.delenv("GLIA_API_URL", raising=False)
    database = options()
    monkeypatch.setenv("GLIA_API_URL", "http://127.0.0.1:9")
    api = options()
    assert database - api == {"--database-url", "--data-dir"} and api - database == set()
    formats = "{table,json,slurm,nextflow,snakemake}" if command == "suggest" else "{table,json}"
    assert f"--format {formats}" in api


def post_live(receiver: ReceiverServer, program: str, sha: str, hours_ago: float, **figures: int) -> str:
    """A run that has not ended: its heartbeat record (docs/attributes.md, live runs), started and last heard of
    `hours_ago` hours ago, with `figures` (glia.memory.*) so far; returns its span id."""
    n = next(_ids)
    start = time.time_ns() - int(hours_ago * 3600 * 10**9)
    span = {
        "traceId": f"{n:032x}",
        "spanId": f"{n:016x}",
        "name": program,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": "0",
        "attributes": _attrs(
            {
                "glia.run.kind": "command",
                "glia.run.state": "running",
                "glia.run.heartbeat_unix_nano": start + 10**9,
                "glia.cpu.user_seconds": 5000.0,
                **{f"glia.memory.{k}": v for k, v in figures.items()},
            }
        ),
    }
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attrs({"service.name": program, "glia.script.sha256": sha})},
                "scopeSpans": [{"scope": {"name": "glia"}, "spans": [span]}],
            }
        ]
    }
    response = httpx.post(f"{receiver.url}/v1/traces", content=orjson.dumps(body), headers=JS, timeout=60)
    assert response.status_code == 200 and response.content == b"{}", response.text
    return f"{n:016x}"


def sweep_lost(url: str, lost_after: float) -> list[tuple[str, str]] | None:
    """One sweep for lost runs, as a receiver's maintenance loop makes it."""
    from receiver.database import Database, create_pool
    from receiver.maintenance import sweep_lost as sweep

    async def go() -> list[tuple[str, str]] | None:
        pool = await create_pool(url, max_size=2, statement_timeout_ms=10_000)
        try:
            return await sweep(Database(pool, acquire_timeout=5), lost_after)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_running_and_lost_runs_are_left_out(
    receiver: ReceiverServer, capsys: pytest.CaptureFixture[str], sql: Any
) -> None:
    post_runs(receiver, versions_runs() + suggest_runs())
    # still going, heard of a second after its start just now: running; the other, last heard of two hours ago
    running = post_live(receiver, "align", SHA_A, 0.0, tree_peak_bytes=50 * GIB, rss_bytes=50 * GIB)
    stale = post_live(receiver, "memhog", SHA_B, 2.0, tree_peak_bytes=10 * GIB, rss_bytes=10 * GIB)
    # the receivers' sweep, now, for runs not heard of in ten minutes: the stale one
    assert sweep_lost(receiver.database_url, 600) == [(f"{int(stale, 16):032x}", stale)]
    assert sql("SELECT status FROM runs WHERE run_id = $1", stale)[0]["status"] == "lost"
    assert sql("SELECT status FROM runs WHERE run_id = $1", running)[0]["status"] == "running"

    code, out, err = glia(capsys, "suggest", "--program", "align", "--format", "json", "--database-url",
                          receiver.database_url)  # fmt: skip
    assert code == 0, err
    (align,) = json.loads(out)["groups"]
    assert align["runs"] == 20 and align["memory"]["p95_bytes"] == pytest.approx(190.5 * MIB)
    code, out, err = glia(capsys, "compare", "memhog", "--format", "json", "--database-url", receiver.database_url)
    assert code == 0, err
    answer = json.loads(out)
    assert [g["runs"] for g in answer["groups"]] == [30, 30]
    assert answer["findings"] == ["version bbbb uses 2.0x the memory of aaaa (p < 0.001, 30 vs 30 runs)"]
