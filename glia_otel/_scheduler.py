"""The batch scheduler or CI system a process runs under, as resource attributes, from named environment variables.

`scheduler_attributes(env, given)` is a pure function: it reads only the variables named in this module (never the
whole environment, so a token such as `CI_JOB_TOKEN`, `GITHUB_TOKEN` or the credentials in `CI_REPOSITORY_URL` is
never seen), and returns `glia.scheduler.name` and `glia.scheduler.job_id` (the `scheduler` and `scheduler_job_id`
columns), the job's name, queue, array job and task, node, and what the job asked for as `glia.requested.*`.
Semantic conventions where they exist: `k8s.*` for Kubernetes, `cicd.pipeline.*` and `vcs.ref.head.*` for CI.
docs/attributes.md lists every variable. `given` is what `OTEL_RESOURCE_ATTRIBUTES` said: its `k8s.*` attributes
are how OpenTelemetry recommends a pod be described, and win over the variables read here.

The standard library only, and not even that: `glia run` builds these while its child runs.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    AttrValue = str | int | float

MIB = 1024 * 1024

# The variables this module reads, by scheduler (tests/unit/test_scheduler.py holds every read to this list).
SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_CLUSTER_NAME",
    "SLURMD_NODENAME",
    "SLURM_JOB_NODELIST",
    "SLURM_CPUS_PER_TASK",
    "SLURM_CPUS_ON_NODE",
    "SLURM_MEM_PER_NODE",
    "SLURM_MEM_PER_CPU",
    "SLURM_JOB_START_TIME",
    "SLURM_JOB_END_TIME",
)
PBS_VARS = (
    "PBS_JOBID",
    "PBS_JOBNAME",
    "PBS_QUEUE",
    "PBS_ARRAYID",
    "PBS_ARRAY_INDEX",
    "PBS_ARRAY_ID",
    "PBS_NUM_PPN",
    "NCPUS",
)
LSF_VARS = ("LSB_JOBID", "LSB_JOBINDEX", "LSB_JOBNAME", "LSB_QUEUE", "LSB_DJOB_NUMPROC")
SGE_VARS = ("SGE_ROOT", "SGE_CELL", "SGE_JOB_SPOOL_DIR", "JOB_ID", "SGE_TASK_ID", "JOB_NAME", "QUEUE", "NSLOTS")
KUBERNETES_VARS = ("KUBERNETES_SERVICE_HOST", "POD_NAME", "POD_NAMESPACE", "NODE_NAME")
GITHUB_VARS = (
    "GITHUB_ACTIONS",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_WORKFLOW",
    "GITHUB_JOB",
    "GITHUB_REF_NAME",
    "GITHUB_SHA",
)
GITLAB_VARS = (
    "GITLAB_CI",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_NAME",
    "CI_PROJECT_PATH",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_JOB_URL",
    "CI_COMMIT_REF_NAME",
    "CI_COMMIT_SHA",
)
READ = frozenset(SLURM_VARS + PBS_VARS + LSF_VARS + SGE_VARS + KUBERNETES_VARS + GITHUB_VARS + GITLAB_VARS)


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value without surrounding blanks, or None when it is unset or blank."""
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _count(text: str | None) -> int | None:
    """A positive whole number, or None. Slurm writes `SLURM_CPUS_ON_NODE` as `4`, `SLURM_MEM_PER_NODE` as `500`."""
    if text is None or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number > 0 else None


def _put(out: dict[str, AttrValue], key: str, value: AttrValue | None) -> None:
    if value is not None:
        out[key] = value


def _slurm(env: Mapping[str, str], out: dict[str, AttrValue]) -> None:
    job = _get(env, "SLURM_JOB_ID")
    array_job, array_task = _get(env, "SLURM_ARRAY_JOB_ID"), _get(env, "SLURM_ARRAY_TASK_ID")
    # an array task's own SLURM_JOB_ID is a number of its own; users and sacct know it as ARRAYJOBID_TASKID
    out["glia.scheduler.job_id"] = f"{array_job}_{array_task}" if array_job and array_task else str(job)
    _put(out, "glia.scheduler.array_job_id", array_job)
    _put(out, "glia.scheduler.array_task_id", array_task)
    _put(out, "glia.scheduler.job_name", _get(env, "SLURM_JOB_NAME"))
    _put(out, "glia.scheduler.partition", _get(env, "SLURM_JOB_PARTITION"))
    _put(out, "glia.scheduler.cluster", _get(env, "SLURM_CLUSTER_NAME"))
    _put(out, "glia.scheduler.node", _get(env, "SLURMD_NODENAME"))
    _put(out, "glia.scheduler.node_list", _get(env, "SLURM_JOB_NODELIST"))
    cpus = _count(_get(env, "SLURM_CPUS_PER_TASK")) or _count(_get(env, "SLURM_CPUS_ON_NODE"))
    _put(out, "glia.requested.cpus", cpus)
    # both in megabytes (MiB); --mem sets the first, --mem-per-cpu the second
    per_node = _count(_get(env, "SLURM_MEM_PER_NODE"))
    per_cpu = _count(_get(env, "SLURM_MEM_PER_CPU"))
    if per_node:
        out["glia.requested.memory_bytes"] = per_node * MIB
    elif per_cpu and cpus:
        out["glia.requested.memory_bytes"] = per_cpu * cpus * MIB
    # Slurm 23.02 and newer: the job's start and its end by the time limit (epoch seconds)
    start, end = _count(_get(env, "SLURM_JOB_START_TIME")), _count(_get(env, "SLURM_JOB_END_TIME"))
    if start and end and end > start:
        out["glia.requested.seconds"] = end - start


def _pbs(env: Mapping[str, str], out: dict[str, AttrValue]) -> None:
    out["glia.scheduler.job_id"] = str(_get(env, "PBS_JOBID"))  # 1234.server, an array task 1234[5].server
    _put(out, "glia.scheduler.job_name", _get(env, "PBS_JOBNAME"))
    _put(out, "glia.scheduler.partition", _get(env, "PBS_QUEUE"))
    _put(out, "glia.scheduler.array_job_id", _get(env, "PBS_ARRAY_ID"))  # PBS Pro
    _put(out, "glia.scheduler.array_task_id", _get(env, "PBS_ARRAYID") or _get(env, "PBS_ARRAY_INDEX"))
    _put(out, "glia.requested.cpus", _count(_get(env, "NCPUS")) or _count(_get(env, "PBS_NUM_PPN")))


def _lsf(env: Mapping[str, str], out: dict[str, AttrValue]) -> None:
    job, index = _get(env, "LSB_JOBID"), _get(env, "LSB_JOBINDEX")
    in_array = index is not None and index != "0"  # LSF sets 0 outside an array
    out["glia.scheduler.job_id"] = f"{job}[{index}]" if in_array else str(job)
    if in_array:
        _put(out, "glia.scheduler.array_job_id", job)
        _put(out, "glia.scheduler.array_task_id", index)
    _put(out, "glia.scheduler.job_name", _get(env, "LSB_JOBNAME"))
    _put(out, "glia.scheduler.partition", _get(env, "LSB_QUEUE"))
    _put(out, "glia.requested.cpus", _count(_get(env, "LSB_DJOB_NUMPROC")))


def _sge(env: Mapping[str, str], out: dict[str, AttrValue]) -> None:
    job, task = _get(env, "JOB_ID"), _get(env, "SGE_TASK_ID")
    in_array = task is not None and task != "undefined"  # SGE sets `undefined` outside an array
    out["glia.scheduler.job_id"] = f"{job}.{task}" if in_array else str(job)
    if in_array:
        _put(out, "glia.scheduler.array_job_id", job)
        _put(out, "glia.scheduler.array_task_id", task)
    _put(out, "glia.scheduler.job_name", _get(env, "JOB_NAME"))
    _put(out, "glia.scheduler.partition", _get(env, "QUEUE"))
    _put(out, "glia.requested.cpus", _count(_get(env, "NSLOTS")))


def _is_sge(env: Mapping[str, str]) -> bool:
    # JOB_ID alone is too common a name to mean SGE: an SGE job also sees where SGE lives
    return _get(env, "JOB_ID") is not None and any(
        _get(env, name) for name in ("SGE_ROOT", "SGE_CELL", "SGE_JOB_SPOOL_DIR")
    )


def _github(env: Mapping[str, str], out: dict[str, AttrValue]) -> None:
    run = _get(env, "GITHUB_RUN_ID")
    _put(out, "glia.scheduler.job_id", run)
    _put(out, "glia.scheduler.run_attempt", _get(env, "GITHUB_RUN_ATTEMPT"))
    _put(out, "cicd.pipeline.name", _get(env, "GITHUB_WORKFLOW"))
    _put(out, "cicd.pipeline.run.id", run)
    _put(out, "cicd.pipeline.task.name", _get(env, "GITHUB_JOB"))
    _put(out, "vcs.ref.head.name", _get(env, "GITHUB_REF_NAME"))
    _put(out, "vcs.ref.head.revision", _get(env, "GITHUB_SHA"))


def _gitlab(env: Mapping[str, str], out: dict[str, AttrValue]) -> None:
    job = _get(env, "CI_JOB_ID")
    _put(out, "glia.scheduler.job_id", job)
    _put(out, "cicd.pipeline.name", _get(env, "CI_PIPELINE_NAME") or _get(env, "CI_PROJECT_PATH"))
    _put(out, "cicd.pipeline.run.id", _get(env, "CI_PIPELINE_ID"))
    _put(out, "cicd.pipeline.task.name", _get(env, "CI_JOB_NAME"))
    _put(out, "cicd.pipeline.task.run.id", job)
    _put(out, "cicd.pipeline.task.run.url.full", _get(env, "CI_JOB_URL"))
    _put(out, "vcs.ref.head.name", _get(env, "CI_COMMIT_REF_NAME"))
    _put(out, "vcs.ref.head.revision", _get(env, "CI_COMMIT_SHA"))


def _kubernetes(env: Mapping[str, str], given: Mapping[str, object], out: dict[str, AttrValue]) -> bool:
    """The pod's k8s.* attributes; whether this is a pod at all. OTEL_RESOURCE_ATTRIBUTES' k8s.* win: then nothing
    is read here (they reach the resource themselves)."""
    if any(key.startswith("k8s.") for key in given):
        pod = given.get("k8s.pod.name")
        if isinstance(pod, str) and pod:
            out["glia.scheduler.job_id"] = pod
        return True
    if _get(env, "KUBERNETES_SERVICE_HOST") is None:
        return False
    pod = _get(env, "POD_NAME")
    _put(out, "glia.scheduler.job_id", pod)
    _put(out, "k8s.pod.name", pod)
    _put(out, "k8s.namespace.name", _get(env, "POD_NAMESPACE"))
    _put(out, "k8s.node.name", _get(env, "NODE_NAME"))
    return True


# A batch job is what a process runs as first; CI next; a pod last (a runner or a batch system may run in one).
_BATCH: tuple[
    tuple[str, Callable[[Mapping[str, str]], bool], Callable[[Mapping[str, str], dict[str, AttrValue]], None]], ...
] = (
    ("slurm", lambda env: _get(env, "SLURM_JOB_ID") is not None, _slurm),
    ("pbs", lambda env: _get(env, "PBS_JOBID") is not None, _pbs),
    ("lsf", lambda env: _get(env, "LSB_JOBID") is not None, _lsf),
    ("sge", _is_sge, _sge),
    ("github-actions", lambda env: _get(env, "GITHUB_ACTIONS") == "true", _github),
    ("gitlab-ci", lambda env: _get(env, "GITLAB_CI") == "true", _gitlab),
)


def scheduler_attributes(env: Mapping[str, str], given: Mapping[str, object] | None = None) -> dict[str, AttrValue]:
    """Resource attributes of the scheduler this process runs under (empty when none), from `env`'s named
    variables; `given` is the parsed OTEL_RESOURCE_ATTRIBUTES."""
    given = given or {}
    out: dict[str, AttrValue] = {}
    name = None
    for candidate, present, read in _BATCH:
        if present(env):
            name = candidate
            read(env, out)
            break
    pod: dict[str, AttrValue] = {}
    if _kubernetes(env, given, pod):
        name = name or "kubernetes"
        job_id = pod.pop("glia.scheduler.job_id", None)
        if "glia.scheduler.job_id" not in out and job_id is not None:
            out["glia.scheduler.job_id"] = job_id
        out.update(pod)
    if name is not None:
        out["glia.scheduler.name"] = name
    return out
