"""Snakemake `benchmark:` files (TSV or JSONL) -> `ImportedRun`s for `glia import snakemake`.

A benchmark file belongs to one job: one row per repeat (`benchmark: repeat("b.tsv", 3)`), with the fields
s, h:m:s, max_rss, max_vms, max_uss, max_pss (MiB), io_in, io_out (MiB), mean_load, cpu_time (s), and with
`--benchmark-extended` also jobid, rule_name, wildcards, params, threads, cpu_usage, resources, input_size_mb.
`NA` (nothing sampled: the job ended before the first poll) and `-` are missing values. A `.jsonl` file (or any
file whose rows are JSON objects) holds the same fields, one object a line.

What Snakemake's figures are: a psutil poll of the job's process tree (at once, then every 0.5 s for 30 s, then
every 30 s), `max_rss` the largest sum of the tree's RSS seen by a poll: it misses what happens between polls and
counts shared pages once per process. It goes to glia.memory.peak_rss_bytes with the method
`snakemake-benchmark`; every field is also kept as Snakemake wrote it under glia.snakemake.bench.*.

A file holds no clock time: a row's end is the file's modification time (Snakemake writes it when the job's last
repeat ends), its start that end minus `s`, earlier repeats before it. The file is its own run (`glia.workflow.*`
from the file), its id derived from the file's path and content, so importing it twice stores it once.

The names a job's row has (task_name `rule (k=v, ...)`, `glia.requested.*` from threads and resources) are shared
with the live logger plugin (`snakemake --logger glia`), which imports them from here.
"""

from __future__ import annotations

import os

from ._import import ImportedRun, ImportedTask, ImportOptions, ImportProblem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MIB = 1024 * 1024
FIELDS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time")
_MISSING = ("NA", "-", "", "None")
_SUFFIXES = (".benchmark.tsv", ".benchmark.txt", ".benchmark.jsonl", ".tsv", ".txt", ".jsonl", ".benchmark")


def task_name(rule: str, wildcards: Mapping[str, Any]) -> str:
    """`rule (name=value, ...)`, or the rule alone without wildcards: a Snakemake job's glia.task.name."""
    if not wildcards:
        return rule
    return f"{rule} ({', '.join(f'{k}={v}' for k, v in wildcards.items())})"


def requested(threads: Any, resources: Mapping[str, Any]) -> dict[str, float | int]:
    """`glia.requested.*` from a job's threads and resources (`mem_mb` in MB, else `mem_mib`; `runtime` minutes)."""
    out: dict[str, float | int] = {}
    cpus = _number(threads)
    if cpus is not None:
        out["glia.requested.cpus"] = cpus
    mem_mb, mem_mib = _number(resources.get("mem_mb")), _number(resources.get("mem_mib"))
    if mem_mb is not None:
        out["glia.requested.memory_bytes"] = int(mem_mb * 1_000_000)
    elif mem_mib is not None:
        out["glia.requested.memory_bytes"] = int(mem_mib * MIB)
    runtime = _number(resources.get("runtime"))
    if runtime is not None:
        out["glia.requested.seconds"] = runtime * 60.0
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip() not in _MISSING:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _literal(value: Any) -> Any:
    """A TSV cell of the extended format (`{'sample': 'S1'}`, a Python literal) as a value; text if it is not one."""
    if not isinstance(value, str):
        return value
    import ast

    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def _rows(path: str, text: str) -> list[dict[str, Any]]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ImportProblem(f"{path}: empty file")
    if lines[0].lstrip().startswith("{"):
        import json

        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ImportProblem(f"{path}: line {number} is not JSON ({e})") from None
            if not isinstance(row, dict):
                raise ImportProblem(f"{path}: line {number} is not a JSON object")
            rows.append(row)
        return rows
    names = lines[0].split("\t")
    if names[0] != "s" or "max_rss" not in names:
        raise ImportProblem(f"{path}: not a Snakemake benchmark file (its header is not s, h:m:s, max_rss, ...)")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(names):
            raise ImportProblem(f"{path}: line {number} has {len(cells)} values for {len(names)} fields")
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suffix in _SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def _run_key(path: str, content: bytes) -> str:
    from hashlib import sha256

    digest = sha256(os.path.abspath(path).encode("utf-8", "surrogatepass") + b"\0" + content).hexdigest()
    return "benchmark-" + digest[:16]


def read(path: str, options: ImportOptions) -> list[ImportedRun]:
    """The run one benchmark file describes: its job's repeats."""
    with open(path, "rb") as f:
        content = f.read()
    end_ns = os.stat(path).st_mtime_ns
    rows = _rows(path, content.decode("utf-8", "surrogateescape"))
    if not rows:
        raise ImportProblem(f"{path}: only a header, no benchmark row")
    stem = _stem(path)
    tasks: list[ImportedTask] = []
    skipped: list[str] = []
    # Repeats run one after the other and the file is written after the last: walk back from its mtime.
    durations = [_number(row.get("s")) for row in rows]
    ends: list[int] = []
    t = end_ns
    for seconds in reversed(durations):
        ends.append(t)
        t -= int((seconds or 0.0) * 1e9)
    ends.reverse()
    for index, row in enumerate(rows):
        seconds = durations[index]
        if seconds is None:
            skipped.append(f"row {index + 1}: no running time (s)")
            continue
        tasks.append(_task(row, index, stem, ends[index] - int(seconds * 1e9), ends[index]))
    if not tasks:
        raise ImportProblem(f"{path}: no row with a running time")
    run_id = options.run_id or _run_key(path, content)
    name = options.run_name or stem
    attributes: dict[str, Any] = {"glia.snakemake.benchmark": os.path.abspath(path)}
    return [ImportedRun(run_id, name, tasks, program="snakemake", attributes=attributes, skipped=skipped)]


def _task(row: Mapping[str, Any], index: int, stem: str, start_ns: int, end_ns: int) -> ImportedTask:
    rule = row.get("rule_name")
    rule = str(rule) if rule not in (None, *_MISSING) else None
    wildcards = _literal(row.get("wildcards"))
    wildcards = wildcards if isinstance(wildcards, dict) else {}
    resources = _literal(row.get("resources"))
    resources = resources if isinstance(resources, dict) else {}
    name = task_name(rule, wildcards) if rule else stem
    attrs: dict[str, Any] = {"glia.task.name": name, "glia.snakemake.bench_iteration": index}
    for key, value in row.items():
        if key in ("wildcards", "resources", "params", "input_size_mb"):
            continue
        number = _number(value)
        if number is not None:
            attrs[f"glia.snakemake.bench.{key}"] = number
        elif isinstance(value, str) and value not in _MISSING:
            attrs[f"glia.snakemake.bench.{key}"] = value
    max_rss = _number(row.get("max_rss"))
    if max_rss is not None:
        attrs["glia.memory.peak_rss_bytes"] = round(max_rss * MIB)
    for field, attr in (("io_in", "glia.io.read_bytes"), ("io_out", "glia.io.write_bytes")):
        mib = _number(row.get(field))
        if mib is not None:
            attrs[attr] = round(mib * MIB)
    cpu_time, seconds = _number(row.get("cpu_time")), _number(row.get("s"))
    if cpu_time is not None and seconds:
        # Snakemake sums user and system time: the split is not in the file, the share of a core is.
        attrs["glia.cpu.percent"] = 100.0 * cpu_time / seconds
    if rule:
        attrs["glia.snakemake.rule"] = rule
        jobid = _number(row.get("jobid"))
        if jobid is not None:
            attrs["glia.snakemake.jobid"] = int(jobid)
        threads = _number(row.get("threads"))
        if threads is not None:
            attrs["glia.snakemake.threads"] = int(threads)
        for key, value in wildcards.items():
            attrs[f"glia.snakemake.wildcards.{key}"] = str(value)
        for key, value in resources.items():
            if not str(key).startswith("_"):
                attrs[f"glia.snakemake.resources.{key}"] = value if isinstance(value, int | float | str) else str(value)
        attrs.update(requested(row.get("threads"), resources))
    return ImportedTask(
        key=(str(index),), name=name, program=rule or stem, start_ns=start_ns, end_ns=end_ns, attributes=attrs
    )
