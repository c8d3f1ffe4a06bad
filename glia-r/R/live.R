# Live runs (docs/attributes.md, "Live runs"): a run still going 1 s after it began sends a start record, then a
# heartbeat every GLIA_HEARTBEAT_INTERVAL_MS (30 s) with the process's memory and CPU so far, until it ends; the
# receiver stores it as running and the final span replaces that row. GLIA_LIVE=false turns this off.
#
# Why a watcher process, and this one. R is single-threaded: nothing in the R process can act 1 s after a run began
# while the user's code is busy. So a small background process, the watcher, sends the records for it:
# - It is `Rscript` running this package (`glia:::.live_watch`), started with `system2()` through `sh -c '... &'`:
#   R is the one interpreter sure to be there, and it reuses this package's payload builder, export, spool and
#   settings. It is a fresh process, not a fork (`parallel::mcparallel`): a fork would copy the user's session (its
#   connections, its finalizers, its threads' locks) and is unsafe in a process that uses threads; a fresh R with no
#   default packages starts in ~30 ms and ~22 MB. The shell echoes its pid, so the parent can tell it is alive.
# - One watcher per R process, not per run: a run's start writes a small file (its start record's parts, 0600, in
#   a 0700 directory of the session's tempdir) and its end deletes it. Neither waits for the watcher, so a run's
#   exit costs one unlink whatever the watcher is doing; a loop of short tracked calls costs one file each, not a
#   process each. The receiver merges the records with the final span whatever order they arrive in, so a heartbeat
#   in flight when the run ends is harmless.
# - The watcher polls every 250 ms at most: it sends a run's start record once the run is 1 s old (and its file still
#   there), heartbeats every interval, and exits at once when its R process is gone (checked by pid and creation
#   time before every send), so a SIGKILLed R leaves its run to be found lost by the receiver's sweep. With no run
#   open for `.live_linger_seconds` it exits too; a later run starts another. That hand-over is race-free through a
#   token file renamed atomically: the watcher may only exit by renaming `alive` to `dead`, and a run's start, after
#   writing its file, renames `alive` to `pinged` (the watcher renames it back and rescans); whichever rename comes
#   first wins, so a run is never left with no watcher, and no second watcher starts while one is working.
# - Its stdout goes nowhere and its stderr to a log file in that directory, never to the user's terminal or pipes
#   (a reader waiting for EOF on R's output must not wait for the watcher); what it logs is relayed to R's stderr
#   when a run ends. It ignores interrupts (a Ctrl-C meant for R).

.live_after_seconds <- 1
.live_tick_seconds <- 0.25
.live_linger_seconds <- 5
.live_scope <- "glia"

# --- in the R process ---------------------------------------------------------------------------------------------

# The directory of this process's live runs: per pid, so a forked child (parallel::mclapply) has its own.
.live_dir <- function() {
  pid <- Sys.getpid()
  if (!is.null(.glia$live) && identical(.glia$live$pid, pid)) return(.glia$live$dir)
  dir <- file.path(tempdir(), paste0("glia-live-", pid))
  if (!dir.exists(dir)) dir.create(dir, mode = "0700", showWarnings = FALSE)
  if (!dir.exists(dir)) stop("could not create ", dir)
  Sys.chmod(dir, "0700")
  .glia$live <- list(pid = pid, dir = dir, watcher = NULL, ready_seen = FALSE, failed = FALSE, log_seen = 0)
  dir
}

#' A run began: write its start record's parts for the watcher and make sure one runs. Never raises.
#' @noRd
.live_run_started <- function(run) {
  settings <- run$settings
  if (!isTRUE(settings$live) || !is.null(.glia$exporter)) return(invisible(NULL))
  .safely({
    dir <- .live_dir()
    if (isTRUE(.glia$live$failed)) return(invisible(NULL))
    proc <- run$start$proc
    payload <- list(
      pid = Sys.getpid(),
      trace_id = run$trace_id,
      span_id = run$span_id,
      parent_span_id = run$parent_span_id,
      name = run$name,
      start_unix_nano = run$start_unix_nano,
      start_time = as.numeric(run$start$time),
      cpu0 = c(user = proc[["user.self"]], system = proc[["sys.self"]]),
      attributes = c(run$custom[setdiff(names(run$custom), .measured_keys)], list("glia.run.kind" = run$kind)),
      resource = .resource(settings),
      settings = settings
    )
    path <- file.path(dir, paste0(run$span_id, ".rds"))
    tmp <- paste0(path, ".tmp")
    .live_write_rds(payload, tmp)
    if (!file.rename(tmp, path)) {
      unlink(tmp)
      stop("could not rename ", tmp)
    }
    run$live_file <- path
    .live_ensure_watcher(dir)
  }, "starting a live run's records")
  invisible(NULL)
}

#' A run ended: no more records for it (its final span is on its way). Only an unlink; never waits.
#' @noRd
.live_run_ended <- function(run) {
  path <- run$live_file
  if (is.null(path)) return(invisible(NULL))
  run$live_file <- NULL
  .safely({
    unlink(path)
    .live_relay_log()
  }, "ending a live run's records")
  invisible(NULL)
}

.live_write_rds <- function(value, path) {
  # The settings carry the request headers (an ingest key): 0600 from the start, as the spool's files.
  old <- Sys.umask("077")
  on.exit(Sys.umask(old))
  saveRDS(value, path, compress = FALSE)
}

# Tells a running watcher that a run was added, or starts one. The token protocol is described at the top.
.live_ensure_watcher <- function(dir) {
  live <- .glia$live
  if (!is.null(live$watcher) && .live_ping(dir) && .live_process_alive(live$watcher)) return(invisible(NULL))
  if (!is.null(live$watcher) && !live$ready_seen && !file.exists(file.path(dir, "ready"))) {
    # The last watcher died before it was ready (it could not load this package, say): do not start one per run.
    .glia$live$failed <- TRUE
    .log(sprintf("live status is off for this R process: its watcher did not start (%s)", .live_log_tail(dir)))
    return(invisible(NULL))
  }
  unlink(file.path(dir, c("pinged", "dead", "ready")))
  writeLines("alive", file.path(dir, "alive"))
  .glia$live$watcher <- .live_spawn(dir)
  .glia$live$ready_seen <- FALSE
  invisible(NULL)
}

# TRUE when the watcher holds the token and will see the new run: `alive` renamed to `pinged` by us, or still
# `pinged` from an earlier run (the watcher cannot exit while it is). FALSE when it took the token to exit.
.live_ping <- function(dir) {
  alive <- file.path(dir, "alive")
  pinged <- file.path(dir, "pinged")
  for (i in 1:3) {
    if (suppressWarnings(file.rename(alive, pinged))) return(TRUE)
    if (file.exists(pinged)) return(TRUE)
  }
  FALSE
}

.live_process_alive <- function(watcher) {
  if (is.null(watcher$handle)) return(TRUE)  # no pid to check (no sh): trust the token
  if (!isTRUE(.glia$live$ready_seen) && file.exists(file.path(.glia$live$dir, "ready"))) .glia$live$ready_seen <- TRUE
  isTRUE(tryCatch(ps::ps_is_running(watcher$handle), error = function(e) FALSE))
}

# Starts the watcher in the background; returns list(handle = ps handle or NULL).
.live_spawn <- function(dir) {
  me <- ps::ps_handle()
  code <- sprintf(
    ".libPaths(%s); glia:::.live_watch(%s, %d, %s)",
    paste(deparse(.libPaths(), width.cutoff = 500L), collapse = ""), deparse(dir), Sys.getpid(),
    format(as.numeric(ps::ps_create_time(me)), digits = 17)
  )
  rscript <- file.path(R.home("bin"), if (.Platform$OS.type == "windows") "Rscript.exe" else "Rscript")
  args <- c("--no-save", "--no-restore", "--no-init-file", "--default-packages=NULL", "-e", code)
  log <- file.path(dir, "watcher.log")
  if (.Platform$OS.type == "windows" || !nzchar(Sys.which("sh"))) {
    system2(rscript, shQuote(args), stdout = FALSE, stderr = log, wait = FALSE)
    return(list(handle = NULL))
  }
  command <- sprintf("exec %s %s </dev/null >/dev/null 2>>%s & echo $!", shQuote(rscript),
                     paste(shQuote(args), collapse = " "), shQuote(log))
  # system() runs the line with sh, which starts the watcher in the background and prints its pid at once.
  pid <- suppressWarnings(as.integer(system(command, intern = TRUE)))
  if (length(pid) != 1L || is.na(pid)) stop("could not start the watcher process")
  list(handle = tryCatch(ps::ps_handle(pid), error = function(e) NULL))
}

# What the watcher logged since the last look goes to R's stderr (it has none of its own).
.live_relay_log <- function() {
  live <- .glia$live
  if (is.null(live)) return(invisible(NULL))
  log <- file.path(live$dir, "watcher.log")
  size <- file.size(log)
  if (is.na(size) || size <= live$log_seen) return(invisible(NULL))
  text <- tryCatch({
    con <- file(log, "rb")
    on.exit(close(con))
    seek(con, live$log_seen)
    rawToChar(readBin(con, "raw", size - live$log_seen))
  }, error = function(e) "")
  .glia$live$log_seen <- size
  if (nzchar(text)) try(cat(text, file = stderr()), silent = TRUE)
  invisible(NULL)
}

.live_log_tail <- function(dir) {
  lines <- tryCatch(readLines(file.path(dir, "watcher.log"), warn = FALSE), error = function(e) character())
  if (!length(lines)) return("no message")
  paste(utils::tail(lines, 3L), collapse = " / ")
}

# --- the records --------------------------------------------------------------------------------------------------

#' The OTLP JSON request of a start record (`state` "started") or a heartbeat ("running") of the run in `payload`:
#' the final span's ids, name, kind, parent and start, no end (0), the attributes known at its start, the state, the
#' time it is made and `figures`.
#' @noRd
.live_request_json <- function(payload, state, figures = list()) {
  attrs <- c(payload$attributes, figures, list(
    "glia.run.state" = state,
    "glia.run.heartbeat_unix_nano" = .int_nano(.unix_nano(Sys.time()))
  ))
  span <- list(
    traceId = payload$trace_id,
    spanId = payload$span_id,
    parentSpanId = payload$parent_span_id,
    name = payload$name,
    kind = .span_kind_internal,
    startTimeUnixNano = payload$start_unix_nano,
    endTimeUnixNano = "0",
    attributes = .key_values(attrs),
    status = list(code = .status_unset)
  )
  if (is.null(span$parentSpanId)) span$parentSpanId <- NULL
  request <- list(resourceSpans = list(list(
    resource = list(attributes = .key_values(payload$resource)),
    scopeSpans = list(list(
      scope = list(name = .live_scope, version = as.character(utils::packageVersion("glia"))),
      spans = list(span)
    ))
  )))
  as.character(jsonlite::toJSON(request, auto_unbox = TRUE, digits = NA, null = "null"))
}

# An int64 given as its decimal string (a nanosecond time does not fit a double exactly).
.int_nano <- function(text) structure(text, class = "glia_int_text")

# The figures of a heartbeat: the run's process's resident memory now and its CPU seconds since the run began.
.live_figures <- function(payload, handle) {
  figures <- list()
  cpu <- tryCatch(ps::ps_cpu_times(handle), error = function(e) NULL)
  if (!is.null(cpu)) {
    figures[["glia.cpu.user_seconds"]] <- .double(max(0, cpu[["user"]] - payload$cpu0[["user"]]))
    figures[["glia.cpu.system_seconds"]] <- .double(max(0, cpu[["system"]] - payload$cpu0[["system"]]))
  }
  rss <- .live_rss(payload$pid, handle)
  if (is.finite(rss)) figures[["glia.memory.rss_bytes"]] <- .int(rss)
  figures
}

.live_rss <- function(pid, handle) {
  status <- .read_proc_numbers(sprintf("/proc/%d/status", pid))
  if (!is.null(status) && !is.na(status["VmRSS"])) return(unname(status["VmRSS"]) * 1024)
  tryCatch(ps::ps_memory_info(handle)[["rss"]], error = function(e) NA_real_)
}

# --- in the watcher process ---------------------------------------------------------------------------------------

#' The watcher's main loop (see the top of this file); quits R when its parent is gone or it has been idle.
#' @noRd
.live_watch <- function(dir, ppid, pcreate) {
  parent <- tryCatch({
    handle <- ps::ps_handle(as.integer(ppid))
    if (abs(as.numeric(ps::ps_create_time(handle)) - pcreate) > 1) NULL else handle
  }, error = function(e) NULL)
  parent_alive <- function() {
    !is.null(parent) && isTRUE(tryCatch(ps::ps_is_running(parent), error = function(e) FALSE))
  }
  if (!parent_alive()) .live_quit(dir, TRUE)
  writeLines(as.character(Sys.getpid()), file.path(dir, "ready"))
  runs <- list()
  idle_since <- as.numeric(Sys.time())
  repeat {
    wait <- tryCatch({
      if (!parent_alive() || !dir.exists(dir)) .live_quit(dir, TRUE)
      pinged <- file.path(dir, "pinged")
      if (file.exists(pinged)) {
        file.rename(pinged, file.path(dir, "alive"))
        idle_since <- as.numeric(Sys.time())
      }
      ids <- sub("\\.rds$", "", list.files(dir, pattern = "^[0-9a-f]{16}\\.rds$"))
      runs <- runs[intersect(names(runs), ids)]
      for (id in setdiff(ids, names(runs))) {
        payload <- tryCatch(readRDS(file.path(dir, paste0(id, ".rds"))), error = function(e) NULL)
        if (is.null(payload)) next
        handle <- if (identical(as.integer(payload$pid), as.integer(ppid))) parent else
          tryCatch(ps::ps_handle(as.integer(payload$pid)), error = function(e) NULL)
        runs[[id]] <- list(payload = payload, handle = handle, started = FALSE,
                           due = payload$start_time + .live_after_seconds)
      }
      now <- as.numeric(Sys.time())
      if (!length(ids)) {
        if (now - idle_since >= .live_linger_seconds &&
            suppressWarnings(file.rename(file.path(dir, "alive"), file.path(dir, "dead")))) {
          .live_quit(dir, FALSE)
        }
      } else {
        idle_since <- now
      }
      for (id in names(runs)) {
        entry <- runs[[id]]
        if (entry$due > as.numeric(Sys.time())) next
        # Checked again right before sending: a run that ended, or whose process died, gets nothing more.
        if (!file.exists(file.path(dir, paste0(id, ".rds"))) || !parent_alive()) next
        if (is.null(entry$handle) || !isTRUE(tryCatch(ps::ps_is_running(entry$handle), error = function(e) FALSE))) next
        .live_send(entry)
        entry$started <- TRUE
        entry$due <- as.numeric(Sys.time()) + entry$payload$settings$heartbeat_interval_s
        runs[[id]] <- entry
      }
      next_due <- min(c(vapply(runs, function(e) e$due, numeric(1)), Inf))
      min(.live_tick_seconds, max(0.01, next_due - as.numeric(Sys.time())))
    }, interrupt = function(e) .live_tick_seconds, error = function(e) {
      .log_once(paste0("watch:", conditionMessage(e)), paste0("the live watcher: ", conditionMessage(e)))
      .live_tick_seconds
    })
    tryCatch(Sys.sleep(wait), interrupt = function(e) NULL)
  }
}

# Sends one run's start record (spooled when the endpoint cannot take it: a run killed meanwhile is then still
# found lost once the spool is resent) or a heartbeat (posted once, dropped on failure: the next says the same).
.live_send <- function(entry) {
  payload <- entry$payload
  settings <- payload$settings
  if (!entry$started) {
    .export(.live_request_json(payload, "started"), settings)
    return(invisible(NULL))
  }
  body <- .live_request_json(payload, "running", .live_figures(payload, entry$handle))
  outcome <- .post(body, settings)
  if (!identical(outcome$result, "sent")) {
    .log_once(paste0("heartbeat:", settings$endpoint), sprintf(
      "a heartbeat of a running run was not delivered to %s (%s); dropped", settings$endpoint, outcome$detail))
  }
  invisible(NULL)
}

.live_quit <- function(dir, parent_gone) {
  # The parent's tempdir is not removed when it is SIGKILLed: the watcher removes what is its own in it.
  if (parent_gone) unlink(dir, recursive = TRUE)
  quit(save = "no", status = 0L, runLast = FALSE)
}
