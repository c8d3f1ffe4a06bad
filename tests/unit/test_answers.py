"""The pure parts of `glia suggest` / `glia compare`: the rank test held to R's wilcox.test, the percentile held to
PostgreSQL's percentile_cont, the rounding rules, the names of groups, and the escaping of names in each output."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from glia_otel._answers import format_suggest, groovy_string, nextflow_selector
from receiver.answers import (
    CompareBy,
    _labels,
    mann_whitney_u,
    p_text,
    percentile,
    recommend_cpus,
    recommend_memory,
    recommend_seconds,
)

MIB = 1024 * 1024

# (x, y, W, p) from R 4 (`r <- wilcox.test(x, y, exact = FALSE, correct = TRUE); r$statistic; r$p.value`): R's W
# is U of x. The first pair is SciPy's documentation example (males vs females, p 0.1113...); the others have ties.
R_CASES = [
    ([19, 22, 16, 29, 24], [20, 11, 17, 12], 17.0, 0.11134688653314045),
    ([1, 2, 2, 3, 3, 3, 4], [3, 4, 4, 5, 5, 6], 3.5, 0.012999854364387303),
    ([1.1, 2.2, 3.3], [1.1, 2.2, 3.3], 4.5, 1.0),
    ([10, 10, 10, 20], [10, 20, 20, 20, 30], 4.0, 0.13999628431554118),
    ([5, 5, 5, 5, 6], [5, 5, 6, 6, 6, 7], 7.5, 0.1518733603052729),
]
BASE = [101, 98, 105, 110, 99, 103, 97, 108, 102, 100, 104, 96, 107, 95, 109, 106]


@pytest.mark.parametrize(("x", "y", "w", "p"), R_CASES)
def test_mann_whitney_u_is_rs_wilcox_test(x: list[float], y: list[float], w: float, p: float) -> None:
    test = mann_whitney_u(x, y)
    assert test is not None
    assert test.u == w
    assert test.p == pytest.approx(p, rel=1e-12)
    # two-sided: the same p either way round, and the two U add up to n1 * n2
    other = mann_whitney_u(y, x)
    assert other is not None and other.p == pytest.approx(test.p, rel=1e-12)
    assert other.u + test.u == len(x) * len(y)


def test_mann_whitney_u_on_separated_samples() -> None:
    # R: wilcox.test(2 * BASE, BASE, exact = FALSE) gives W = 256, p = 1.5449101737495917e-06
    test = mann_whitney_u([2 * v for v in BASE], BASE)
    assert test is not None and test.u == 256 and test.p == pytest.approx(1.5449101737495917e-06, rel=1e-12)
    # by hand: no ties, n1 = n2 = 16: mean 128, sd sqrt(16 * 16 * 33 / 12) = 26.533, z = (256 - 128 - 0.5) / sd
    z = 127.5 / math.sqrt(16 * 16 * 33 / 12)
    assert test.z == pytest.approx(z) and test.p == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_mann_whitney_u_edges() -> None:
    assert mann_whitney_u([], [1.0]) is None and mann_whitney_u([1.0], []) is None
    same = mann_whitney_u([3.0, 3.0, 3.0], [3.0, 3.0])  # all tied: no evidence either way
    assert same is not None and same.p == 1.0 and same.u == 3.0
    one = mann_whitney_u([1.0], [2.0])
    assert one is not None and one.p == 1.0  # a continuity-corrected z below 0 is clipped to p = 1
    # unsorted input is sorted first
    shuffled = mann_whitney_u([29, 16, 24, 19, 22], [12, 20, 11, 17])
    assert shuffled is not None and shuffled.u == 17.0


def test_percentile_is_percentile_cont() -> None:
    # PostgreSQL: SELECT percentile_cont(q) WITHIN GROUP (ORDER BY v) FROM generate_series(1, 20) v
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 0.5) == 10.5
    assert percentile(values, 0.95) == pytest.approx(19.05)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert percentile([], 0.5) is None


def test_recommendations_round_up_to_the_units() -> None:
    # 190.5 MiB x 1.2 = 228.6 MiB -> 229 MiB; a whole result stays whole despite float noise (1905 x 1.2 = 2286)
    assert recommend_memory(190.5 * MIB, None) == (229 * MIB, False)
    assert recommend_memory((1900 + 100 * (18.05 - 18)) * MIB, None) == (2286 * MIB, False)
    # an OOM-killed run that had 200 MiB: at least 300 MiB; below the peak rule it changes nothing
    assert recommend_memory(190.5 * MIB, 200 * MIB) == (300 * MIB, True)
    assert recommend_memory(400 * MIB, 100 * MIB) == (480 * MIB, False)
    assert recommend_memory(None, 100 * MIB) == (150 * MIB, True)
    assert recommend_memory(None, None) == (None, False)
    # time: x 1.5, whole minutes, at least one
    assert recommend_seconds(1143.0) == 29 * 60
    assert recommend_seconds(40.0) == 60 and recommend_seconds(0.0) == 60
    assert recommend_seconds(2400.0) == 60 * 60 and recommend_seconds(None) is None
    # cpus: p95 of cpu_percent / 100, rounded up, at least one
    assert [recommend_cpus(p) for p in (0.0, 99.0, 100.0, 100.5, 190.5, 800.0)] == [1, 1, 1, 2, 2, 8]
    assert recommend_cpus(None) is None


def test_group_labels() -> None:
    shas = ["b3f1a" + "0" * 59, "9a0c" + "1" * 60, "b3f1b" + "2" * 59]
    assert _labels(shas, CompareBy.SCRIPT, None) == {s: s[:5] for s in shas}  # b3f1a/b3f1b need a fifth digit
    assert _labels(shas[:2], CompareBy.SCRIPT, None) == {shas[0]: "b3f1", shas[1]: "9a0c"}
    assert _labels(["node1"], CompareBy.HOST, None) == {"node1": "node1"}
    assert _labels(["S1"], CompareBy.ATTR, "sample") == {"S1": "sample=S1"}
    assert [p_text(p) for p in (1e-9, 0.00099, 0.001, 0.0042, 0.5)] == [
        "p < 0.001",
        "p < 0.001",
        "p = 0.001",
        "p = 0.004",
        "p = 0.500",
    ]


def test_groovy_strings_and_selectors() -> None:
    assert groovy_string("align") == "'align'"
    assert groovy_string("it's $HOME \\ \n\t\x1b\u2028") == "'it\\'s $HOME \\\\ \\n\\t\\u001b\\u2028'"
    # a selector is a regex, negated by a leading !: each character meaning something there is escaped
    assert nextflow_selector("align") == "'align'"
    assert nextflow_selector("MAIN:ALIGN_1") == "'MAIN\\\\:ALIGN\\\\_1'"
    assert nextflow_selector("!a|b.*") == "'\\\\!a\\\\|b\\\\.\\\\*'"
    assert nextflow_selector("x'y") == "'x\\\\\\'y'"  # regex \' then Groovy \\ and \'


def answer(name: str, notes: list[str] | None = None) -> dict[str, Any]:
    """A suggest answer of one program, as answers.suggest makes it."""
    return {
        "since": datetime(2026, 1, 1, tzinfo=UTC),
        "until": None,
        "filters": {},
        "rule": {"memory": "..."},
        "truncated": False,
        "groups": [
            {
                "program_name": name,
                "runs": 12,
                "notes": notes or [],
                "recommended": {
                    "memory_bytes": 1536 * MIB,
                    "memory_raised_by_oom": False,
                    "seconds": 26 * 3600 + 300,
                    "cpus": 3,
                },
            }
        ],
    }


def test_slurm_lines_hold_only_figures_and_comments() -> None:
    evil = "job\n#SBATCH --partition=gpu\r\x1b[2Jdone"
    out = format_suggest(answer(evil, [evil]), "slurm")
    sbatch = [line for line in out.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == ["#SBATCH --mem=1536M", "#SBATCH --time=1-02:05:00", "#SBATCH --cpus-per-task=3"]
    assert all(line == "" or line.startswith("# ") or line in sbatch for line in out.splitlines())
    assert "# job\\n#SBATCH --partition=gpu\\r\\x1b[2Jdone: 12 successful runs started since 2026-01-01" in out


def test_snakemake_block_names_only_rules_that_can_be() -> None:
    out = format_suggest(answer("align"), "snakemake")
    assert "rule align:\n    threads: 3\n    resources:\n        mem_mb=1611,\n        runtime=1565," in out
    for name in ("bad name", "class", "2fast", "naïve", "x\nrule evil:"):
        out = format_suggest(answer(name), "snakemake")
        assert all(line == "" or line.startswith("#") for line in out.splitlines()), name
    compile(format_suggest(answer("x\nimport os"), "snakemake"), "Snakefile", "exec")  # comments only: valid Python


def test_nextflow_block_is_one_selector_per_program() -> None:
    out = format_suggest(answer("x'\n} process { cpus = 64 //", ["note\nprocess.cpus = 64"]), "nextflow")
    lines = out.splitlines()
    assert lines[0].startswith("// glia suggest") and lines[1] == "process {" and lines[-1] == "}"
    assert "    withName: 'x\\\\\\'\\n\\\\}\\\\ process\\\\ \\\\{\\\\ cpus\\\\ \\\\=\\\\ 64\\\\ \\\\/\\\\/' {" in lines
    assert "    // note\\nprocess.cpus = 64" in lines
    assert "        memory = '1536 MB'" in lines and "        time = '1565m'" in lines and "        cpus = 3" in lines
