"""Nextflow's own trace beside glia's figures for the same tasks: one pipeline of allocation tasks run twice by real
Nextflow 24.10 (local executor), alone and with `glia nextflow-config`, and each program under GNU time.

    bash .ci/install-nextflow.sh          # once
    uv run python bench/nextflow.py [--markdown]

The tasks (bench/accuracy.py's program, with the system `python3`): one process touching 50, 150 or 200 MiB and
holding it 0.3 s, and 150 MiB held 5 s. Columns, in MiB:
  - GNU time %M: `/usr/bin/time -f %M` on the same command, outside Nextflow (the reference);
  - glia peak_rss_bytes: the task's row in PostgreSQL (`glia serve` on a private embedded PostgreSQL), the largest
    process's peak as glia run reads it (wait4), and its error against %M;
  - glia tree_peak_bytes: the task's whole tree (cgroup where one can be made, else sampled);
  - Nextflow peak_rss, alone: the trace of the run without glia (`trace.raw`, bytes): the largest sum over the task's
    tree of each process's VmHWM, polled as the task starts, then every 1 s, 5 s, then 30 s;
  - Nextflow peak_rss, with glia: the same field in the run with glia's config: its tree then holds glia too.
A bench, not a test: nothing here asserts. One run of each; run it again to see the spread (the pollers' figures
move with the timing of their first poll, glia's do not).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from accuracy import PROGRAM, Receiver, glia_of, nextflow_lib, python3  # noqa: E402

GNU_TIME = "/usr/bin/time"
CASES = [(50, 0.3), (150, 0.3), (200, 0.3), (150, 5.0)]  # (MiB, seconds held)

MAIN = """
process alloc {
    tag "${mib} MiB, held ${hold} s"
    input:
    tuple val(mib), val(hold)

    script:
    \"\"\"
    '${params.python}' '${params.program}' alloc ${mib} ${hold}
    \"\"\"
}

workflow {
    Channel.of(%s) | alloc
}
"""
CONFIG = """
executor.cpus = 1
trace {
    enabled = true
    raw = true
    overwrite = true
    fields = 'task_id,hash,name,status,exit,realtime,peak_rss,rss'
}
"""


def run_nextflow(lib: Path, d: Path, program: Path, env: dict[str, str], *extra: str) -> dict[str, dict[str, str]]:
    """Run the pipeline in `d`; Nextflow's trace rows by task name."""
    d.mkdir()
    (d / "main.nf").write_text(MAIN % ", ".join(f"[{m}, {h}]" for m, h in CASES))
    (d / "bench.config").write_text(CONFIG)
    env = {**env, "NXF_HOME": str(d / "home"), "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    command = ["java", "-cp", f"{lib}/*", "nextflow.cli.Launcher", "-q", "run", "main.nf", "-c", "bench.config"]
    command += [*extra, "-with-trace", "trace.txt", "--python", python3(), "--program", str(program)]
    subprocess.run(command, cwd=d, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(d / "trace.txt", newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f, delimiter="\t")}


def gnu_time_kib(program: Path, mib: int, hold: float) -> int:
    proc = subprocess.run(
        [GNU_TIME, "-f", "%M", python3(), str(program), "alloc", str(mib), str(hold)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stderr.strip().splitlines()[-1])


def nextflow_mib(row: dict[str, str]) -> str:
    value = row["peak_rss"]
    return f"{int(value) / 2**20:.1f}" if value.isdigit() else value


def task_rows(url: str) -> dict[str, dict[str, Any]]:
    async def go() -> dict[str, dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT name, peak_rss_bytes, peak_rss_method, tree_peak_bytes, tree_peak_method, attributes"
                " FROM spans WHERE run_kind = 'task'"
            )
        finally:
            await conn.close()
        return {r["name"]: dict(r, attributes=json.loads(r["attributes"])) for r in rows}

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nextflow-lib", help="Nextflow's jar directory (default: .ci/install-nextflow.sh's)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    lib = nextflow_lib(args.nextflow_lib)
    if lib is None or not lib.is_dir():
        sys.exit("no Nextflow jars: run `bash .ci/install-nextflow.sh`")
    work = Path(tempfile.mkdtemp(prefix="glia-bench-nextflow-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    receiver = Receiver(work, glia_of(None, work))
    try:
        program = work / "program.py"
        program.write_text(PROGRAM)
        program.chmod(0o644)
        receiver.start()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GLIA_"))}
        alone = run_nextflow(lib, work / "alone", program, base_env)
        config = work / "glia.config"
        glia = str(Path(sys.executable).with_name("glia"))
        subprocess.run([glia, "nextflow-config", "-o", str(config)], check=True)
        env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "GLIA_SPOOL_DIR": str(work / "spool")}
        with_glia = run_nextflow(lib, work / "with-glia", program, env, "-c", str(config))
        rows = task_rows(receiver.url)
        table = []
        for mib, hold in CASES:
            name = f"alloc ({mib} MiB, held {hold} s)"
            ref = gnu_time_kib(program, mib, hold) / 1024
            row = rows[name]
            peak = row["peak_rss_bytes"] / 2**20
            tree = row["tree_peak_bytes"] / 2**20

            table.append(
                [
                    f"{mib} MiB, held {hold:g} s",
                    f"{ref:.1f}",
                    f"{peak:.1f} ({100 * (peak - ref) / ref:+.1f}%, {row['peak_rss_method']})",
                    f"{tree:.1f} ({row['tree_peak_method']})",
                    nextflow_mib(alone[name]),
                    nextflow_mib(with_glia[name]),
                ]
            )
        head = ["task", "GNU time %M", "glia peak_rss", "glia tree_peak", "Nextflow alone", "Nextflow with glia"]
        if args.markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join("---" for _ in head) + "|")
            for r in table:
                print("| " + " | ".join(r) + " |")
        else:
            widths = [max(len(x) for x in col) for col in zip(head, *table, strict=True)]
            for r in [head, *table]:
                print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)))
        print("\nMiB (2^20 bytes); Nextflow's trace.raw peak_rss; glia's rows read back from PostgreSQL.")
    finally:
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
