# glia_runs(): its query parameters, the data.frame it builds from the API's rows, its errors. The same function
# against a real receiver and PostgreSQL is tests/integration/test_r_runs.py.

page <- '{"runs": [
  {"run_id": "0bf445fbc14ece72", "trace_id": "7f", "program_name": "align", "run_name": "align (S1)",
   "status": "ok", "exit_code": 0, "started_at": "2026-11-02T18:53:26.290354+00:00",
   "ended_at": "2026-11-02T20:53:26+02:00", "wall_seconds": 3.5, "peak_rss_bytes": 5368709120,
   "tree_peak_bytes": null, "task_attempt": 2, "requested_cpus": 2, "oom_kills": null,
   "attributes": {"sample": "S1", "reads": 7000, "tags": ["a", "b"], "ratio": 0.125, "none": null}},
  {"run_id": "1111111111111111", "trace_id": "80", "program_name": null, "run_name": "x",
   "status": "error", "exit_code": -9, "started_at": "2026-11-01T00:00:00Z",
   "ended_at": "2026-11-01T00:00:01Z", "wall_seconds": 1, "attributes": {}}
], "next_cursor": null}'

test_that("the API's rows become a typed data.frame with the CSV columns", {
  runs <- jsonlite::fromJSON(page, simplifyVector = FALSE)$runs
  df <- glia:::.runs_frame(runs)
  expect_identical(names(df), glia:::.run_columns)
  expect_identical(nrow(df), 2L)
  expect_identical(df$run_id, c("0bf445fbc14ece72", "1111111111111111"))
  expect_identical(df$program_name, c("align", NA))
  expect_identical(df$exit_code, c(0L, -9L))
  expect_identical(df$task_attempt, c(2L, NA))
  expect_identical(df$oom_kills, c(NA_integer_, NA_integer_))
  expect_identical(df$peak_rss_bytes, c(5368709120, NA))  # past 2^31: a double, exact
  expect_identical(df$requested_cpus, c(2, NA))
  expect_s3_class(df$started_at, "POSIXct")
  expect_identical(attr(df$started_at, "tzone"), "UTC")
  expect_equal(as.numeric(df$started_at[[1]]), as.numeric(as.POSIXct("2026-11-02 18:53:26", tz = "UTC")) + 0.290354,
               tolerance = 1e-6)
  # +02:00 is two hours ahead of UTC: 20:53:26+02:00 is 18:53:26 UTC
  expect_equal(as.numeric(df$ended_at[[1]]), as.numeric(as.POSIXct("2026-11-02 18:53:26", tz = "UTC")))
  expect_equal(as.numeric(df$started_at[[2]]), as.numeric(as.POSIXct("2026-11-01", tz = "UTC")))
  expect_identical(jsonlite::fromJSON(df$attributes[[1]], simplifyVector = FALSE),
                   list(sample = "S1", reads = 7000L, tags = list("a", "b"), ratio = 0.125, none = NULL))
  expect_identical(df$attributes[[2]], "{}")
})

test_that("no runs is a data.frame of the columns with no rows", {
  df <- glia:::.runs_frame(list())
  expect_identical(names(df), glia:::.run_columns)
  expect_identical(nrow(df), 0L)
  expect_type(df$wall_seconds, "double")
  expect_s3_class(df$started_at, "POSIXct")
})

test_that("the filters become the query parameters of glia runs", {
  p <- glia:::.runs_params(program = "align", status = "error", exit_code = 137L, since = "7d",
                           until = as.POSIXct("2026-11-02 10:00:00", tz = "UTC"), sha256 = "ab",
                           workflow = "wf-1", sort = "-wall_seconds",
                           attr = c(sample = "S1", pipeline = "qc"), extra = list(name = "align"))
  expect_identical(names(p), c("program", "status", "exit_code", "since", "until", "script_sha256", "workflow",
                               "sort", "attr", "attr", "name"))
  expect_identical(unlist(p, use.names = FALSE),
                   c("align", "error", "137", "7d", "2026-11-02T10:00:00.000000Z", "ab", "wf-1", "-wall_seconds",
                     "sample=\"S1\"", "pipeline=\"qc\"", "align"))
  # a named value is sent as JSON, so the API matches it with its type; "key=value" strings as given
  expect_identical(glia:::.attr_items(list(reads = 7000, ok = TRUE, ratio = 0.5, text = "7000")),
                   c("reads=7000", "ok=true", "ratio=0.5", "text=\"7000\""))
  expect_identical(glia:::.attr_items(c("sample=S1", "reads=7000")), c("sample=S1", "reads=7000"))
  expect_error(glia:::.attr_items("sample"), "named values")
  expect_error(glia:::.runs_params(program = c("a", "b")), "program must be one value")
  expect_identical(glia:::.runs_params(), list())
})

test_that("without an address or with a receiver away, the error says so", {
  withr_env <- Sys.getenv("GLIA_API_URL", unset = NA)
  Sys.unsetenv("GLIA_API_URL")
  on.exit(if (!is.na(withr_env)) Sys.setenv(GLIA_API_URL = withr_env))
  expect_error(glia_runs(), "set GLIA_API_URL")
  expect_error(glia_runs(url = "http://127.0.0.1:9"), "cannot reach the query API at http://127.0.0.1:9")
  expect_error(glia_runs(url = "http://127.0.0.1:9", limit = 0), "limit must be")
})
