
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
  # named by its signal first, as the Python client names its files: `glia flush` posts it to /v1/traces
  expect_match(files, sprintf("^traces-[0-9]{19}-%d-[0-9a-f]+\\.json$", Sys.getpid()))
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

test_that("the size bound drops the oldest by the time in the name, whatever the signal prefix", {
  dir <- tempfile("spool")
  dir.create(dir)
  # oldest first: an unprefixed file of an older client, then prefixed ones that sort after it by name
  names <- c("1700000000000000001-1-aa.json", "traces-1700000000000000002-1-aa.json",
             "logs-1700000000000000003-1-aa.pb.gz", "metrics-1700000000000000004-1-aa.pb")
  for (name in names) writeBin(raw(1000), file.path(dir, name))
  settings <- list(spool_dir = dir, spool_max_bytes = 3500, endpoint = "http://x")
  path <- glia:::.spool_write(strrep("x", 1000), settings)
  expect_match(basename(path), "^traces-[0-9]{19}-")
  expect_setequal(spool_files(dir), c(names[3:4], basename(path)))
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

# The spool is sent by `glia flush` with the user's headers: R writes only into a directory of the user's own that
# no one else can write, and its files are private from the start (the rules of glia_otel/_spool.py).
spool_down <- function(dir) {
  c(GLIA_SPOOL_DIR = dir, OTEL_EXPORTER_OTLP_ENDPOINT = sprintf("http://127.0.0.1:%d", free_port()))
}

stderr_of <- function(code) capture.output(code, type = "message")

# Each test starts with no warnings given, as a fresh process would.
forget_warnings <- function() assign("logged", character(), envir = get(".glia", envir = asNamespace("glia")))

test_that("the spool is created 0700 and its files 0600", {
  dir <- file.path(tempfile("state"), "glia", "spool")
  with_env(spool_down(dir), glia_track(1))
  expect_identical(as.character(file.info(dir)$mode), "700")
  files <- spool_files(dir)
  expect_length(files, 1)
  expect_identical(as.character(file.info(file.path(dir, files))$mode), "600")
})

test_that("a spool others can write is refused: nothing written, the run still returns, one message", {
  for (mode in c("777", "1777", "770", "720")) {
    dir <- tempfile("spool")
    dir.create(dir)
    Sys.chmod(dir, mode, use_umask = FALSE)
    forget_warnings()
    err <- stderr_of(with_env(spool_down(dir), {
      expect_identical(glia_track(7), 7)
      expect_identical(glia_track(8), 8)
    }))
    expect_length(spool_files(dir), 0)
    expect_identical(sum(grepl("will not use the spool", err)), 1L, info = paste(mode, err))
    expect_true(any(grepl(sprintf("%s is writable by others (mode %s", dir, mode), err, fixed = TRUE)), info = err)
    expect_true(any(grepl(sprintf("chmod go-w %s", dir), err, fixed = TRUE)), info = err)
  }
})

test_that("a spool owned by another user is refused, directly or through a link", {
  skip_if(ps::ps_uids()[["effective"]] != 0L, "making a directory another user's needs root")
  dir <- tempfile("theirs")
  dir.create(dir, mode = "0755")
  expect_identical(system2("chown", c("nobody", dir)), 0L)
  link <- tempfile("link")
  file.symlink(dir, link)
  for (path in c(dir, link)) {
    forget_warnings()
    err <- stderr_of(with_env(spool_down(path), expect_identical(glia_track(7), 7)))
    expect_true(any(grepl(sprintf("%s belongs to nobody", path), err, fixed = TRUE)), info = err)
  }
  expect_length(spool_files(dir), 0)
})

test_that("the size bound counts and drops only the spool's own regular files", {
  dir <- tempfile("spool")
  dir.create(dir)
  for (i in 1:5) writeBin(raw(1000), file.path(dir, sprintf("170000000000000000%d-1-aa.json", i)))
  big <- tempfile("big")
  writeBin(raw(100000), big)
  link <- file.path(dir, "1600000000000000000-1-aa.json")  # the oldest name, a link to a big file elsewhere
  file.symlink(big, link)
  writeBin(raw(1000), file.path(dir, "notes.txt"))  # not a spool file: never the client's to delete
  settings <- list(spool_dir = dir, spool_max_bytes = 3500, endpoint = "http://x")
  path <- glia:::.spool_write(strrep("x", 1000), settings)
  expect_false(is.null(path))
  expect_identical(Sys.readlink(link), big)
  expect_identical(file.size(big), 100000)
  expect_true(file.exists(file.path(dir, "notes.txt")))
  kept <- setdiff(spool_files(dir), c(basename(link), "notes.txt"))
  expect_identical(length(kept), 3L)  # the two newest old files and the new one: the link's target counted nothing
  expect_true(basename(path) %in% kept)
})
