"""One Snakemake run as Glia records it: a workflow span, and every job attempt as its child run.

`shell:` jobs are recorded by `glia run` itself (planned here, wrapped by `_shell`), with the exact measurements;
the other jobs (`run:`, `script:`, rules without a body) and any shell job that could not be wrapped get a span
from Snakemake's log events: start, end and status, no usage figures. Snakemake's log events reach the plugin on
its logging thread; the shell hook runs on the jobs' threads: what both use is guarded by one lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from logging import LogRecord
from typing import Any

from glia_otel._config import Settings
from glia_otel._deliver import send
from glia_otel._import_snakemake import requested, task_name
from glia_otel._log import warn_once
from glia_otel._otlp import SpanData, encode_request
from glia_otel._resource import python_process_attributes, uuid4
from glia_otel._version import __version__

from ._shell import ShellJob

ENGINE = "snakemake"
SCOPE = "snakemake_logger_plugin_glia"
_NAME_TIMEOUT_S = 2.0  # how long a first shell job waits for the workflow's name (sent before any job starts)


def workflow_name(snakefile: str) -> str:
    """The Snakefile's directory name; for the standard layout (`workflow/Snakefile`), the project's directory."""
    directory = os.path.dirname(os.path.abspath(snakefile))
    name = os.path.basename(directory)
    if name == "workflow":
        name = os.path.basename(os.path.dirname(directory)) or name
    return name or directory


def _value(value: Any) -> str | int | float | bool:
    return value if isinstance(value, str | int | float | bool) else str(value)


class WorkflowRun:
    """The ids, name and jobs of one Snakemake run, and the spans it sends."""

    def __init__(self, settings: Settings, start_ns: int | None = None) -> None:
        self.settings = settings
        self.run_id = uuid4()
        self.trace_id = int.from_bytes(os.urandom(16), "big") or 1
        self.span_id = int.from_bytes(os.urandom(8), "big") or 1
        self.start_ns = start_ns if start_ns is not None else time.time_ns()
        self.name = workflow_name(os.path.join(os.getcwd(), "Snakefile"))
        self.snakefile: str | None = None
        self.snakemake_workflow_id: str | None = None
        self.job_count: int | None = None
        self._named = threading.Event()
        self._lock = threading.Lock()
        self._jobs: dict[int, dict[str, Any]] = {}  # jobid -> the current attempt's JOB_INFO and start
        self._hook_attempts: dict[int, int] = {}  # jobid -> executions counted by the hook (fallback attempt)
        self._wrapped: set[tuple[int, int]] = set()  # (jobid, attempt) run under glia run
        self._outcome: dict[int, bool] = {}  # jobid -> whether its last attempt succeeded
        self._errors_before_jobs = 0
        self._finished = False
        base = python_process_attributes(settings.record_args, settings.service_name, settings.resource_attributes)
        self._resource: dict[str, Any] = {**base, "service.name": settings.service_name or ENGINE}
        self._keep_stderr = _keep_stderr_options()

    # --- Snakemake's log events (the logging thread) ---------------------------------------------------------

    def on_record(self, record: LogRecord) -> None:
        """Take one of Snakemake's log records."""
        event = str(getattr(record, "event", "") or "")
        at = int(record.created * 1e9)
        if event == "workflow_started":
            snakefile = getattr(record, "snakefile", None)
            if snakefile:
                self.snakefile = str(snakefile)
                self.name = workflow_name(self.snakefile)
            self.snakemake_workflow_id = str(getattr(record, "workflow_id", "") or "") or None
            self._named.set()
        elif event == "run_info":
            stats = getattr(record, "stats", None)
            if isinstance(stats, Mapping) and isinstance(stats.get("total"), int):
                self.job_count = stats["total"]
        elif event == "job_info":
            self._job_info(record, at)
        elif event == "job_finished":
            self._job_end(_int(getattr(record, "job_id", None)), at, None)
        elif event == "job_error":
            self._job_end(_int(getattr(record, "jobid", None)), at, record.getMessage() or "job failed")
        elif event == "error":
            with self._lock:
                if not self._jobs:
                    self._errors_before_jobs += 1

    def _job_info(self, record: LogRecord, at: int) -> None:
        jobid = _int(getattr(record, "jobid", None))
        if jobid is None:
            return
        with self._lock:
            previous = self._jobs.get(jobid)
            attempt = previous["attempt"] + 1 if previous is not None else 1
            self._jobs[jobid] = {
                "attempt": attempt,
                "start_ns": at,
                "rule": str(getattr(record, "rule_name", "") or ""),
                "wildcards": dict(getattr(record, "wildcards", None) or {}),
                "threads": _int(getattr(record, "threads", None)),
                "resources": _resources(getattr(record, "resources", None)),
                "benchmark": getattr(record, "benchmark", None),
                "ended": False,
            }

    def _job_end(self, jobid: int | None, at: int, error: str | None) -> None:
        if jobid is None:
            return
        with self._lock:
            job = self._jobs.get(jobid)
            self._outcome[jobid] = error is None
            if job is None or job["ended"]:
                return
            job["ended"] = True
            wrapped = (jobid, job["attempt"]) in self._wrapped
        if not wrapped:
            self._send_job(jobid, job, at, error)

    def _send_job(self, jobid: int, job: Mapping[str, Any], end_ns: int, error: str | None) -> None:
        attrs = self.task_attributes(
            jobid, job["rule"], job["wildcards"], job["threads"], job["resources"], job["attempt"], job["benchmark"]
        )
        attrs["glia.run.kind"] = "task"
        if error is None and end_ns == 0:
            attrs["glia.snakemake.end_seen"] = False  # Snakemake said nothing at its end (e.g. --quiet progress)
        span = SpanData(
            trace_id=self.trace_id,
            span_id=int.from_bytes(os.urandom(8), "big") or 1,
            name=task_name(job["rule"], job["wildcards"]),
            start_ns=job["start_ns"],
            end_ns=end_ns or time.time_ns(),
            parent_span_id=self.span_id,
            attributes=attrs,
            status_code=2 if error else 0,
            status_message=error or "",
        )
        self._send({**self._resource, "service.name": job["rule"] or ENGINE}, span)

    # --- the shell hook (the jobs' threads) -------------------------------------------------------------------

    def plan(self, job: ShellJob) -> tuple[dict[str, str], list[str]]:
        """The environment and `glia run` options of one `shell:` job execution."""
        if not self._named.wait(_NAME_TIMEOUT_S):
            self._named.set()  # no name is coming (an API caller that sends no workflow_started): stop waiting
        with self._lock:
            if job.bench_iteration in (None, 0):
                self._hook_attempts[job.jobid] = self._hook_attempts.get(job.jobid, 0) + 1
            attempt = job.attempt or self._hook_attempts.get(job.jobid, 1)
            self._wrapped.add((job.jobid, attempt))
        attrs = self.task_attributes(
            job.jobid, job.rule, job.wildcards, job.threads, job.resources, attempt, job.benchmark
        )
        attrs["glia.run.kind"] = "task"
        if job.bench_iteration is not None:
            attrs["glia.snakemake.bench_iteration"] = job.bench_iteration
        options = ["--name", task_name(job.rule, job.wildcards), *self._keep_stderr]
        for key, value in attrs.items():
            options += ["--attr", f"{key}={value}"]
        env = {
            "TRACEPARENT": f"00-{self.trace_id:032x}-{self.span_id:016x}-01",
            "OTEL_SERVICE_NAME": job.rule or ENGINE,
        }
        return env, options

    # --- what both record ------------------------------------------------------------------------------------

    def task_attributes(
        self,
        jobid: int,
        rule: str,
        wildcards: Mapping[str, Any],
        threads: int | None,
        resources: Mapping[str, Any],
        attempt: int,
        benchmark: Any,
    ) -> dict[str, Any]:
        """The contract's task attributes and Snakemake's own under `glia.snakemake.*`."""
        attrs: dict[str, Any] = {
            "glia.workflow.engine": ENGINE,
            "glia.workflow.run_id": self.run_id,
            "glia.workflow.name": self.name,
            "glia.task.name": task_name(rule, wildcards),
            "glia.task.attempt": attempt,
            **requested(threads, resources),
            "glia.snakemake.rule": rule,
            "glia.snakemake.jobid": jobid,
        }
        if threads is not None:
            attrs["glia.snakemake.threads"] = threads
        for key, value in wildcards.items():
            attrs[f"glia.snakemake.wildcards.{key}"] = _value(value)
        for key, value in resources.items():
            if not key.startswith("_"):
                attrs[f"glia.snakemake.resources.{key}"] = _value(value)
        if benchmark:
            attrs["glia.snakemake.benchmark"] = str(benchmark)
        return attrs

    def finish(self, end_ns: int | None = None) -> None:
        """Send the spans of jobs Snakemake never reported ended, then the workflow span; once."""
        end_ns = end_ns or time.time_ns()
        with self._lock:
            if self._finished:
                return
            self._finished = True
            open_jobs = [(jobid, job) for jobid, job in self._jobs.items() if not job["ended"]]
            wrapped = set(self._wrapped)
            failed = sorted(jobid for jobid, ok in self._outcome.items() if not ok)
        for jobid, job in open_jobs:
            if (jobid, job["attempt"]) not in wrapped:
                self._send_job(jobid, job, 0, None)
        attrs: dict[str, Any] = {
            "glia.run.kind": "workflow",
            "glia.workflow.engine": ENGINE,
            "glia.workflow.run_id": self.run_id,
            "glia.workflow.name": self.name,
        }
        if self.snakefile:
            attrs["glia.snakemake.snakefile"] = self.snakefile
        if self.snakemake_workflow_id:
            attrs["glia.snakemake.workflow_id"] = self.snakemake_workflow_id
        if self.job_count is not None:
            attrs["glia.snakemake.jobs"] = self.job_count
        attrs["glia.snakemake.failed_jobs"] = len(failed)
        message = ""
        if failed:
            message = f"{len(failed)} job(s) failed: jobid {', '.join(str(j) for j in failed[:20])}"
        elif self._errors_before_jobs:
            message = "the workflow failed before any job ran"
        span = SpanData(
            trace_id=self.trace_id,
            span_id=self.span_id,
            name=self.name,
            start_ns=self.start_ns,
            end_ns=end_ns,
            attributes=attrs,
            status_code=2 if message else 0,
            status_message=message,
        )
        self._send(self._resource, span)

    def _send(self, resource: Mapping[str, Any], span: SpanData) -> None:
        # Bounded like every glia export: delivered within the exit deadline, else spooled for `glia flush`.
        body = encode_request([(resource, SCOPE, __version__, [span])])
        send(self.settings, "traces", body, time.monotonic() + self.settings.export_deadline_s)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _resources(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "items"):
        return {str(k): v for k, v in value.items()}
    return {}


def _keep_stderr_options() -> list[str]:
    """`--keep-stderr[=always]` for every shell job when GLIA_KEEP_STDERR says so (said once when it is wrong)."""
    from glia_otel._stderr import wrapper_options

    try:
        return wrapper_options(os.environ)
    except ValueError as e:
        warn_once("snakemake-keep-stderr", "shell jobs keep no stderr: %s", e)
        return []
