
free_port <- function() {
  for (i in 1:20) {
    port <- sample(20000:60000, 1)
    ok <- tryCatch({
      s <- serverSocket(port)
      close(s)
      TRUE
    }, error = function(e) FALSE)
    if (ok) return(port)
  }
  skip("no free port")
}

spool_files <- function(dir) list.files(dir)

test_that("with the endpoint down the run is spooled in the shared format", {
  dir <- tempfile("spool")
  port <- free_port()
  with_env(c(GLIA_SPOOL_DIR = dir, OTEL_EXPORTER_OTLP_ENDPOINT = sprintf("http://127.0.0.1:%d", port)), {
    value <- suppressMessages(glia_track(7, name = "offline"))
  })
  expect_identical(value, 7)
  files <- spool_files(dir)
  expect_length(files, 1)
  expect_match(files, sprintf("^[0-9]{19}-%d-[0-9a-f]+\\.json$", Sys.getpid()))
  request <- jsonlite::fromJSON(file.path(dir, files), simplifyVector = FALSE)
  expect_otlp_request(request)
  expect_identical(span_of(request)$name, "offline")
})

test_that("an endpoint that never answers costs no more than the export deadline", {
  port <- free_port()
  server <- serverSocket(port)
  on.exit(close(server))
  dir <- tempfile("spool")
  env <- c(GLIA_SPOOL_DIR = dir, GLIA_EXPORT_DEADLINE_MS = "250",
           OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = sprintf("http://127.0.0.1:%d/v1/traces", port))
  elapsed <- with_env(env, system.time(glia_track(1))[["elapsed"]])
  expect_lt(elapsed, 1)
  expect_length(spool_files(dir), 1)
})

test_that("the spool keeps under its size bound by dropping the oldest files", {
  dir <- tempfile("spool")
  dir.create(dir)
  for (i in 1:5) writeBin(raw(1000), file.path(dir, sprintf("170000000000000000%d-1-aa.json", i)))
  settings <- list(spool_dir = dir, spool_max_bytes = 3500, endpoint = "http://x")
  path <- glia:::.spool_write(strrep("x", 1000), settings)
  files <- sort(spool_files(dir))
  expect_true(basename(path) %in% files)
  expect_identical(length(files), 3L)
  expect_false(any(grepl("0001-1-aa", files)))
  expect_false(any(grepl("\\.tmp$", files)))
})

test_that("endpoint settings follow the OTEL precedence", {
  s <- glia:::.settings
  with_env(c(OTEL_EXPORTER_OTLP_ENDPOINT = "http://h:1/", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = ""), {
    expect_identical(s()$endpoint, "http://h:1/v1/traces")
  })
  with_env(c(OTEL_EXPORTER_OTLP_ENDPOINT = "http://h:1", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "http://t:2/x"), {
    expect_identical(s()$endpoint, "http://t:2/x")
  })
  with_env(c(OTEL_EXPORTER_OTLP_ENDPOINT = "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = ""), {
    expect_identical(s()$endpoint, "http://localhost:4318/v1/traces")
  })
  with_env(c(OTEL_EXPORTER_OTLP_HEADERS = "a=1,b=x%20y", OTEL_EXPORTER_OTLP_TRACES_HEADERS = "b=2"), {
    expect_identical(s()$headers, list(a = "1", b = "2"))
  })
  with_env(c(GLIA_SPOOL_DIR = "", XDG_STATE_HOME = "/st"), expect_identical(s()$spool_dir, "/st/glia/spool"))
  with_env(c(GLIA_EXPORT_DEADLINE_MS = "nonsense"), expect_identical(s()$deadline_ms, 250))
})
