"""The scheduler context from the environment (glia_otel/_scheduler.py): each scheduler's case, named variables only,
tokens never read. The cases are shared with the R client's tests (tests/testdata/scheduler_env.json)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from glia_otel._resource import command_attributes
from glia_otel._scheduler import READ, scheduler_attributes
from tests.conftest import REPO

CASES = json.loads((REPO / "tests" / "testdata" / "scheduler_env.json").read_text())
TOKENS: dict[str, str] = CASES["tokens"]


class Watched(Mapping[str, str]):
    """An environment that records every name looked up and refuses to be walked (a whole environment is never
    read: that is how a token would get in)."""

    def __init__(self, values: dict[str, str]) -> None:
        self._env = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._env[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self._env.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._env

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the environment was walked")

    def __len__(self) -> int:
        raise AssertionError("the environment was measured")


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_each_scheduler_s_context(case: dict[str, Any]) -> None:
    env = Watched({**TOKENS, **case["env"]})
    got = scheduler_attributes(env, case.get("given", {}))
    assert got == case["expected"]
    assert env.asked <= READ, env.asked - READ
    assert not env.asked & set(TOKENS), "a token variable was read"
    shown = json.dumps(got)
    assert "SECRET" not in shown


def test_every_variable_read_is_documented() -> None:
    text = (REPO / "docs" / "attributes.md").read_text()
    missing = sorted(name for name in READ if f"`{name}`" not in text)
    assert missing == [], f"docs/attributes.md does not name {missing}"


def test_a_command_s_resource_carries_the_scheduler_and_otel_resource_attributes_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        **TOKENS,
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_PARTITION": "short",
        "SLURM_CPUS_ON_NODE": "2",
    }.items():
        monkeypatch.setenv(name, value)
    attrs = command_attributes(["true"], "/bin/true", 1, False, None, {"glia.scheduler.partition": "mine"})
    assert attrs["glia.scheduler.name"] == "slurm" and attrs["glia.scheduler.job_id"] == "7"
    assert attrs["glia.requested.cpus"] == 2
    assert attrs["glia.scheduler.partition"] == "mine"  # what the user said in OTEL_RESOURCE_ATTRIBUTES
    assert "SECRET" not in json.dumps(attrs)


def test_the_r_client_is_held_to_the_same_variables() -> None:
    text = (REPO / "glia-r" / "tests" / "testthat" / "test-scheduler.R").read_text()
    allowed = text.partition("allowed <- c(")[2].partition("\n  )")[0]
    assert set(re.findall(r'"([A-Z_]+)"', allowed)) == READ
    source = (REPO / "glia-r" / "R" / "scheduler.R").read_text()
    assert set(re.findall(r'get\("([A-Z_]+)"\)', source)) == READ
