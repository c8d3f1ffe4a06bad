"""Snakemake's own `benchmark:` beside glia's figures for the same jobs, and what `--logger glia` costs a workflow.

    uv run python bench/snakemake.py [--markdown]

Part 1, accuracy: one Snakefile of allocation jobs (bench/accuracy.py's program, with the system `python3`: one
process touching 50, 150 or 200 MiB and holding it 0.3 s, and 150 MiB held 5 s), each with a `benchmark:` file,
run by real Snakemake 9 twice: alone, and with `--logger glia`. Columns, in MiB:
  - GNU time %M: `/usr/bin/time -f %M` on the same command, outside Snakemake (the reference);
  - glia peak_rss_bytes: the job's row in PostgreSQL (`glia serve` on a private embedded PostgreSQL), the largest
    process's peak as glia run reads it (wait4), and its error against %M;
  - glia tree_peak_bytes: the job's whole tree (cgroup where one can be made, else sampled);
  - Snakemake max_rss, alone / with glia: the benchmark file of each run: the largest sum of the job's tree RSS
    seen by a psutil poll (at once, then every 0.5 s); with glia the tree holds glia run too.
Part 2, cost: 40 trivial `shell:` jobs (`-c 2`), the wall time of the whole `snakemake` run alone and with
`--logger glia` to a receiver that is up, to a closed port (nothing listens: every run spooled) and to a port
that accepts and never answers (every export waits for its deadline, GLIA_EXPORT_DEADLINE_MS, 250 ms by default);
the best of `--repeat` runs each, and the difference per job.
A bench, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from accuracy import PROGRAM, Receiver, glia_of, python3  # noqa: E402

GNU_TIME = "/usr/bin/time"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CASES = [(50, 0.3), (150, 0.3), (200, 0.3), (150, 5.0)]  # (MiB, seconds held)
TRIVIAL_JOBS = 40

ACCURACY = """
CASES = {cases!r}
rule all:
    input: [f"done/{{mib}}_{{hold}}" for mib, hold in CASES]
rule alloc:
    output: "done/{{mib}}_{{hold}}"
    benchmark: "bench/{{mib}}_{{hold}}.tsv"
    shell: "{python} {program} alloc {{wildcards.mib}} {{wildcards.hold}} && touch {{output}}"
"""

TRIVIAL = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))
rule one:
    output: "out/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}"
"""


def snakemake(d: Path, snakefile: str, env: dict[str, str], *extra: str) -> float:
    """Run the workflow in a fresh `d`; its wall time in seconds."""
    d.mkdir()
    (d / "Snakefile").write_text(snakefile)
    t0 = time.monotonic()
    subprocess.run([SNAKEMAKE, "-c", "2", "-q", *extra], cwd=d, env=env, check=True, capture_output=True)
    return time.monotonic() - t0


def benchmark_mib(path: Path) -> str:
    header, row = path.read_text().splitlines()[:2]
    value = dict(zip(header.split("\t"), row.split("\t"), strict=True))["max_rss"]
    try:
        return f"{float(value):.1f}"
    except ValueError:
        return value


def gnu_time_kib(program: Path, mib: int, hold: float) -> int:
    proc = subprocess.run(
        [GNU_TIME, "-f", "%M", python3(), str(program), "alloc", str(mib), str(hold)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stderr.strip().splitlines()[-1])


def job_rows(url: str) -> dict[str, dict[str, Any]]:
    async def go() -> dict[str, dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT name, peak_rss_bytes, peak_rss_method, tree_peak_bytes, tree_peak_method FROM spans"
                " WHERE service_name = 'alloc'"
            )
        finally:
            await conn.close()
        return {r["name"]: dict(r) for r in rows}

    return asyncio.run(go())


def print_table(head: list[str], table: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in table:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(x) for x in col) for col in zip(head, *table, strict=True)]
    for r in [head, *table]:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)))


def accuracy(work: Path, receiver: Receiver, base_env: dict[str, str], markdown: bool) -> None:
    program = work / "program.py"
    program.write_text(PROGRAM)
    program.chmod(0o644)
    snakefile = ACCURACY.format(cases=CASES, python=python3(), program=program)
    env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "GLIA_SPOOL_DIR": str(work / "spool")}
    snakemake(work / "alone", snakefile, base_env)
    snakemake(work / "with-glia", snakefile, env, "--logger", "glia")
    rows = job_rows(receiver.url)
    table = []
    for mib, hold in CASES:
        ref = gnu_time_kib(program, mib, hold) / 1024
        row = rows[f"alloc (mib={mib}, hold={hold})"]
        peak = row["peak_rss_bytes"] / 2**20
        tree = row["tree_peak_bytes"] / 2**20
        table.append(
            [
                f"{mib} MiB, held {hold:g} s",
                f"{ref:.1f}",
                f"{peak:.1f} ({100 * (peak - ref) / ref:+.1f}%, {row['peak_rss_method']})",
                f"{tree:.1f} ({row['tree_peak_method']})",
                benchmark_mib(work / "alone" / "bench" / f"{mib}_{hold}.tsv"),
                benchmark_mib(work / "with-glia" / "bench" / f"{mib}_{hold}.tsv"),
            ]
        )
    head = ["job", "GNU time %M", "glia peak_rss", "glia tree_peak", "Snakemake alone", "Snakemake with glia"]
    print_table(head, table, markdown)
    print("\nMiB (2^20 bytes); Snakemake's benchmark: max_rss; glia's rows read back from PostgreSQL.\n")


def cost(work: Path, receiver: Receiver, base_env: dict[str, str], repeat: int, markdown: bool) -> None:
    snakefile = TRIVIAL.format(n=TRIVIAL_JOBS)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]  # bound, never listening: connections are refused
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1024)  # accepts (the kernel does) and never answers
    cases = [
        ("Snakemake alone", None),
        ("--logger glia, receiver up", receiver.endpoint),
        ("--logger glia, endpoint refused", f"http://127.0.0.1:{closed_port}"),
        ("--logger glia, endpoint silent", f"http://127.0.0.1:{silent.getsockname()[1]}"),
    ]
    best: dict[str, float] = {}
    try:
        for i in range(repeat):
            for j, (label, endpoint) in enumerate(cases):
                env = dict(base_env)
                extra: list[str] = []
                if endpoint is not None:
                    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, GLIA_SPOOL_DIR=str(work / f"spool-{i}"))
                    extra = ["--logger", "glia"]
                seconds = snakemake(work / f"cost-{i}-{j}", snakefile, env, *extra)
                best[label] = min(best.get(label, seconds), seconds)
    finally:
        silent.close()
    base = best["Snakemake alone"]
    table = [[label, f"{best[label]:.2f}", f"{1000 * (best[label] - base) / TRIVIAL_JOBS:+.0f}"] for label, _ in cases]
    print_table([f"{TRIVIAL_JOBS} shell jobs, -c 2", "wall s (best)", "ms per job"], table, markdown)
    print(f"\nBest of {repeat} runs each.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case of the cost part")
    args = parser.parse_args()
    if not shutil.which(SNAKEMAKE):
        sys.exit("no snakemake: `uv sync` installs it with the dev group")
    work = Path(tempfile.mkdtemp(prefix="glia-bench-snakemake-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    receiver = Receiver(work, glia_of(None, work))
    try:
        receiver.start()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GLIA_")) and k != "TRACEPARENT"}
        accuracy(work, receiver, base_env, args.markdown)
        cost(work, receiver, base_env, args.repeat, args.markdown)
    finally:
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
