"""`/api/suggest` and `/api/compare`: the answers of answers.py over HTTP, under the query API's read key, read
transaction, timeout and cancellation (api.py's `_answer`). `glia suggest` / `glia compare` print these answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from . import answers
from .api import _AUTH_RESPONSES, _answer
from .errors import InvalidQuery
from .query import RunQueries, parse_when
from .services import Wired, require


class MemoryFigures(BaseModel):
    runs: int = Field(description="successful runs with a memory figure")
    measure: str = Field(description="tree_peak_bytes, peak_rss_bytes, or both (tree where recorded)")
    p95_bytes: float | None
    max_bytes: float | None
    oom_runs: int = Field(description="runs the OOM killer ended (oom_kills > 0), whatever their status")
    oom_had_bytes: float | None = Field(description="the most such a run had: its request, else its peak")


class Recommended(BaseModel):
    memory_bytes: int | None = Field(description="whole MiB")
    memory_raised_by_oom: bool
    seconds: int | None = Field(description="whole minutes")
    cpus: int | None


class Suggestion(BaseModel):
    program_name: str = Field(description="service.name: for a workflow's task, its process or rule")
    workflow_engines: list[str]
    runs: int = Field(description="the successful runs the recommendation rests on")
    memory: MemoryFigures
    wall_seconds: dict[str, Any] = Field(description="runs, p95, max")
    cpu_percent: dict[str, Any] = Field(description="runs, p95")
    recommended: Recommended
    requested: dict[str, Any] | None = Field(
        description="memory/time/cpus: runs, the median request, the median share of it used; null if unknown"
    )
    notes: list[str]


class SuggestAnswer(BaseModel):
    since: datetime
    until: datetime | None
    filters: dict[str, str | None]
    rule: dict[str, str] = Field(description="the rule of each figure, in words")
    groups: list[Suggestion]
    truncated: bool = Field(description=f"more than {answers.MAX_SUGGEST_GROUPS} programs matched")


class Figure(BaseModel):
    runs: int
    median: float | None
    p95: float | None


class Versus(BaseModel):
    ratio: float | None = Field(description="this group's median / the reference's")
    p: float | None = Field(description="two-sided Mann-Whitney U test (normal approximation)")
    u: float | None
    runs: int
    reference_runs: int
    flagged: bool


class CompareGroup(BaseModel):
    group: str
    label: str = Field(description="as the findings name it: a short script sha256, a host, key=value")
    runs: int
    first_seen: datetime
    last_seen: datetime
    wall_seconds: Figure
    cpu_seconds: Figure
    memory_bytes: Figure
    reference: str | None = Field(description="the group this one is compared with; null for the first")
    versus: dict[str, Versus] | None


class CompareAnswer(BaseModel):
    program: str
    by: str
    key: str | None
    since: datetime | None
    until: datetime | None
    rule: dict[str, str]
    groups: list[CompareGroup]
    groups_left_out: int = Field(description=f"groups past the {answers.MAX_COMPARE_GROUPS} shown")
    runs_capped: bool = Field(description=f"only the newest {answers.MAX_COMPARE_RUNS:,} successful runs were read")
    findings: list[str] = Field(
        description='e.g. "version b3f1 uses 2.1x the memory of 9a0c (p < 0.001, 40 vs 38 runs)"'
    )


router = APIRouter(prefix="/api", tags=["answers"], dependencies=[Depends(require("read"))])

Text = Annotated[str | None, Query(max_length=1000)]
When = Annotated[str | None, Query(max_length=64, description="ISO 8601 time or an age (30d, 12h)")]


@router.get(
    "/suggest",
    summary="what to request (memory, time, CPUs) per program, from its successful runs",
    response_model=SuggestAnswer,
    responses=_AUTH_RESPONSES,
)
async def suggest_endpoint(
    request: Request,
    svc: Wired,
    program: Annotated[str | None, Query(max_length=1000, description="service.name")] = None,
    task_name: Annotated[
        str | None, Query(max_length=1000, description="a task's label, or its part before ' (' (align for align (S3))")
    ] = None,
    workflow_name: Text = None,
    since: Annotated[str, Query(max_length=64, description="started at or after (default 30d)")] = "30d",
    until: When = None,
) -> Response:
    """Per program (a workflow task's process or rule), the recommended memory, time and CPUs by the stated rule."""
    flt = answers.SuggestFilter(
        since=parse_when(since, "since"),
        until=parse_when(until, "until") if until else None,
        program=program,
        task_name=task_name,
        workflow_name=workflow_name,
    )

    async def work(runs: RunQueries) -> dict[str, Any]:
        return await answers.suggest(runs.conn, flt)

    return await _answer(request, svc, work)


@router.get(
    "/compare",
    summary="one program's script versions, hosts or custom values against each other",
    response_model=CompareAnswer,
    responses=_AUTH_RESPONSES,
)
async def compare_endpoint(
    request: Request,
    svc: Wired,
    program: Annotated[str, Query(min_length=1, max_length=1000, description="service.name")],
    by: Annotated[answers.CompareBy, Query(description="what to group by")] = answers.CompareBy.SCRIPT,
    key: Annotated[str | None, Query(min_length=1, max_length=1000, description="the custom value (by=attr)")] = None,
    since: When = None,
    until: When = None,
) -> Response:
    """Per group: runs, median and p95 of wall time, CPU time and peak memory, and the flagged differences."""
    if by is answers.CompareBy.ATTR and key is None:
        raise InvalidQuery("key", "by=attr needs key: the custom value to group by")
    flt = answers.CompareFilter(
        program=program,
        by=by,
        key=key,
        since=parse_when(since, "since") if since else None,
        until=parse_when(until, "until") if until else None,
    )

    async def work(runs: RunQueries) -> dict[str, Any]:
        return await answers.compare(runs.conn, flt)

    return await _answer(request, svc, work)
