"""`glia suggest` and `glia compare`: their options, how their answers print, and their path through the query API.

The answers themselves are the receiver's (`receiver/answers.py`), read from the database (`receiver/answers_cli.py`,
with the server part) or from `/api/suggest` and `/api/compare` (here, with the client alone); both paths parse the
same options and print through the same functions, so they print the same bytes. Stored names are whatever clients
sent, so every output escapes them for where it goes: the terminal (`terminal_safe`), a comment line of a batch
script or a Snakefile (`terminal_safe`: no line break survives), a Groovy string literal holding a Nextflow
selector (`nextflow_selector`). The figures are numbers this module formats itself. The standard library only.
"""

from __future__ import annotations

import argparse
import keyword
import math
import re
from datetime import datetime
from typing import Any

from ._format import format_json, human_bytes, human_seconds, terminal_safe

SUGGEST_FORMATS = ("table", "json", "slurm", "nextflow", "snakemake")
COMPARE_FORMATS = ("table", "json")
COMPARE_BY = ("script_sha256", "host", "attr")
MIB = 1024 * 1024

# --- options (both paths) -----------------------------------------------------------------------------------------


def add_suggest_options(parser: argparse.ArgumentParser) -> None:
    """The options of `glia suggest` (the database path adds --database-url and --data-dir)."""
    parser.add_argument("--program", "--service", dest="program", help="service.name (a task's process or rule)")
    parser.add_argument("--task-name", help="a workflow task's label, or its part before ' (' (align for align (S3))")
    parser.add_argument("--workflow-name", help="the workflow's name (glia.workflow.name)")
    parser.add_argument("--since", default="30d", help="runs started at or after: ISO 8601 or an age (default 30d)")
    parser.add_argument("--until", help="runs started before: ISO 8601 time or an age")
    parser.add_argument(
        "--format",
        choices=SUGGEST_FORMATS,
        default="table",
        help="table, json, or ready to paste: #SBATCH lines, a Nextflow withName: block, a Snakemake resources: block",
    )


def add_compare_options(parser: argparse.ArgumentParser) -> None:
    """The options of `glia compare` (the database path adds --database-url and --data-dir)."""
    parser.add_argument("program", metavar="PROGRAM", help="service.name of the runs to compare")
    parser.add_argument(
        "--by",
        nargs="+",
        default=["script_sha256"],
        metavar=("WHAT", "KEY"),
        help="script_sha256 (the default: each script version against the one before), host, or attr KEY (a custom"
        " value); hosts and values against the largest group",
    )
    parser.add_argument("--since", help="runs started at or after: ISO 8601 time or an age (default: all)")
    parser.add_argument("--until", help="runs started before: ISO 8601 time or an age")
    parser.add_argument("--format", choices=COMPARE_FORMATS, default="table")


def compare_grouping(parser: argparse.ArgumentParser, by: list[str]) -> tuple[str, str | None]:
    """(by, key) from `--by WHAT [KEY]`; a usage error for anything else."""
    what, *rest = by
    if what not in COMPARE_BY:
        parser.error(f"--by: {what!r} is not one of script_sha256, host, attr KEY")
    if what == "attr":
        if len(rest) != 1 or not rest[0]:
            parser.error("--by attr needs the custom value's key: --by attr KEY")
        return what, rest[0]
    if rest:
        parser.error(f"--by {what} takes no key")
    return what, None


# --- suggest ------------------------------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _span(answer: dict[str, Any]) -> str:
    until = f" and before {_when(answer['until'])}" if answer.get("until") else ""
    return f"started since {_when(answer['since'])}{until}"


def _mib(value: int | None) -> str:
    if value is None:
        return "-"
    mib = value // MIB
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def _minutes(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def _share(part: dict[str, Any] | None, what: str, shown: str) -> str | None:
    if not part:
        return None
    used = part["median_used"]
    return f"{what} {shown} ({used:.0%} used)" if used is not None else f"{what} {shown}"


def _requested_text(requested: dict[str, Any] | None) -> str:
    if not requested:
        return "-"
    memory, time, cpus = requested.get("memory"), requested.get("time"), requested.get("cpus")
    parts = [
        _share(memory, "mem", human_bytes(memory["median_bytes"])) if memory else None,
        _share(time, "time", human_seconds(time["median_seconds"])) if time else None,
        _share(cpus, "cpus", f"{cpus['median_cpus']:g}") if cpus else None,
    ]
    return ", ".join(p for p in parts if p)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    cells = [header, *rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return [
        "  ".join(
            text.rjust(w) if i in right else text.ljust(w) for i, (text, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]


def _rule_lines(rule: dict[str, str]) -> list[str]:
    return ["rule:", *(f"  {name}: {text}" for name, text in rule.items())]


def _suggest_table(answer: dict[str, Any]) -> str:
    groups = answer["groups"]
    lines = [f"glia suggest: from successful runs {_span(answer)}"]
    if not groups:
        lines.append("no successful runs match")
    else:
        rows = []
        for g in groups:
            rec = g["recommended"]
            rows.append(
                [
                    g["program_name"],
                    str(g["runs"]),
                    _mib(rec["memory_bytes"]) + (" (OOM)" if rec["memory_raised_by_oom"] else ""),
                    _minutes(rec["seconds"]),
                    str(rec["cpus"]) if rec["cpus"] is not None else "-",
                    human_bytes(g["memory"]["p95_bytes"]),
                    human_seconds(g["wall_seconds"]["p95"]),
                    f"{g['cpu_percent']['p95']:.0f}" if g["cpu_percent"]["p95"] is not None else "-",
                    _requested_text(g["requested"]),
                ]
            )
        header = ["PROGRAM", "RUNS", "MEMORY", "TIME", "CPUS", "PEAK p95", "WALL p95", "CPU% p95", "REQUESTED"]
        lines += _table(header, rows, right={1, 2, 3, 4, 5, 6, 7})
        for g in groups:
            lines += [f"  {g['program_name']}: {note}" for note in g["notes"]]
        if answer["truncated"]:
            lines.append(f"(more programs matched than the {len(groups)} shown: narrow with --program)")
    lines += _rule_lines(answer["rule"])
    return "\n".join(terminal_safe(line) for line in lines)


def _runs(count: int) -> str:
    return f"{count} successful run{'' if count == 1 else 's'}"


def _comment_head(g: dict[str, Any], answer: dict[str, Any]) -> str:
    return f"{g['program_name']}: {_runs(g['runs'])} {_span(answer)}"


def _slurm_time(seconds: int) -> str:
    days, rest = divmod(seconds // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00" if days else f"{hours:02d}:{minutes:02d}:00"


def _slurm(answer: dict[str, Any]) -> str:
    """#SBATCH lines per program; every other line is a comment, with no line break a name could bring."""
    lines = [f"# glia suggest ({_rule_short(answer)})"]
    for g in answer["groups"]:
        rec = g["recommended"]
        lines += ["", f"# {_comment_head(g, answer)}", *(f"# {note}" for note in g["notes"])]
        if rec["memory_bytes"] is not None:
            lines.append(f"#SBATCH --mem={int(rec['memory_bytes']) // MIB}M")
        if rec["seconds"] is not None:
            lines.append(f"#SBATCH --time={_slurm_time(int(rec['seconds']))}")
        if rec["cpus"] is not None:
            lines.append(f"#SBATCH --cpus-per-task={int(rec['cpus'])}")
    if not answer["groups"]:
        lines.append("# no successful runs match")
    return "\n".join(terminal_safe(line) for line in lines)


def _rule_short(answer: dict[str, Any]) -> str:
    del answer  # the rule is fixed; its words are in `rule` of the JSON answer and in docs/querying.md
    return (
        "memory: p95 of the peak + 20%, whole MiB; time: p95 of the wall time x 1.5, whole minutes;"
        " cpus: p95 of cpu_percent / 100, rounded up; an OOM-killed run raises memory to 1.5x what it had"
    )


# ASCII punctuation and space (underscore too: escaping it is as harmless as for the others)
_REGEX_SPECIAL = re.compile(r"[ -/:-@\[-`{-~]")
_GROOVY_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def groovy_string(text: str) -> str:
    """`text` as a single-quoted Groovy string literal: backslash, quote and control characters escaped (no `$`
    interpolation happens in single quotes), so no text can end the literal or the line."""
    out = []
    for char in text:
        code = ord(char)
        if char in _GROOVY_ESCAPES:
            out.append(_GROOVY_ESCAPES[char])
        elif code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029" or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


def nextflow_selector(name: str) -> str:
    """A `withName:` selector matching the process `name` exactly: Nextflow reads a selector as a regular
    expression, negated by a leading `!`, so each character that means something there is backslash-escaped
    (a backslash before a character that is not a letter or digit is that character in Java's regex), and the
    whole is a Groovy string literal."""
    return groovy_string(_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(), name))


def _nextflow(answer: dict[str, Any]) -> str:
    """A process config scope with one `withName:` block per program; names only inside string literals."""
    lines = [f"// glia suggest ({_rule_short(answer)})", "process {"]
    for g in answer["groups"]:
        rec = g["recommended"]
        lines.append(f"    // {_runs(g['runs'])} {_span(answer)}")
        lines += [f"    // {terminal_safe(note)}" for note in g["notes"]]
        lines.append(f"    withName: {nextflow_selector(g['program_name'])} {{")
        if rec["memory_bytes"] is not None:
            lines.append(f"        memory = '{int(rec['memory_bytes']) // MIB} MB'")
        if rec["seconds"] is not None:
            lines.append(f"        time = '{int(rec['seconds']) // 60}m'")
        if rec["cpus"] is not None:
            lines.append(f"        cpus = {int(rec['cpus'])}")
        lines.append("    }")
    if not answer["groups"]:
        lines.append("    // no successful runs match")
    lines.append("}")
    return "\n".join(lines)


def _rule_name(name: str) -> bool:
    """Whether `name` can be a Snakemake rule's name (a Python identifier, ASCII, not a keyword)."""
    return name.isascii() and name.isidentifier() and not keyword.iskeyword(name)


def _snakemake(answer: dict[str, Any]) -> str:
    """Per rule its `threads:` and `resources:` (mem_mb in Snakemake's megabytes of 10^6 bytes, rounded up so as to
    hold the recommendation; runtime in minutes). A program whose name cannot be a rule's gets its block commented
    out under its name, so the whole output still reads as a Snakefile."""
    lines = [f"# glia suggest ({_rule_short(answer)})"]
    for g in answer["groups"]:
        rec = g["recommended"]
        name = g["program_name"]
        lines += ["", f"# {terminal_safe(_comment_head(g, answer))}", *(f"# {terminal_safe(n)}" for n in g["notes"])]
        block = []
        if rec["cpus"] is not None:
            block.append(f"    threads: {int(rec['cpus'])}")
        resources = []
        if rec["memory_bytes"] is not None:
            resources.append(f"        mem_mb={math.ceil(int(rec['memory_bytes']) / 1_000_000)},")
        if rec["seconds"] is not None:
            resources.append(f"        runtime={int(rec['seconds']) // 60},")
        if resources:
            block += ["    resources:", *resources]
        if _rule_name(name):
            lines += [f"rule {name}:", *block]
        else:
            lines.append("# not a rule name: the block, for the rule that runs it:")
            lines += [f"#{line}" for line in block]
    if not answer["groups"]:
        lines.append("# no successful runs match")
    return "\n".join(lines)


def format_suggest(answer: dict[str, Any], fmt: str) -> str:
    """`glia suggest`'s answer as `fmt` (one of SUGGEST_FORMATS)."""
    if fmt == "json":
        return format_json(answer)
    if fmt == "slurm":
        return _slurm(answer)
    if fmt == "nextflow":
        return _nextflow(answer)
    if fmt == "snakemake":
        return _snakemake(answer)
    return _suggest_table(answer)


# --- compare ------------------------------------------------------------------------------------------------------

_BY_TITLE = {"script_sha256": "VERSION", "host": "HOST", "attr": "VALUE"}


def _pair(figure: dict[str, Any], shown: Any) -> str:
    median, p95 = figure["median"], figure["p95"]
    return f"{shown(median)} / {shown(p95)}" if median is not None else "-"


def _versus_text(group: dict[str, Any], labels: dict[str, str]) -> str:
    if not group["versus"]:
        return "(reference)" if group["reference"] is None else "-"
    parts = []
    for name, short in (("wall_seconds", "wall"), ("cpu_seconds", "cpu"), ("memory_bytes", "mem")):
        vs = group["versus"][name]
        if vs["ratio"] is not None:
            parts.append(f"{short} {vs['ratio']:.2f}x{'*' if vs['flagged'] else ''}")
    return f"vs {labels.get(group['reference'], group['reference'])}: " + ", ".join(parts)


def format_compare(answer: dict[str, Any], fmt: str) -> str:
    """`glia compare`'s answer as a table with its findings, or as JSON."""
    if fmt == "json":
        return format_json(answer)
    by = answer["by"]
    what = {"script_sha256": "script version", "host": "host"}.get(by, f"custom value {answer['key']}")
    window = f" since {_when(answer['since'])}" if answer.get("since") else ""
    window += f" before {_when(answer['until'])}" if answer.get("until") else ""
    lines = [f"glia compare {answer['program']} by {what}: successful runs{window}"]
    groups = answer["groups"]
    if not groups:
        lines.append(f"no successful runs of {answer['program']} with a {what}")
        return "\n".join(terminal_safe(line) for line in lines)
    labels = {g["group"]: g["label"] for g in groups}
    rows = [
        [
            g["label"],
            _when(g["first_seen"]),
            str(g["runs"]),
            _pair(g["wall_seconds"], human_seconds),
            _pair(g["cpu_seconds"], human_seconds),
            _pair(g["memory_bytes"], human_bytes),
            _versus_text(g, labels),
        ]
        for g in groups
    ]
    header = [_BY_TITLE[by], "FIRST SEEN", "RUNS", "WALL median / p95", "CPU median / p95", "MEMORY median / p95"]
    lines += _table([*header, "MEDIAN RATIO"], rows, right={2, 3, 4, 5})
    if answer["groups_left_out"]:
        lines.append(f"({answer['groups_left_out']} more groups not shown)")
    if answer["runs_capped"]:
        lines.append("(only the newest successful runs were read: narrow with --since)")
    if answer["findings"]:
        lines += ["flagged (* above):", *(f"  {f}" for f in answer["findings"])]
    else:
        lines.append("nothing flagged: no median differs from its reference's by more than 10% with p < 0.01")
    lines += _rule_lines(answer["rule"])
    return "\n".join(terminal_safe(line) for line in lines)


# --- through the query API ----------------------------------------------------------------------------------------


def _times(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with the API's ISO 8601 times read back as datetimes, as the database path has them."""
    from ._query import _times as read_times

    read_times(answer, ("since", "until"))
    for group in answer.get("groups") or []:
        if isinstance(group, dict):
            read_times(group, ("first_seen", "last_seen"))
    return answer


def _fetch(path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    from ._query import _api

    api = _api()
    status, answer = api.get(path, params)
    if status != 200:
        raise api.refused(path, status, answer)
    if not isinstance(answer, dict) or not isinstance(answer.get("groups"), list):
        raise api.not_the_api(path)
    return _times(answer)


def _params(pairs: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in pairs if value is not None]


def suggest_main(argv: list[str]) -> int:
    """What to request (memory, time, CPUs) per program, from its successful runs, through the query API."""
    from ._query import _epilog, _main

    parser = argparse.ArgumentParser(prog="glia suggest", description=suggest_main.__doc__, epilog=_epilog())
    add_suggest_options(parser)
    args = parser.parse_args(argv)
    params = _params(
        [
            ("program", args.program),
            ("task_name", args.task_name),
            ("workflow_name", args.workflow_name),
            ("since", args.since),
            ("until", args.until),
        ]
    )

    def body() -> int:
        print(format_suggest(_fetch("/api/suggest", params), args.format))
        return 0

    return _main("glia suggest", body)


def compare_main(argv: list[str]) -> int:
    """One program's script versions, hosts or custom values against each other, through the query API."""
    from ._query import _epilog, _main

    parser = argparse.ArgumentParser(prog="glia compare", description=compare_main.__doc__, epilog=_epilog())
    add_compare_options(parser)
    args = parser.parse_args(argv)
    by, key = compare_grouping(parser, args.by)
    params = _params(
        [("program", args.program), ("by", by), ("key", key), ("since", args.since), ("until", args.until)]
    )

    def body() -> int:
        print(format_compare(_fetch("/api/compare", params), args.format))
        return 0

    return _main("glia compare", body)
