"""Answers from history: what to request for a program (`suggest`) and whether a group of its runs got slower or
hungrier than another (`compare`), from the queries of `sql/answers.sql`.

`glia suggest` / `glia compare` (answers_cli.py, or over HTTP from the client) and `/api/suggest` / `/api/compare`
(answers_api.py) return exactly these answers, as plain JSON-ready dicts; how they are printed (a table, `#SBATCH`
lines, a Nextflow or Snakemake block) is the client's (`glia_otel/_answers.py`). The rules are constants here,
stated in every answer (`rule`) and in docs/querying.md.

The rank test is Mann-Whitney U with the normal approximation, tie correction and continuity correction, in pure
Python over the values PostgreSQL hands over (a binary search per value, a count of the ties): no SciPy in the
server, and SQL would need a window over every pair of groups. `tests/unit/test_answers.py` holds it to R's
`wilcox.test`.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

from . import sqlfiles
from .errors import InvalidQuery

if TYPE_CHECKING:
    import asyncpg

MIB = 1024 * 1024

# --- the rules ----------------------------------------------------------------------------------------------------

PERCENTILE = 0.95  # of each figure over the successful runs (the queries' percentile_cont(0.95))
MEMORY_HEADROOM = 1.20
TIME_FACTOR = 1.5
OOM_FACTOR = 1.5
FEW_RUNS = 10  # below this, a p95 is about the largest run: said in the answer
MAX_SUGGEST_GROUPS = 500
EFFECT = 0.10  # a median more than 10% off its reference's ...
ALPHA = 0.01  # ... with a rank test's p below this is flagged
MAX_COMPARE_RUNS = 200_000  # the newest successful runs of the program a comparison reads
MAX_COMPARE_GROUPS = 50

SUCCESSFUL = (
    "successful runs only: status ok (span status not ERROR) and exit code 0 or none; failed, running and lost runs"
    " and workflow spans are left out"
)
SUGGEST_RULE = {
    "runs": SUCCESSFUL,
    "memory": f"p95 of the peak memory (tree_peak_bytes where recorded, else peak_rss_bytes) + "
    f"{MEMORY_HEADROOM - 1:.0%} headroom, rounded up to a whole MiB",
    "oom": f"a run the kernel's OOM killer ended (oom_kills > 0; exit code 137 alone is not taken as one: time limits"
    f" kill too) raises the memory to at least {OOM_FACTOR}x what that run had (its request, else its peak)",
    "time": f"p95 of the wall time x {TIME_FACTOR}, rounded up to whole minutes (at least 1)",
    "cpus": "p95 of cpu_percent / 100, rounded up (at least 1)",
    "efficiency": "where runs recorded what they requested (requested_*): the median request and the median share"
    " of it a run used (memory: peak / request; time: wall / limit; cpus: CPU time / (wall x cpus))",
}
COMPARE_RULE = {
    "runs": SUCCESSFUL + f"; the newest {MAX_COMPARE_RUNS:,} of them at most",
    "memory": "tree_peak_bytes where recorded, else peak_rss_bytes",
    "reference": "script versions: the version first seen before it; hosts and custom values: the largest group",
    "flag": f"a figure whose median differs from the reference's by more than {EFFECT:.0%} and whose two-sided"
    f" Mann-Whitney U test gives p < {ALPHA}",
    "test": "Mann-Whitney U, normal approximation with tie and continuity correction (as R's wilcox.test"
    " with exact = FALSE, correct = TRUE): it compares whole distributions by rank, assumes no normality, and a few"
    " outliers cannot drive it",
}


def _sql(name: str) -> str:
    return sqlfiles.load("answers.sql")[name]


def _check_text(values: dict[str, Any]) -> None:
    for name, value in values.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidQuery(name, "must not contain NUL characters")


# --- statistics ---------------------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile of ascending values by linear interpolation (PostgreSQL's percentile_cont); None if empty."""
    if not ordered:
        return None
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass(frozen=True)
class RankTest:
    """A two-sided Mann-Whitney U test of x against y."""

    u: float  # U of x: how many (x, y) pairs have x above y, ties counting half
    z: float
    p: float


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> RankTest | None:
    """Mann-Whitney U of x against y, two-sided, by the normal approximation with the tie correction and a continuity
    correction of 0.5 (R's `wilcox.test(x, y, exact = FALSE, correct = TRUE)`, SciPy's `mannwhitneyu(x, y,
    method="asymptotic")`); None when either sample is empty. All values equal: p = 1."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return None
    ys = sorted(y)
    # U of x counts, for each x, the y below it and half of those equal to it (ties share the average of their
    # ranks): (bisect_left + bisect_right) / 2, summed by map in C rather than by a Python loop
    u = (sum(map(bisect_left, repeat(ys, n1), x)) + sum(map(bisect_right, repeat(ys, n1), x))) / 2
    counts = Counter(x)
    counts.update(ys)
    ties = sum(t**3 - t for t in counts.values() if t > 1)
    n = n1 + n2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return RankTest(u=u, z=0.0, p=1.0)
    z = (max(u, n1 * n2 - u) - mean - 0.5) / math.sqrt(variance)
    return RankTest(u=u, z=z, p=min(1.0, math.erfc(z / math.sqrt(2))))


# --- suggest ------------------------------------------------------------------------------------------------------


@dataclass
class SuggestFilter:
    """What `suggest` looks at: runs started in [since, until) of a program, task or workflow (None: any)."""

    since: datetime
    until: datetime | None = None
    program: str | None = None
    task_name: str | None = None
    workflow_name: str | None = None

    def check(self) -> None:
        """InvalidQuery for values PostgreSQL would refuse or that cannot match."""
        _check_text({f.name: getattr(self, f.name) for f in fields(self)})
        if self.until and self.since >= self.until:
            raise InvalidQuery("until", "must be later than since")


def _ceil(value: float) -> int:
    """`value` rounded up, where a value a hair above a whole number from float arithmetic (190.5 MiB x 1.2 is
    228.60000000000002 MiB) counts as that number."""
    return math.ceil(value - 1e-9)


def recommend_memory(p95: float | None, oom_memory: float | None) -> tuple[int | None, bool]:
    """The memory to request in bytes (whole MiB) and whether an OOM kill raised it above the p95 rule."""
    by_peak = _ceil(p95 * MEMORY_HEADROOM / MIB) * MIB if p95 is not None else None
    by_oom = _ceil(oom_memory * OOM_FACTOR / MIB) * MIB if oom_memory else None
    if by_oom is not None and (by_peak is None or by_oom > by_peak):
        return by_oom, True
    return by_peak, False


def recommend_seconds(p95: float | None) -> int | None:
    """The time limit to request in seconds: whole minutes, at least one."""
    if p95 is None:
        return None
    return max(1, _ceil(p95 * TIME_FACTOR / 60)) * 60


def recommend_cpus(p95_percent: float | None) -> int | None:
    """The CPUs to request: the p95 of cpu_percent in whole cores, at least one."""
    if p95_percent is None:
        return None
    return max(1, _ceil(p95_percent / 100))


def _requested(r: asyncpg.Record) -> dict[str, Any] | None:
    """What the runs asked for and how much of it they used, where they said (None when none did)."""
    out: dict[str, Any] = {}
    if r["requested_memory_runs"]:
        out["memory"] = {
            "runs": r["requested_memory_runs"],
            "median_bytes": round(r["requested_memory"]),
            "median_used": r["memory_used"],
        }
    if r["requested_time_runs"]:
        out["time"] = {
            "runs": r["requested_time_runs"],
            "median_seconds": r["requested_seconds"],
            "median_used": r["time_used"],
        }
    if r["requested_cpus_runs"]:
        out["cpus"] = {
            "runs": r["requested_cpus_runs"],
            "median_cpus": r["requested_cpus"],
            "median_used": r["cpus_used"],
        }
    return out or None


def _suggestion(r: asyncpg.Record) -> dict[str, Any]:
    memory, raised = recommend_memory(r["memory_p95"], r["oom_memory"])
    if r["tree_runs"] == r["memory_runs"]:
        measure = "tree_peak_bytes"
    elif r["tree_runs"] == 0:
        measure = "peak_rss_bytes"
    else:
        measure = "tree_peak_bytes where recorded, else peak_rss_bytes"
    notes = []
    if r["runs"] < FEW_RUNS:
        notes.append(
            f"only {r['runs']} successful run{'s' if r['runs'] != 1 else ''}: the p95 is about the largest; take it"
            " as a first guess"
        )
    if raised:
        notes.append(f"memory raised by {r['oom_runs']} run{'s' if r['oom_runs'] != 1 else ''} the OOM killer ended")
    return {
        "program_name": r["program_name"],
        "workflow_engines": sorted(r["workflow_engines"]),
        "runs": r["runs"],
        "memory": {
            "runs": r["memory_runs"],
            "measure": measure,
            "p95_bytes": r["memory_p95"],
            "max_bytes": r["memory_max"],
            "oom_runs": r["oom_runs"],
            "oom_had_bytes": r["oom_memory"],
        },
        "wall_seconds": {"runs": r["wall_runs"], "p95": r["wall_p95"], "max": r["wall_max"]},
        "cpu_percent": {"runs": r["cpu_runs"], "p95": r["cpu_percent_p95"]},
        "recommended": {
            "memory_bytes": memory,
            "memory_raised_by_oom": raised,
            "seconds": recommend_seconds(r["wall_p95"]),
            "cpus": recommend_cpus(r["cpu_percent_p95"]),
        },
        "requested": _requested(r),
        "notes": notes,
    }


async def suggest(conn: asyncpg.Connection, flt: SuggestFilter) -> dict[str, Any]:
    """The recommendation for each program (or task process/rule) with runs matching `flt`, by name."""
    flt.check()
    rows = await conn.fetch(
        _sql("suggest"),
        flt.program,
        flt.task_name,
        flt.workflow_name,
        flt.since,
        flt.until,
        MAX_SUGGEST_GROUPS + 1,
    )
    return {
        "since": flt.since,
        "until": flt.until,
        "filters": {"program": flt.program, "task_name": flt.task_name, "workflow_name": flt.workflow_name},
        "rule": SUGGEST_RULE,
        "groups": [_suggestion(r) for r in rows[:MAX_SUGGEST_GROUPS]],
        "truncated": len(rows) > MAX_SUGGEST_GROUPS,
    }


# --- compare ------------------------------------------------------------------------------------------------------


class CompareBy(enum.StrEnum):
    """What `compare` groups a program's runs by."""

    SCRIPT = "script_sha256"
    HOST = "host"
    ATTR = "attr"


# figure -> (a sentence's verb and noun)
FIGURES = {
    "wall_seconds": ("takes", "wall time"),
    "cpu_seconds": ("uses", "CPU time"),
    "memory_bytes": ("uses", "memory"),
}


@dataclass
class CompareFilter:
    """What `compare` looks at: one program's runs started in [since, until), grouped `by` (and `key` for attr)."""

    program: str
    by: CompareBy = CompareBy.SCRIPT
    key: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> None:
        """InvalidQuery for a missing or contradictory value."""
        _check_text({"program": self.program, "key": self.key})
        if not self.program:
            raise InvalidQuery("program", "name the program to compare")
        if self.by is CompareBy.ATTR and not self.key:
            raise InvalidQuery("key", "grouping by attr needs the custom value's key")
        if self.by is not CompareBy.ATTR and self.key is not None:
            raise InvalidQuery("key", f"only grouping by attr takes a key, not by {self.by.value}")
        if self.since and self.until and self.since >= self.until:
            raise InvalidQuery("until", "must be later than since")


def _labels(groups: Sequence[str], by: CompareBy, key: str | None) -> dict[str, str]:
    """How each group is named in sentences: a script version by the shortest prefix (at least 4 hex digits) that
    tells it from the others shown, a host by its name, a custom value as key=value."""
    if by is CompareBy.HOST:
        return {g: g for g in groups}
    if by is CompareBy.ATTR:
        return {g: f"{key}={g}" for g in groups}
    width = 4
    while width < 64 and len({g[:width] for g in groups}) < len(set(groups)):
        width += 1
    return {g: g[:width] for g in groups}


def _figure(values: Sequence[float]) -> dict[str, Any]:
    return {"runs": len(values), "median": percentile(values, 0.5), "p95": percentile(values, PERCENTILE)}


def p_text(p: float) -> str:
    """p as a sentence gives it: `p < 0.001`, else `p = 0.004`."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _versus(group: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in FIGURES:
        mine, theirs = group["_values"][name], ref["_values"][name]
        median, ref_median = percentile(mine, 0.5), percentile(theirs, 0.5)
        ratio = median / ref_median if median is not None and ref_median else None
        test = mann_whitney_u(mine, theirs)
        flagged = ratio is not None and test is not None and abs(ratio - 1) > EFFECT and test.p < ALPHA
        out[name] = {
            "ratio": ratio,
            "p": test.p if test else None,
            "u": test.u if test else None,
            "runs": len(mine),
            "reference_runs": len(theirs),
            "flagged": flagged,
        }
    return out


def _sentence(by: CompareBy, label: str, ref_label: str, figure: str, vs: dict[str, Any]) -> str:
    verb, noun = FIGURES[figure]
    who = {CompareBy.SCRIPT: f"version {label}", CompareBy.HOST: f"host {label}", CompareBy.ATTR: label}[by]
    ratio = vs["ratio"]
    shown = f"{ratio:.1f}x" if ratio >= 0.995 else f"{ratio:.2f}x"
    return (
        f"{who} {verb} {shown} the {noun} of {ref_label} ({p_text(vs['p'])}, {vs['runs']} vs"
        f" {vs['reference_runs']} runs)"
    )


async def compare(conn: asyncpg.Connection, flt: CompareFilter) -> dict[str, Any]:
    """The program's groups (script versions oldest first; hosts and custom values largest first), each figure's
    median and p95, each group against its reference, and a sentence for every flagged difference."""
    flt.check()
    rows = await conn.fetch(
        _sql("compare"),
        flt.program,
        flt.by.value,
        flt.key,
        flt.since,
        flt.until,
        MAX_COMPARE_RUNS,
        MAX_COMPARE_GROUPS,
    )
    groups = [
        {
            "group": r["grp"],
            "runs": r["runs"],
            "first_seen": r["first_seen"],
            "last_seen": r["last_seen"],
            "_values": {name: r[name] for name in FIGURES},
        }
        for r in rows
    ]
    if flt.by is CompareBy.SCRIPT:
        groups.sort(key=lambda g: (g["first_seen"], g["group"]))
    else:
        groups.sort(key=lambda g: (-g["runs"], g["group"]))
    labels = _labels([g["group"] for g in groups], flt.by, flt.key)
    findings = []
    for index, group in enumerate(groups):
        group["label"] = labels[group["group"]]
        for name in FIGURES:
            group[name] = _figure(group["_values"][name])
        ref = (groups[index - 1] if index else None) if flt.by is CompareBy.SCRIPT else (groups[0] if index else None)
        group["reference"] = ref["group"] if ref else None
        group["versus"] = _versus(group, ref) if ref else None
        for name, vs in (group["versus"] or {}).items():
            if vs["flagged"]:
                assert ref is not None
                findings.append(_sentence(flt.by, group["label"], labels[ref["group"]], name, vs))
    for group in groups:
        del group["_values"]
    return {
        "program": flt.program,
        "by": flt.by.value,
        "key": flt.key,
        "since": flt.since,
        "until": flt.until,
        "rule": COMPARE_RULE,
        "groups": groups,
        "groups_left_out": (rows[0]["groups"] - len(rows)) if rows else 0,
        "runs_capped": bool(rows) and rows[0]["picked"] >= MAX_COMPARE_RUNS,
        "findings": findings,
    }
