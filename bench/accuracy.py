"""Peak memory accuracy: the same programs under GNU time, `glia run`, psutil polling at 0.5 s, Snakemake's
`benchmark:` and Nextflow's trace, in one table, each figure beside its reference and its error.

    bash .ci/install-nextflow.sh                    # once, for the Nextflow column (else it is left out)
    uv run python bench/accuracy.py [--repeat 3] [--only CASE ...] [--tools gnu-time,glia,psutil,...] [--markdown]

The programs (Python programs run with the system `python3`, written to a temporary directory):
  - `sh -c true` and `python3 -c pass`: the smallest commands people run;
  - one process that touches 20 MiB and holds it 0.1 s, 200 MiB and exits at once, 200 MiB held 10 s (`--hold`),
    1 GiB and exits at once;
  - a tree: a parent whose three children touch 100 MiB each and hold it 2 s together;
  - a spike: a 3 s process that touches 200 MiB 1.25 s in, holds it 50 ms and frees it;
  - a short-lived child of a long parent: a 3 s parent whose child, started 1.25 s in, touches 200 MiB and exits
    0.1 s later.

References. For one process: GNU time's %M (`/usr/bin/time -f '%M %e'`: the kernel's high-water mark of the child,
`wait4`'s `ru_maxrss`, which also covers the descendants it reaped, so it is the largest single process of a tree).
For the tree of processes alive at once (the tree and short-lived-child programs): the program's own account,
the sum of every process's VmRSS read from /proc by the parent at the moment all of them hold their memory
(recorded in the GNU time run); for a single process, the tree is that process and the reference is %M. For scale,
the program also reports its anonymous memory at its peak (`Anonymous` in /proc/PID/smaps_rollup, summed).

The tools:
  - glia: `glia run --attr ... -- CMD` sending to a real receiver (`glia serve` on a private embedded PostgreSQL in
    a temporary directory); the figures are read back from the run's row in the `runs` view: `max_rss_kb` (with
    `peak_rss_method`), `tree_peak_bytes` (with `tree_peak_method`) where the schema has it, and the bag's
    `glia.memory.child_max_rss_bytes` where the client still sends it;
  - psutil at 0.5 s: what Snakemake's benchmark does (a sample as the command starts, then every 0.5 s; the RSS of
    the process and all its descendants, summed; the maximum over the samples);
  - Snakemake (9, from the dev group): one rule per program with `benchmark:`, `--cores 1`, max_rss (MiB);
  - Nextflow (24.10, `.ci/install-nextflow.sh`): one process per program, local executor, one task at a time,
    `-with-trace` with `trace.raw = true` (bytes): peak_rss.
Per-process figures (GNU time, glia's max_rss_kb and child figure) are compared with %M; tree figures (glia's tree
peak, psutil, Snakemake, Nextflow) with the tree reference. Each cell is the median over `--repeat` runs; cells
whose runs spread by more than 1% are listed under the table with their range. A bench, not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from receiver.embedded import EmbeddedPostgres  # noqa: E402

GNU_TIME = "/usr/bin/time"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
NEXTFLOW_ENV = REPO / ".build" / "nextflow" / "env"
POLL_S = 0.5

# The programs. One file, one mode per program; children are this same file in mode `hold`.
PROGRAM = r"""
import os, sys, time

PAGE = os.sysconf("SC_PAGE_SIZE")


def touch(mib):
    # bytearray(n) maps zero pages that are not resident until written: write one byte a page.
    b = bytearray(mib << 20)
    b[::PAGE] = b"\x01" * len(range(0, len(b), PAGE))
    return b


def rss_kb(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def anon_kb(pid="self"):
    # anonymous memory (heap, the bytearrays): what a cgroup is charged when the process first touches it
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def report(pids):
    # the program's own account at its peak, when the bench asks for it (the GNU time run)
    path = os.environ.get("ACCURACY_REPORT")
    if path:
        text = f"{sum(rss_kb(p) for p in pids)} {sum(anon_kb(p) for p in pids)}"
        with open(path, "w") as f:
            f.write(text)


def spawn_holder(mib):
    import subprocess
    argv = [sys.executable, __file__, "hold", str(mib)]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdout.read(1)  # it has touched its memory
    return child


mode, args = sys.argv[1], [float(a) for a in sys.argv[2:]]
t0 = time.monotonic()
if mode == "alloc":  # MIB HOLD_S
    b = touch(int(args[0]))
    report(["self"])
    time.sleep(args[1])
elif mode == "spike":  # TOTAL_S MIB SPIKE_S AT_S
    time.sleep(args[3])
    b = touch(int(args[1]))
    report(["self"])
    time.sleep(args[2])
    del b
    time.sleep(max(0.0, args[0] - (time.monotonic() - t0)))
elif mode == "tree":  # N MIB HOLD_S
    kids = [spawn_holder(int(args[1])) for _ in range(int(args[0]))]
    report(["self", *(k.pid for k in kids)])
    time.sleep(args[2])
    for k in kids:
        k.stdin.close()
    for k in kids:
        k.wait()
elif mode == "child":  # TOTAL_S MIB LIFE_S AT_S
    time.sleep(args[3])
    k = spawn_holder(int(args[1]))
    report(["self", k.pid])
    time.sleep(args[2])
    k.stdin.close()
    k.wait()
    time.sleep(max(0.0, args[0] - (time.monotonic() - t0)))
elif mode == "hold":  # MIB: touch, say so, hold until the parent closes stdin
    b = touch(int(args[0]))
    sys.stdout.write("r")
    sys.stdout.flush()
    sys.stdin.read()
"""

TOOLS = ("gnu-time", "glia", "psutil", "snakemake", "nextflow")


@dataclass
class Case:
    name: str  # a slug: a file name in Snakemake's and Nextflow's work
    label: str
    argv: list[str]
    tree: bool = False  # several processes alive at once: the tree reference is the program's own sum
    allocated_kib: int | None = None  # what the program's children allocate, for tree programs


def cases(python: str, program: str, hold: float) -> list[Case]:
    p = [python, program]
    return [
        Case("sh-true", "`sh -c true`", ["sh", "-c", "true"]),
        Case("python-pass", "`python3 -c pass`", [python, "-c", "pass"]),
        Case("alloc-20m", "20 MiB, held 0.1 s", [*p, "alloc", "20", "0.1"]),
        Case("alloc-200m", "200 MiB, exits at once", [*p, "alloc", "200", "0"]),
        Case("alloc-200m-held", f"200 MiB, held {hold:g} s", [*p, "alloc", "200", f"{hold:g}"]),
        Case("alloc-1g", "1 GiB, exits at once", [*p, "alloc", "1024", "0"]),
        Case("tree-3x100m", "3 children x 100 MiB at once, 2 s", [*p, "tree", "3", "100", "2"], True, 300 * 1024),
        Case("spike-50ms", "200 MiB spike of 50 ms in a 3 s run", [*p, "spike", "3", "200", "0.05", "1.25"]),
        Case(
            "short-child",
            "200 MiB child for 0.1 s of a 3 s parent",
            [*p, "child", "3", "200", "0.1", "1.25"],
            True,
            200 * 1024,
        ),
    ]


@dataclass
class Figures:
    """Every figure of one case, lists of KiB over the repeats, by column name."""

    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, set[str]] = field(default_factory=dict)

    def add(self, column: str, kib: float | None, note: str | None = None) -> None:
        if kib is None:
            return
        self.values.setdefault(column, []).append(kib)
        if note:
            self.notes.setdefault(column, set()).add(note)


# --- the tools -------------------------------------------------------------------------------------------------


def run_gnu_time(case: Case, work: Path, figures: Figures) -> None:
    out, report = work / "time.out", work / "report.txt"
    report.unlink(missing_ok=True)
    env = {**os.environ, "ACCURACY_REPORT": str(report)}
    subprocess.run([GNU_TIME, "-f", "%M %e", "-o", str(out), "--", *case.argv], env=env, check=True)
    max_kb, _elapsed = out.read_text().split()[-2:]
    figures.add("gnu-time", float(max_kb))
    if report.exists():
        rss, anon = (float(v) for v in report.read_text().split())
        if case.tree:
            figures.add("tree-ref", rss)
        figures.add("anon", anon)


def run_psutil(case: Case, figures: Figures) -> None:
    """Snakemake's sampling: RSS of the process and its descendants, summed, at the start and every 0.5 s."""
    proc = subprocess.Popen(case.argv)
    root = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while True:
            total = 0
            try:
                for p in (root, *root.children(recursive=True)):
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                pass
            peak = max(peak, total)
            if stop.wait(POLL_S):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    proc.wait()
    stop.set()
    thread.join()
    figures.add("psutil", peak / 1024)


@dataclass
class Glia:
    """The glia that is measured: this checkout's working tree, or a revision exported with `git archive`."""

    label: str
    command: list[str]  # `glia`, as an argv prefix
    env: dict[str, str]
    cwd: Path


def glia_of(rev: str | None, work: Path) -> Glia:
    if rev is None:
        commit = git("log", "-1", "--format=%h")
        dirty = git("status", "--porcelain", "--", "glia_otel", "receiver", "migrations")
        label = f"the working tree at {commit}" + (" (with uncommitted changes to the code)" if dirty else "")
        return Glia(label, [str(Path(sys.executable).with_name("glia"))], {}, REPO)
    tree = work / "glia-rev"
    tree.mkdir()
    tree.chmod(0o755)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    label = f"revision {git('rev-parse', '--short', rev)} ({rev}), exported with git archive"
    # -P: no working directory at the front of sys.path, where this checkout's glia_otel would shadow the export
    return Glia(label, [sys.executable, "-P", "-m", "glia_otel._cli"], {"PYTHONPATH": str(tree)}, tree)


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


class Receiver:
    """`glia serve` on a private embedded PostgreSQL in a temporary directory, and the runs it stored."""

    def __init__(self, work: Path, glia: Glia) -> None:
        self.work = work / "receiver"
        self.work.mkdir()
        self.glia = glia
        self.pg = EmbeddedPostgres(self.work / "pg")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.endpoint = ""

    def start(self) -> None:
        self.url = self.pg.start()
        env = {**os.environ, **self.glia.env}
        migrate = [*self.glia.command, "migrate", "--database-url", self.url]
        subprocess.run(migrate, env=env, cwd=self.glia.cwd, check=True, stdout=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update(GLIA_DATABASE_URL=self.url, GLIA_LOG_LEVEL="error")
        serve = [*self.glia.command, "serve", "--port", str(port)]
        self.proc = subprocess.Popen(serve, env=env, cwd=self.glia.cwd, stdout=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError("glia serve exited")
            try:
                if httpx.get(self.endpoint + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("glia serve did not become ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.pg.stop()

    def run_row(self, token: str) -> dict[str, Any]:
        """The `runs` row of the `glia run` tagged with `token`, once it is stored."""
        return asyncio.run(self._run_row(token))

    async def _run_row(self, token: str) -> dict[str, Any]:
        conn = await asyncpg.connect(self.url)
        try:
            for _ in range(100):
                row = await conn.fetchrow(
                    "SELECT * FROM runs WHERE attributes @> $1::jsonb", json.dumps({"bench.token": token})
                )
                if row is not None:
                    out = dict(row)
                    if isinstance(out.get("attributes"), str):
                        out["attributes"] = json.loads(out["attributes"])
                    return out
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        raise RuntimeError(f"the run {token} never reached PostgreSQL (spooled? see {self.work / 'spool'})")


def run_glia(case: Case, receiver: Receiver, figures: Figures) -> None:
    token = uuid.uuid4().hex
    env = {
        **os.environ,
        **receiver.glia.env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "GLIA_SPOOL_DIR": str(receiver.work / "spool"),
        "OTEL_SERVICE_NAME": f"accuracy-{case.name}",
    }
    cmd = [*receiver.glia.command, "run", "--attr", f"bench.token={token}", "--", *case.argv]
    subprocess.run(cmd, env=env, check=True)
    row = receiver.run_row(token)
    attrs = row.get("attributes") or {}
    if row.get("max_rss_kb") is not None:
        figures.add("glia-max-rss", float(row["max_rss_kb"]), row.get("peak_rss_method"))
    # Where the schema has it: the whole tree's peak (issue 11); before that, only the bag's child figure.
    tree = row.get("tree_peak_bytes", attrs.get("glia.memory.tree_peak_bytes"))
    if tree is not None:
        figures.add(
            "glia-tree", int(tree) / 1024, row.get("tree_peak_method") or attrs.get("glia.memory.tree_peak_method")
        )
    child = attrs.get("glia.memory.child_max_rss_bytes")
    if child is not None:
        figures.add("glia-child", int(child) / 1024, "wait4 from glia's Python process")


def run_snakemake(all_cases: list[Case], work: Path, by_case: dict[str, Figures]) -> None:
    d = work / "snakemake"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    commands = {c.name: shlex.join(c.argv) for c in all_cases}
    (d / "Snakefile").write_text(
        f"CASES = {commands!r}\n\n"
        "rule all:\n"
        "    input: expand('done/{case}', case=list(CASES))\n\n"
        "rule run:\n"
        "    output: touch('done/{case}')\n"
        "    benchmark: 'bench/{case}.tsv'\n"
        "    params: cmd=lambda wildcards: CASES[wildcards.case]\n"
        "    shell: '{params.cmd}'\n"
    )
    subprocess.run(
        [SNAKEMAKE, "--snakefile", str(d / "Snakefile"), "--directory", str(d), "--cores", "1", "--quiet", "all"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for c in all_cases:
        with open(d / "bench" / f"{c.name}.tsv", newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        if row["max_rss"] in ("", "NA", "-"):
            # Snakemake's own way of saying that no sample saw the process: a figure of 0 for the table
            by_case[c.name].add("snakemake", 0.0, f"{c.label}: max_rss {row['max_rss']!r} (no sample), shown as 0")
        else:
            by_case[c.name].add("snakemake", float(row["max_rss"]) * 1024)  # MiB


NEXTFLOW_MAIN = """
process run_case {
    tag "${name}"
    maxForks 1

    input:
    tuple val(name), val(cmd)

    script:
    cmd
}

workflow {
    Channel.fromPath(params.cases).splitCsv(sep: '\\t').map { row -> tuple(row[0], row[1]) } | run_case
}
"""
NEXTFLOW_CONFIG = """
trace {
    raw = true
    overwrite = true
    fields = 'task_id,tag,status,exit,realtime,peak_rss,rss,vmem,peak_vmem'
}
"""


def nextflow_lib(given: str | None) -> Path | None:
    given = given or os.environ.get("NXF_LIB")
    if given:
        return Path(given)
    if NEXTFLOW_ENV.is_file():
        for line in NEXTFLOW_ENV.read_text().splitlines():
            if line.startswith("NXF_LIB="):
                return Path(line.split("=", 1)[1])
    return None


def run_nextflow(lib: Path, all_cases: list[Case], work: Path, by_case: dict[str, Figures]) -> None:
    d = work / "nextflow"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "main.nf").write_text(NEXTFLOW_MAIN)
    (d / "nextflow.config").write_text(NEXTFLOW_CONFIG)
    (d / "cases.tsv").write_text("".join(f"{c.name}\t{shlex.join(c.argv)}\n" for c in all_cases))
    env = {**os.environ, "NXF_HOME": str(d / "home"), "NXF_OFFLINE": "true", "NXF_ANSI_LOG": "false"}
    subprocess.run(
        [
            "java",
            "-cp",
            f"{lib}/*",
            "nextflow.cli.Launcher",
            "-q",
            "run",
            "main.nf",
            "--cases",
            str(d / "cases.tsv"),
            "-with-trace",
            "trace.txt",
        ],
        cwd=d,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(d / "trace.txt", newline="") as f:
        rows = {row["tag"]: row for row in csv.DictReader(f, delimiter="\t")}
    for c in all_cases:
        peak = rows[c.name]["peak_rss"]
        if peak.isdigit():
            by_case[c.name].add("nextflow", int(peak) / 1024)
        else:
            by_case[c.name].add("nextflow", 0.0, f"{c.label}: peak_rss {peak!r}, shown as 0")


# --- the table -------------------------------------------------------------------------------------------------

COLUMNS = [  # (column, heading, reference: "per-process" or "tree")
    ("gnu-time", "GNU time %M", None),
    ("tree-ref", "tree reference", None),
    ("anon", "anonymous", None),
    ("glia-max-rss", "glia max_rss_kb", "per-process"),
    ("glia-tree", "glia tree peak", "tree"),
    ("glia-child", "glia child_max_rss", "per-process"),
    ("psutil", "psutil 0.5 s", "tree"),
    ("snakemake", "Snakemake max_rss", "tree"),
    ("nextflow", "Nextflow peak_rss", "tree"),
]


def reference(figures: Figures, kind: str | None) -> float | None:
    per_process = statistics.median(figures.values["gnu-time"]) if "gnu-time" in figures.values else None
    if kind == "tree" and "tree-ref" in figures.values:
        return statistics.median(figures.values["tree-ref"])
    return per_process


def cell(value: float, ref: float | None) -> str:
    text = f"{value:,.0f}"
    if ref:
        text += f" ({100 * (value - ref) / ref:+.1f}%)"
    return text


def table(all_cases: list[Case], by_case: dict[str, Figures], markdown: bool) -> str:
    present = [c for c in COLUMNS if any(c[0] in by_case[k.name].values for k in all_cases)]
    head = ["program", *(h for _, h, _ in present)]
    rows = []
    for c in all_cases:
        f = by_case[c.name]
        line = [c.label]
        for column, _, kind in present:
            values = f.values.get(column)
            if not values:
                line.append("(= %M)" if column == "tree-ref" and "gnu-time" in f.values else "-")
                continue
            value = statistics.median(values)
            line.append(cell(value, reference(f, kind)) if kind else f"{value:,.0f}")
        rows.append(line)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", *["---:"] * (len(head) - 1)]) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(r))

    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths)), *(fmt(r) for r in rows)])


def spread(all_cases: list[Case], by_case: dict[str, Figures]) -> list[str]:
    out = []
    for c in all_cases:
        for column, heading, _ in COLUMNS:
            values = by_case[c.name].values.get(column) or []
            if len(values) > 1 and max(values) > 1.01 * min(values):
                runs = ", ".join(f"{v:,.0f}" for v in values)
                out.append(f"  {c.label}, {heading}: {runs} KiB")
    return out


def machine(nextflow: Path | None, glia: Glia) -> list[str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "not available"

    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cgroup = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1 (memory hierarchy)"
    lines = [
        f"machine: {os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / 2**30:.1f} GiB, "
        f"Linux {platform.release()}, cgroup {cgroup}, load average {os.getloadavg()[0]:.2f}",
        f"glia: {glia.label}",
        f"GNU time: {first_line(['dpkg-query', '-W', '-f', '${Version}', 'time'])}; "
        f"python3: {first_line([python3(), '-V'])}; psutil {psutil.__version__}",
    ]
    if os.path.exists(SNAKEMAKE):
        lines.append(f"Snakemake: {first_line([SNAKEMAKE, '--version'])}")
    if nextflow:
        version = nextflow.parent / "version.txt"
        text = version.read_text().split() if version.exists() else []
        lines.append(
            f"Nextflow: {text[text.index('version') + 1] if 'version' in text else '?'} ({nextflow}); "
            f"{first_line(['java', '-version'])}"
        )
    return lines


def python3() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else (shutil.which("python3") or sys.executable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of every program under every tool")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the held program holds its memory")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="programs by name (see the table's sources)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS)}")
    parser.add_argument("--nextflow-lib", help="Nextflow's jar directory (default: .ci/install-nextflow.sh's)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--rev", help="measure this git revision's glia (git archive) instead of the working tree")
    args = parser.parse_args()
    tools = set(args.tools.split(","))
    if unknown := tools - set(TOOLS):
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    names = [c.name for c in cases("python3", "program.py", args.hold)]
    if args.only and (unknown := set(args.only) - set(names)):
        parser.error(f"unknown programs: {', '.join(sorted(unknown))} (of {', '.join(names)})")

    work = Path(tempfile.mkdtemp(prefix="glia-bench-accuracy-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as another user, who must pass through to its data directory
    try:
        measure(args, tools, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, tools: set[str], work: Path) -> None:
    program = work / "program.py"
    program.write_text(PROGRAM)
    program.chmod(0o644)
    all_cases = [c for c in cases(python3(), str(program), args.hold) if not args.only or c.name in args.only]
    by_case = {c.name: Figures() for c in all_cases}

    lib = nextflow_lib(args.nextflow_lib) if "nextflow" in tools else None
    skipped = []
    if "nextflow" in tools and (lib is None or not lib.is_dir()):
        skipped.append("Nextflow (no jars: run `bash .ci/install-nextflow.sh`)")
        lib = None
    if "snakemake" in tools and not os.path.exists(SNAKEMAKE):
        skipped.append("Snakemake (not installed: `uv sync`)")
        tools.discard("snakemake")
    glia = glia_of(args.rev, work)
    for line in machine(lib, glia):
        print(line)
    print(f"programs: {len(all_cases)}, {args.repeat} run(s) each under each tool; figures in KiB")
    if skipped:
        print("left out: " + "; ".join(skipped))

    receiver = Receiver(work, glia) if "glia" in tools else None
    try:
        if receiver is not None:
            receiver.start()
        for r in range(args.repeat):
            started = time.monotonic()
            for c in all_cases:
                # GNU time first: the tree reference comes from its run.
                run_gnu_time(c, work, by_case[c.name])
                if receiver is not None:
                    run_glia(c, receiver, by_case[c.name])
                if "psutil" in tools:
                    run_psutil(c, by_case[c.name])
            if "snakemake" in tools:
                run_snakemake(all_cases, work, by_case)
            if lib is not None:
                run_nextflow(lib, all_cases, work, by_case)
            print(f"  run {r + 1} of {args.repeat}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        if receiver is not None:
            receiver.stop()

    print()
    print(table(all_cases, by_case, args.markdown))
    print()
    print("References: per-process figures against GNU time's %M; tree figures (glia tree peak, psutil, Snakemake,")
    print("Nextflow) against the tree reference (the program's own sum of VmRSS while all its processes hold), which")
    print("for a single process is %M. Anonymous: the program's own sum of `Anonymous` (/proc/PID/smaps_rollup) at")
    print("its peak, for scale, not a reference: the memory its processes made rather than mapped from files.")
    allocated = [f"{c.label}: {c.allocated_kib:,} KiB" for c in all_cases if c.allocated_kib]
    if allocated:
        print("Allocated by the tree programs' children: " + "; ".join(allocated) + ".")
    for column, heading, _ in COLUMNS:
        notes = sorted({n for c in all_cases for n in by_case[c.name].notes.get(column, ())})
        if notes:
            print(f"{heading}: {'; '.join(notes)}")
    lines = spread(all_cases, by_case)
    if lines:
        print("Spread over the runs (cells above are medians):")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
