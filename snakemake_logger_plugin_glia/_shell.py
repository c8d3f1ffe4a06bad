"""Every `shell:` job of this Snakemake process runs under `glia run`: the hook on Snakemake's shell prefix.

Snakemake runs a `shell:` job as `SHELL -c "PREFIX CMD SUFFIX"`, PREFIX from `shell._get_process_prefix` (what
`shell.prefix()` in a Snakefile sets, else bash's `set -euo pipefail;`). That method is called in the job's own
thread from `shell.__new__`, whose locals hold the formatted command and the rule's context (rule, wildcards,
threads, resources, jobid): the one place where a prefix can know its job. The hook returns, in place of the prefix,

    export TRACEPARENT=... OTEL_SERVICE_NAME=RULE; exec PYTHON -m glia_otel._cli run --name TASK --attr ... \
        -- SHELL -c 'PREFIX CMD SUFFIX'

and a newline: the shell replaces itself with `glia run`, which runs the job's command exactly as Snakemake would
have (the original text after the newline is never reached), measures it, and exits with its exit code. A user's
own `shell.prefix()`/`shell.suffix()`/`shell.executable()` stay in effect: they are read at each call. Anything
unexpected (a Snakemake whose internals differ, a container job, a command too long for one argument) leaves the
job as Snakemake would run it; the plugin then records it from Snakemake's log events instead.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from glia_otel._log import warn_once

# Linux caps one argument at 128 KiB and Snakemake moves a whole command over 64 KiB into a script file; the
# inner command is one argument of glia run, and the wrapped text holds it twice.
MAX_WRAPPED_COMMAND = 30_000

GLIA_RUN = (sys.executable, "-m", "glia_otel._cli", "run")


class ShellJob:
    """What the hook learnt about one execution of a `shell:` job."""

    __slots__ = ("attempt", "bench_iteration", "benchmark", "jobid", "resources", "rule", "threads", "wildcards")

    def __init__(
        self,
        jobid: int,
        rule: str,
        wildcards: dict[str, str],
        threads: int,
        resources: dict[str, Any],
        attempt: int | None,
        bench_iteration: int | None,
        benchmark: str | None,
    ) -> None:
        self.jobid = jobid
        self.rule = rule
        self.wildcards = wildcards
        self.threads = threads
        self.resources = resources
        self.attempt = attempt  # None: not found on Snakemake's Job object, the planner counts
        self.bench_iteration = bench_iteration
        self.benchmark = benchmark


# (environment to export, glia run options before `--`) for a job, or None to leave it alone.
Planner = Callable[[ShellJob], tuple[dict[str, str], list[str]] | None]


def install(plan: Planner) -> Callable[[], None]:
    """Hook `plan` into Snakemake's shell; returns the function that takes the hook out again.

    Raises RuntimeError when this Snakemake has no shell prefix method to hook (its internals changed).
    """
    shell_cls: Any = importlib.import_module("snakemake.shell").shell
    original = shell_cls.__dict__.get("_get_process_prefix")
    if not isinstance(original, classmethod):
        raise RuntimeError("snakemake.shell.shell._get_process_prefix is not a classmethod")
    base_prefix: Callable[..., str] = original.__func__
    if not os.access(GLIA_RUN[0], os.X_OK):
        raise RuntimeError(f"{GLIA_RUN[0]} is not executable")

    def prefix(cls: Any, shell_exec: str | None = None) -> str:
        base = base_prefix(cls, shell_exec)
        try:
            wrapped = _wrap(cls, base, shell_exec, sys._getframe(1), plan)
        except Exception as e:  # never fail a job for its record
            warn_once("snakemake-wrap", "could not run a shell job under glia run (%s: %s)", type(e).__name__, e)
            return base
        return base if wrapped is None else wrapped

    hook = classmethod(prefix)
    shell_cls._get_process_prefix = hook

    def uninstall() -> None:
        if shell_cls.__dict__.get("_get_process_prefix") is hook:
            shell_cls._get_process_prefix = original

    return uninstall


def _wrap(cls: Any, base: str, shell_exec: str | None, caller: FrameType, plan: Planner) -> str | None:
    """The prefix that runs this call's command under glia run, or None to leave it as it is."""
    if caller.f_code.co_name != "__new__":
        return None
    local = caller.f_locals
    context, cmd = local.get("context"), local.get("cmd")
    if not isinstance(context, Mapping) or not isinstance(cmd, str):
        return None
    jobid = context.get("jobid")
    if not context.get("is_shell") or not isinstance(jobid, int):
        return None  # shell() inside a run: block, or outside any rule: the job's own record covers it
    if context.get("use_singularity") and context.get("container_img"):
        return None  # the command runs inside the container, where this Python is not
    inner = " ".join((base, cmd, str(getattr(cls, "_process_suffix", "") or ""))).strip()
    if len(inner) > MAX_WRAPPED_COMMAND:
        warn_once("snakemake-long", "a shell command over %d characters runs without glia run", MAX_WRAPPED_COMMAND)
        return None
    job = _find_job(caller, jobid)
    bench_iteration = context.get("bench_iteration")
    planned = plan(
        ShellJob(
            jobid=jobid,
            rule=str(context.get("rule") or ""),
            wildcards=_named(context.get("wildcards")),
            threads=int(context.get("threads") or 1),
            resources=_named(context.get("resources")),
            attempt=_int_or_none(getattr(job, "attempt", None)),
            bench_iteration=bench_iteration if isinstance(bench_iteration, int) else None,
            benchmark=str(job.benchmark) if job is not None and getattr(job, "benchmark", None) else None,
        )
    )
    if planned is None:
        return None
    env, options = planned
    argv = [*GLIA_RUN, *options, "--", shell_exec or "/bin/sh", "-c", inner]
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"export {exports}; exec {' '.join(shlex.quote(a) for a in argv)}\n"


def _find_job(frame: FrameType | None, jobid: int) -> Any:
    """Snakemake's Job object of this call, from the executor's frames up the job's thread (it has the attempt)."""
    while frame is not None:
        job = frame.f_locals.get("job")
        if job is not None and isinstance(getattr(job, "attempt", None), int):
            try:
                if job.jobid == jobid:
                    return job
            except Exception:
                pass
        frame = frame.f_back
    return None


def _named(value: Any) -> dict[str, Any]:
    """A Snakemake Namedlist (wildcards, resources) or mapping as a plain dict of its named items."""
    if value is None:
        return {}
    items = value.items() if hasattr(value, "items") else ()
    return {str(k): v for k, v in items}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
