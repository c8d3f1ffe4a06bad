# The batch scheduler or CI system this R process runs under, as resource attributes, from named environment
# variables only: never the environment as a whole, so tokens (CI_JOB_TOKEN, GITHUB_TOKEN, the credentials in
# CI_REPOSITORY_URL) are never seen. The same rules as the Python client's glia_otel/_scheduler.py, checked against
# the same cases (tests/testdata/scheduler_env.json); docs/attributes.md lists every variable.

.mib <- 1024 * 1024

# `get(name)` is the variable's value without surrounding blanks, or NULL when unset or blank.
.scheduler_getter <- function(env = NULL) {
  function(name) {
    value <- if (is.null(env)) Sys.getenv(name, unset = "") else env[[name]]
    if (is.null(value) || is.na(value)) return(NULL)
    value <- trimws(value)
    if (nzchar(value)) value else NULL
  }
}

# A positive whole number (as an int64 value for OTLP), or NULL.
.count <- function(text) {
  if (is.null(text) || !grepl("^[0-9]+$", text)) return(NULL)
  number <- as.numeric(text)
  if (number > 0) number else NULL
}

.scheduler_slurm <- function(get, put) {
  array_job <- get("SLURM_ARRAY_JOB_ID")
  array_task <- get("SLURM_ARRAY_TASK_ID")
  # an array task's own SLURM_JOB_ID is a number of its own; users and sacct know it as ARRAYJOBID_TASKID
  put("glia.scheduler.job_id",
      if (!is.null(array_job) && !is.null(array_task)) paste0(array_job, "_", array_task) else get("SLURM_JOB_ID"))
  put("glia.scheduler.array_job_id", array_job)
  put("glia.scheduler.array_task_id", array_task)
  put("glia.scheduler.job_name", get("SLURM_JOB_NAME"))
  put("glia.scheduler.partition", get("SLURM_JOB_PARTITION"))
  put("glia.scheduler.cluster", get("SLURM_CLUSTER_NAME"))
  put("glia.scheduler.node", get("SLURMD_NODENAME"))
  put("glia.scheduler.node_list", get("SLURM_JOB_NODELIST"))
  cpus <- .count(get("SLURM_CPUS_PER_TASK"))
  if (is.null(cpus)) cpus <- .count(get("SLURM_CPUS_ON_NODE"))
  put("glia.requested.cpus", cpus)
  # both in megabytes (MiB); --mem sets the first, --mem-per-cpu the second
  per_node <- .count(get("SLURM_MEM_PER_NODE"))
  per_cpu <- .count(get("SLURM_MEM_PER_CPU"))
  if (!is.null(per_node)) {
    put("glia.requested.memory_bytes", per_node * .mib)
  } else if (!is.null(per_cpu) && !is.null(cpus)) {
    put("glia.requested.memory_bytes", per_cpu * cpus * .mib)
  }
  # Slurm 23.02 and newer: the job's start and its end by the time limit (epoch seconds)
  start <- .count(get("SLURM_JOB_START_TIME"))
  end <- .count(get("SLURM_JOB_END_TIME"))
  if (!is.null(start) && !is.null(end) && end > start) put("glia.requested.seconds", end - start)
}

.scheduler_pbs <- function(get, put) {
  put("glia.scheduler.job_id", get("PBS_JOBID"))  # 1234.server, an array task 1234[5].server
  put("glia.scheduler.job_name", get("PBS_JOBNAME"))
  put("glia.scheduler.partition", get("PBS_QUEUE"))
  put("glia.scheduler.array_job_id", get("PBS_ARRAY_ID"))  # PBS Pro
  index <- get("PBS_ARRAYID")
  if (is.null(index)) index <- get("PBS_ARRAY_INDEX")
  put("glia.scheduler.array_task_id", index)
  cpus <- .count(get("NCPUS"))
  if (is.null(cpus)) cpus <- .count(get("PBS_NUM_PPN"))
  put("glia.requested.cpus", cpus)
}

.scheduler_lsf <- function(get, put) {
  job <- get("LSB_JOBID")
  index <- get("LSB_JOBINDEX")
  in_array <- !is.null(index) && index != "0"  # LSF sets 0 outside an array
  put("glia.scheduler.job_id", if (in_array) paste0(job, "[", index, "]") else job)
  if (in_array) {
    put("glia.scheduler.array_job_id", job)
    put("glia.scheduler.array_task_id", index)
  }
  put("glia.scheduler.job_name", get("LSB_JOBNAME"))
  put("glia.scheduler.partition", get("LSB_QUEUE"))
  put("glia.requested.cpus", .count(get("LSB_DJOB_NUMPROC")))
}

.scheduler_sge <- function(get, put) {
  job <- get("JOB_ID")
  task <- get("SGE_TASK_ID")
  in_array <- !is.null(task) && task != "undefined"  # SGE sets `undefined` outside an array
  put("glia.scheduler.job_id", if (in_array) paste0(job, ".", task) else job)
  if (in_array) {
    put("glia.scheduler.array_job_id", job)
    put("glia.scheduler.array_task_id", task)
  }
  put("glia.scheduler.job_name", get("JOB_NAME"))
  put("glia.scheduler.partition", get("QUEUE"))
  put("glia.requested.cpus", .count(get("NSLOTS")))
}

.scheduler_github <- function(get, put) {
  run <- get("GITHUB_RUN_ID")
  put("glia.scheduler.job_id", run)
  put("glia.scheduler.run_attempt", get("GITHUB_RUN_ATTEMPT"))
  put("cicd.pipeline.name", get("GITHUB_WORKFLOW"))
  put("cicd.pipeline.run.id", run)
  put("cicd.pipeline.task.name", get("GITHUB_JOB"))
  put("vcs.ref.head.name", get("GITHUB_REF_NAME"))
  put("vcs.ref.head.revision", get("GITHUB_SHA"))
}

.scheduler_gitlab <- function(get, put) {
  job <- get("CI_JOB_ID")
  put("glia.scheduler.job_id", job)
  name <- get("CI_PIPELINE_NAME")
  if (is.null(name)) name <- get("CI_PROJECT_PATH")
  put("cicd.pipeline.name", name)
  put("cicd.pipeline.run.id", get("CI_PIPELINE_ID"))
  put("cicd.pipeline.task.name", get("CI_JOB_NAME"))
  put("cicd.pipeline.task.run.id", job)
  put("cicd.pipeline.task.run.url.full", get("CI_JOB_URL"))
  put("vcs.ref.head.name", get("CI_COMMIT_REF_NAME"))
  put("vcs.ref.head.revision", get("CI_COMMIT_SHA"))
}

#' The scheduler's resource attributes (a named list, empty when none) from named variables read through `get`;
#' `given` is the parsed OTEL_RESOURCE_ATTRIBUTES, whose k8s.* win (then no pod variable is read).
#' @noRd
.scheduler_attributes <- function(get = .scheduler_getter(), given = list()) {
  out <- list()
  put <- function(key, value) if (!is.null(value)) out[[key]] <<- value
  name <- NULL
  # a batch job is what a process runs as first; CI next; a pod last (a runner or a batch system may run in one)
  if (!is.null(get("SLURM_JOB_ID"))) {
    name <- "slurm"
    .scheduler_slurm(get, put)
  } else if (!is.null(get("PBS_JOBID"))) {
    name <- "pbs"
    .scheduler_pbs(get, put)
  } else if (!is.null(get("LSB_JOBID"))) {
    name <- "lsf"
    .scheduler_lsf(get, put)
  } else if (!is.null(get("JOB_ID")) &&
             (!is.null(get("SGE_ROOT")) || !is.null(get("SGE_CELL")) || !is.null(get("SGE_JOB_SPOOL_DIR")))) {
    # JOB_ID alone is too common a name to mean SGE: an SGE job also sees where SGE lives
    name <- "sge"
    .scheduler_sge(get, put)
  } else if (identical(get("GITHUB_ACTIONS"), "true")) {
    name <- "github-actions"
    .scheduler_github(get, put)
  } else if (identical(get("GITLAB_CI"), "true")) {
    name <- "gitlab-ci"
    .scheduler_gitlab(get, put)
  }
  pod <- NULL
  in_pod <- FALSE
  if (length(given) && any(startsWith(names(given), "k8s."))) {
    in_pod <- TRUE
    given_pod <- given[["k8s.pod.name"]]
    if (is.character(given_pod) && length(given_pod) == 1 && nzchar(given_pod)) pod <- given_pod
  } else if (!is.null(get("KUBERNETES_SERVICE_HOST"))) {
    in_pod <- TRUE
    pod <- get("POD_NAME")
    put("k8s.pod.name", pod)
    put("k8s.namespace.name", get("POD_NAMESPACE"))
    put("k8s.node.name", get("NODE_NAME"))
  }
  if (in_pod) {
    if (is.null(name)) name <- "kubernetes"
    if (is.null(out[["glia.scheduler.job_id"]])) put("glia.scheduler.job_id", pod)
  }
  if (!is.null(name)) out[["glia.scheduler.name"]] <- name
  # counts travel as int64 (memory exceeds R's 32-bit integers)
  for (key in intersect(names(out), c("glia.requested.cpus", "glia.requested.memory_bytes",
                                      "glia.requested.seconds"))) {
    out[[key]] <- .int(out[[key]])
  }
  out
}
