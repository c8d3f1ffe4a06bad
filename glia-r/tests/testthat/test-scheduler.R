# The scheduler context from named environment variables, against the cases the Python client is held to
# (tests/testdata/scheduler_env.json in the repository).

.cases_file <- function() {
  # tests/testthat -> glia-r -> the repository
  path <- normalizePath(file.path(getwd(), "..", "..", "..", "tests", "testdata", "scheduler_env.json"),
                        mustWork = FALSE)
  if (file.exists(path)) path else NULL
}

# A getter over `env` that records the names it is asked for (the function never sees the environment whole).
.watched <- function(env) {
  asked <- character()
  get <- glia:::.scheduler_getter(env)
  list(
    get = function(name) {
      asked <<- c(asked, name)
      get(name)
    },
    asked = function() unique(asked)
  )
}

.plain <- function(attrs) lapply(attrs, function(v) if (inherits(v, "glia_int")) unclass(v) else v)

test_that("each scheduler's context matches the shared cases, and no token is read", {
  path <- .cases_file()
  skip_if(is.null(path), "the shared cases are in the repository, not in the installed package")
  cases <- jsonlite::fromJSON(path, simplifyVector = FALSE)
  tokens <- cases$tokens
  # every variable the Python client may read (glia_otel/_scheduler.py); the R client reads no other
  allowed <- c(
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION",
    "SLURM_CLUSTER_NAME", "SLURMD_NODENAME", "SLURM_JOB_NODELIST", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE",
    "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_JOB_START_TIME", "SLURM_JOB_END_TIME",
    "PBS_JOBID", "PBS_JOBNAME", "PBS_QUEUE", "PBS_ARRAYID", "PBS_ARRAY_INDEX", "PBS_ARRAY_ID", "PBS_NUM_PPN", "NCPUS",
    "LSB_JOBID", "LSB_JOBINDEX", "LSB_JOBNAME", "LSB_QUEUE", "LSB_DJOB_NUMPROC",
    "SGE_ROOT", "SGE_CELL", "SGE_JOB_SPOOL_DIR", "JOB_ID", "SGE_TASK_ID", "JOB_NAME", "QUEUE", "NSLOTS",
    "KUBERNETES_SERVICE_HOST", "POD_NAME", "POD_NAMESPACE", "NODE_NAME",
    "GITHUB_ACTIONS", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_WORKFLOW", "GITHUB_JOB", "GITHUB_REF_NAME",
    "GITHUB_SHA",
    "GITLAB_CI", "CI_PIPELINE_ID", "CI_PIPELINE_NAME", "CI_PROJECT_PATH", "CI_JOB_ID", "CI_JOB_NAME", "CI_JOB_URL",
    "CI_COMMIT_REF_NAME", "CI_COMMIT_SHA"
  )
  for (case in cases$cases) {
    env <- utils::modifyList(tokens, case$env)
    watched <- .watched(env)
    given <- if (is.null(case$given)) list() else case$given
    got <- .plain(glia:::.scheduler_attributes(watched$get, given))
    expected <- case$expected
    expect_setequal(as.character(names(got)), as.character(names(expected)))
    for (key in names(expected)) {
      expect_equal(got[[key]], expected[[key]], info = paste(case$name, key))
    }
    expect_true(all(watched$asked() %in% allowed), info = paste(case$name, setdiff(watched$asked(), allowed)))
    expect_false(any(names(tokens) %in% watched$asked()), info = case$name)
    expect_false(grepl("SECRET", paste(unlist(got), collapse = " ")), info = case$name)
  }
})

test_that("memory beyond 32-bit integers travels as an int64", {
  get <- glia:::.scheduler_getter(list(SLURM_JOB_ID = "1", SLURM_MEM_PER_NODE = "8192"))
  attrs <- glia:::.scheduler_attributes(get)
  expect_s3_class(attrs[["glia.requested.memory_bytes"]], "glia_int")
  expect_identical(glia:::.scalar_value(attrs[["glia.requested.memory_bytes"]]), list(intValue = "8589934592"))
})

test_that("the resource carries the scheduler, and OTEL_RESOURCE_ATTRIBUTES wins", {
  withr_vars <- c(SLURM_JOB_ID = "77", SLURM_JOB_PARTITION = "short", CI_JOB_TOKEN = "SECRET-job-token",
                  OTEL_RESOURCE_ATTRIBUTES = "glia.scheduler.partition=mine")
  old <- Sys.getenv(names(withr_vars), unset = NA, names = TRUE)
  do.call(Sys.setenv, as.list(withr_vars))
  on.exit({
    for (name in names(old)) if (is.na(old[[name]])) Sys.unsetenv(name) else do.call(Sys.setenv, as.list(old[name]))
  })
  attrs <- glia:::.compute_resource(list(record_args = FALSE))
  expect_identical(attrs[["glia.scheduler.name"]], "slurm")
  expect_identical(attrs[["glia.scheduler.job_id"]], "77")
  expect_identical(attrs[["glia.scheduler.partition"]], "mine")
  expect_false(grepl("SECRET", paste(unlist(attrs), collapse = " ")))
})
