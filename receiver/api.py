"""The query API (`/api/runs`, `/api/runs/{id}`, `/api/runs/{id}/metrics`) and the read-only page at `/`: the HTTP
side of the query layer (query.py), which `glia runs` and `glia show` share.

Here are the parameters and their validation, the answer models of the OpenAPI document, and the one thing reads
need from HTTP: a query is cancelled when its client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from .errors import ClientGone, InvalidQuery, NotFound
from .query import (
    MAX_CHILDREN,
    MAX_LIMIT,
    MAX_POINTS,
    RUN_ID_PATTERN,
    STATUSES,
    RunFilter,
    RunQueries,
    Sort,
    parse_attrs,
    parse_when,
    reading,
)
from .run_logs import MAX_RECORDS, add_logs
from .services import Wired, require

T = TypeVar("T")
log = logging.getLogger("glia.api")

PAGE_DIR = Path(__file__).parent / "page"
# Served by name only (nothing else under page/ is reachable); vendor/ holds uPlot's dist files (vendor/README.md)
PAGE_ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
    "vendor/uPlot.LICENSE": "text/plain",
}


class RunSummary(BaseModel):
    """A row of /api/runs."""

    run_id: str = Field(description="the span id: 16 hex digits")
    trace_id: str
    parent_run_id: str | None
    run_name: str
    program_name: str | None = Field(description="service.name")
    run_kind: str | None = Field(description="block, function or command; null for a plain root span")
    user_name: str | None
    host_name: str | None
    status: str = Field(
        description="running (started, not ended), lost (not ended, its heartbeats stopped), error (span status"
        " ERROR or a non-zero exit code), else ok"
    )
    status_message: str | None
    exit_code: int | None
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the run is running or lost: it has not ended")
    wall_seconds: float | None = Field(description="from start to end; null while the run has not ended")
    elapsed_seconds: float | None = Field(
        description="how long it has run: its wall time once ended, to now while running, to its last heartbeat"
        " once lost"
    )
    last_heartbeat_at: datetime | None = Field(
        description="a run not ended: when its client last said it was alive (start record or heartbeat); null"
        " once ended"
    )
    lost_at: datetime | None = Field(description="when the receiver found the run's heartbeats stopped (lost)")
    last_rss_bytes: int | None = Field(
        description="a run not ended: its memory (RSS; a command's whole tree) at its last heartbeat; null once ended"
    )
    cpu_seconds: float | None = Field(description="user + system; for a run not ended, at its last heartbeat")
    cpu_percent: float | None
    peak_rss_bytes: int | None = Field(
        description="the largest single process's peak RSS (for a command: what GNU time's %M reports; for a block:"
        " the process's peak during the block)"
    )
    peak_rss_method: str | None = Field(description="how peak_rss_bytes was measured (docs/attributes.md)")
    tree_peak_bytes: int | None = Field(
        description="a command's whole process tree at its peak: the cgroup's charged-memory peak (what a memory"
        " limit enforces), else the sampled sum of the tree's RSS; null for blocks"
    )
    tree_peak_method: str | None = Field(description="cgroup, sampled-tree, or wait4 when only one figure exists")
    oom_kills: int | None = Field(description="processes of the command's cgroup the kernel's OOM killer ended")
    io_read_bytes: int | None
    io_write_bytes: int | None
    workflow_engine: str | None = Field(
        description="the workflow engine of a workflow or task run: nextflow, snakemake"
    )
    workflow_run_id: str | None = Field(description="the engine's id of the workflow run (every task carries it)")
    workflow_name: str | None
    task_name: str | None = Field(description="the engine's task label, e.g. `align (S3)`")
    task_attempt: int | None = Field(description="1 for a task's first attempt")
    scheduler: str | None = Field(
        description="slurm, pbs, lsf, sge, kubernetes, github-actions or gitlab-ci: what the run's job ran under"
    )
    scheduler_job_id: str | None = Field(description="the job's id there (a Slurm array task: ARRAYJOBID_TASKID)")
    requested_memory_bytes: int | None = Field(description="the memory the task or job asked for")
    requested_cpus: float | None
    requested_seconds: float | None = Field(description="the time limit the task or job asked for")
    script_path: str | None
    script_sha256: str | None
    attributes: dict[str, Any] = Field(description="the run's custom values and other span attributes")
    elided: list[str] = Field(
        description="what was cut short (`run_name`, `attributes.key`; the value ends in '…[cut at N characters]') or"
        " left out (`attributes.*`) to keep the answer bounded; empty when nothing was"
    )


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page. A page can hold fewer than `limit`"
        " runs and still have a next page: it ends early at a byte budget"
    )


class ChildSpan(BaseModel):
    span_id: str
    parent_span_id: str | None
    depth: int = Field(description="1 for a direct child of the run")
    name: str
    kind: int
    run_kind: str | None
    program_name: str | None = Field(description="service.name; for a task, its process or rule")
    task_name: str | None
    task_attempt: int | None
    exit_code: int | None
    status: str = Field(description="running, lost, error or ok, as a run's")
    status_message: str | None
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the span has not ended (a live run)")
    wall_seconds: float | None
    peak_rss_bytes: int | None
    attributes: dict[str, Any]
    elided: list[str] = Field(description="what was cut short (`name`, `attributes.key`) or left out (`attributes.*`)")


class WorkflowTask(BaseModel):
    """A run of the same workflow that is not below the workflow span in its trace."""

    run_id: str
    trace_id: str
    parent_run_id: str | None
    run_name: str
    program_name: str | None
    run_kind: str | None
    task_name: str | None
    task_attempt: int | None
    status: str
    exit_code: int | None
    started_at: datetime
    ended_at: datetime | None
    wall_seconds: float | None
    peak_rss_bytes: int | None
    elided: list[str]


class LogRecordView(BaseModel):
    """A log record of the run: written inside its span or a span below it, or its kept stderr."""

    time: datetime
    severity_number: int = Field(description="OTLP SeverityNumber: 0 unset, 9-12 info, 13-16 warn, 17-20 error, ...")
    severity_text: str | None
    body: str | None = Field(description="its text, or its value as JSON text when it is not a string")
    event_name: str | None = Field(description="glia.run.stderr for the stderr tail of `glia run --keep-stderr`")
    span_id: str = Field(description="the span it was written in: the run's, or one below it")
    attributes: dict[str, Any] = Field(
        description="for a stderr tail: log.iostream=stderr, glia.stderr.lines, glia.stderr.bytes (all the command"
        " wrote), glia.stderr.truncated"
    )
    elided: list[str]


class ExceptionView(BaseModel):
    """An exception the run recorded (a Python or R block that raised): its `exception` event."""

    time: datetime | None
    type: str | None
    message: str | None
    stacktrace: str | None
    elided: list[str]


class RunDetail(RunSummary):
    """A run with every column of the runs view and the spans below it."""

    runtime: str | None
    os_type: str | None
    command_args: list[str] | None
    working_directory: str | None
    cpu_user_seconds: float | None
    cpu_system_seconds: float | None
    max_rss_kb: int | None = Field(description="peak_rss_bytes in KiB, GNU time's unit")
    service_instance_id: str | None
    resource: dict[str, Any]
    children: list[ChildSpan]
    children_truncated: bool = Field(
        description=f"more spans are below the run than shown: past {MAX_CHILDREN}, or past the byte budget"
    )
    workflow_tasks: list[WorkflowTask] = Field(
        description="for a workflow span: the runs with its workflow_run_id that are not among its children (a task"
        " sent without its parent, or in a trace of its own); empty otherwise"
    )
    workflow_tasks_truncated: bool
    exceptions: list[ExceptionView] = Field(description="the exceptions the run recorded, in order")
    logs: list[LogRecordView] = Field(
        description=f"the run's log records, newest last: the newest {MAX_RECORDS} written in its span or below it"
        " (OTLP logs), and the stderr tail `glia run --keep-stderr` kept"
    )
    logs_truncated: bool = Field(description="older records are not shown: past the count, or the byte budget")


class Point(BaseModel):
    time: datetime
    value: float | None


class MetricSeries(BaseModel):
    name: str = Field(description="e.g. process.memory.usage, process.cpu.time")
    unit: str | None
    type: str
    attributes: dict[str, Any]
    elided: list[str] = Field(description="what was cut short (`name`, `attributes.key`) or left out (`attributes.*`)")
    points: list[Point]


class RunMetrics(BaseModel):
    run_id: str
    series: list[MetricSeries]
    truncated: bool = Field(
        description=f"some points are not shown: past {MAX_POINTS}, or their series past the byte budget"
    )


class ErrorDetail(BaseModel):
    detail: Any


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away (the body of a GET is empty: the next message is the disconnect)."""
    with contextlib.suppress(Exception):  # a receive that fails has lost its client too
        while (await request.receive())["type"] != "http.disconnect":
            pass


async def _read(request: Request, svc: Wired, work: Callable[[RunQueries], Awaitable[T]]) -> T:
    """Run `work` on a pooled connection in a read transaction, cancelling it if the client goes away.

    Starlette does not cancel a handler whose client disconnected; cancelling the task makes asyncpg send
    PostgreSQL a cancel request, so the query stops there too. A database that is away or busy, or a query past
    the read timeout, is `Unavailable` (503 + Retry-After, as on ingest); a value PostgreSQL refuses is an
    `InvalidQuery` (422): database.py decides which.
    """

    async def go() -> T:
        async with (
            svc.db.connection(read_timeout_ms=svc.reads.statement_timeout_ms) as conn,
            reading(conn, svc.reads) as runs,
        ):
            return await work(runs)

    task = asyncio.ensure_future(go())
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        log.debug("%s: the client went away; its query was cancelled", request.url.path)
        raise ClientGone
    return task.result()


async def _answer(request: Request, svc: Wired, work: Callable[[RunQueries], Awaitable[Any]]) -> Response:
    """`work`'s result as JSON, or, when the client went away meanwhile, an answer nobody will read."""
    try:
        return _json(await _read(request, svc, work))
    except ClientGone:
        # uvicorn drops what is sent to a closed connection; 499 is the status proxies log for this case
        return Response(status_code=499)


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "no API key, or an unknown or revoked one (when keys exist)"},
    403: {"model": ErrorDetail, "description": "an API key without the read scope"},
    503: {
        "model": ErrorDetail,
        "description": "the database is unreachable or busy; retry after Retry-After",
    },
}

router = APIRouter()
api = APIRouter(prefix="/api", tags=["runs"], dependencies=[Depends(require("read"))])


@api.get(
    "/runs",
    summary="runs, newest first, filtered and paged",
    response_model=RunPage,
    responses=_AUTH_RESPONSES,
)
async def runs_endpoint(
    request: Request,
    svc: Wired,
    program: Annotated[str | None, Query(max_length=1000, description="service.name of the runs")] = None,
    service: Annotated[str | None, Query(max_length=1000, description="the same as program")] = None,
    user: Annotated[str | None, Query(max_length=1000, description="process.owner")] = None,
    host: Annotated[str | None, Query(max_length=1000, description="host.name")] = None,
    status: Annotated[str | None, Query(pattern=f"^({'|'.join(STATUSES)})$", description=", ".join(STATUSES))] = None,
    name: Annotated[
        str | None, Query(max_length=1000, description="the run name (glia run --name, the block's)")
    ] = None,
    exit_code: Annotated[int | None, Query(ge=-(2**31), le=2**31 - 1)] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="started at or after: ISO 8601 time or an age (7d, 12h)")
    ] = None,
    until: Annotated[str | None, Query(max_length=64, description="started before: ISO 8601 time or an age")] = None,
    attr: Annotated[
        list[str],
        Query(
            max_length=50,
            description="custom value, key=value, repeatable; the value is matched with its JSON type when it "
            'reads as JSON (1000, true, "1000"), else as a string',
        ),
    ] = [],  # noqa: B006 - FastAPI copies defaults
    script_sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    workflow: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=1000,
            description="a workflow's runs: the engine's workflow_run_id, or the run id of the workflow span",
        ),
    ] = None,
    sort: Annotated[Sort, Query(description="sort key; a leading '-' means descending")] = Sort.NEWEST,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")] = None,
) -> Response:
    """Runs matching every given filter, in `sort` order, `limit` at a time (keyset pagination)."""
    if program and service and program != service:
        raise InvalidQuery("service", "program and service name the same filter; give one")
    flt = RunFilter(
        program=program or service,
        user=user,
        host=host,
        status=status,
        exit_code=exit_code,
        since=parse_when(since, "since") if since else None,
        until=parse_when(until, "until") if until else None,
        attrs=parse_attrs(attr),
        script_sha256=script_sha256,
        workflow=workflow,
        name=name,
    )

    async def work(runs: RunQueries) -> dict[str, Any]:
        rows, next_cursor = await runs.list_runs(flt, sort, limit, cursor)
        return {"runs": rows, "next_cursor": next_cursor}

    return await _answer(request, svc, work)


async def _run_or_404(runs: RunQueries, run_id: str) -> dict[str, Any]:
    run = await runs.get_run(run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    return run


RunId = Annotated[str, PathParam(pattern=RUN_ID_PATTERN, description="the run's span id: 16 hex digits")]


@api.get(
    "/runs/{run_id}",
    summary="one run with every attribute and the spans below it",
    response_model=RunDetail,
    responses={404: {"model": ErrorDetail, "description": "no run with this id"}, **_AUTH_RESPONSES},
)
async def run_endpoint(request: Request, svc: Wired, run_id: RunId) -> Response:
    """The run and its child spans (each once, depth first, at most 1000), within the byte budgets; for a workflow
    span, also its workflow's runs that are not below it."""

    async def work(runs: RunQueries) -> dict[str, Any]:
        run = await _run_or_404(runs, run_id)
        await runs.run_tree(run)
        await add_logs(runs, run)
        return run

    return await _answer(request, svc, work)


@api.get(
    "/runs/{run_id}/metrics",
    summary="the run's metric points over time (memory, CPU, ...)",
    response_model=RunMetrics,
    responses={404: {"model": ErrorDetail, "description": "no run with this id"}, **_AUTH_RESPONSES},
)
async def run_metrics_endpoint(request: Request, svc: Wired, run_id: RunId) -> Response:
    """The points its process reported while the run was going, one series per metric and attribute set."""

    async def work(runs: RunQueries) -> dict[str, Any]:
        run = await _run_or_404(runs, run_id)
        series, truncated = await runs.run_metrics(run)
        return {"run_id": run["run_id"], "series": series, "truncated": truncated}

    return await _answer(request, svc, work)


router.include_router(api)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The read-only page; it holds no data itself (the data comes from /api, which checks the key)."""
    return FileResponse(PAGE_DIR / "index.html", media_type="text/html")


@router.get("/page/{name:path}", include_in_schema=False)
async def page_asset(name: str) -> FileResponse:
    media_type = PAGE_ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no page asset {name!r}")
    return FileResponse(PAGE_DIR / name, media_type=media_type)
