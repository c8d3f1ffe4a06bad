"""The Snakemake plugin passes `--keep-stderr` to every shell job's `glia run` when GLIA_KEEP_STDERR says so."""

from __future__ import annotations

import pytest

from glia_otel._config import load_settings
from snakemake_logger_plugin_glia import _workflow
from snakemake_logger_plugin_glia._shell import ShellJob

JOB = ShellJob(3, "align", {"sample": "S1"}, 1, {}, 1, None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, []), ("false", []), ("true", ["--keep-stderr"]), ("always", ["--keep-stderr=always"]), ("what", [])],
)
def test_the_switch_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: list[str]
) -> None:
    monkeypatch.setattr(_workflow, "_NAME_TIMEOUT_S", 0.01)
    if value is None:
        monkeypatch.delenv("GLIA_KEEP_STDERR", raising=False)
    else:
        monkeypatch.setenv("GLIA_KEEP_STDERR", value)
    _, options = _workflow.WorkflowRun(load_settings({})).plan(JOB)
    assert options[:2] == ["--name", "align (sample=S1)"]
    kept = [o for o in options if o.startswith("--keep-stderr")]
    assert kept == expected
