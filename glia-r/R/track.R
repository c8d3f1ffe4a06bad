# The public API: a run is an environment of class "glia_tracker" that is open between its start and its stop.

#' Track an expression as a run
#'
#' Evaluates `expr` as one run (one OpenTelemetry span with `glia.run.kind = "block"`) and returns its value.
#' Wall, user and system time (children included), CPU percent, peak RSS and I/O bytes are measured at its edges
#' and the span is sent to the OTLP endpoint when it ends (or spooled if the endpoint cannot take it). An error
#' marks the run `ERROR` with the condition's class and message and then propagates unchanged.
#'
#' @param expr the expression to evaluate.
#' @param name the run's (span's) name; defaults to the service name (the script's name).
#' @param attrs a named list of custom values stored on the run; nested lists become dotted keys.
#' @return the value of `expr`.
#' @examples
#' fit <- glia_track(lm(dist ~ speed, cars), name = "fit", attrs = list(model = "lm"))
#' @export
glia_track <- function(expr, name = NULL, attrs = list()) {
  run <- .start_run(name, attrs, "block")
  if (is.null(run)) return(expr)
  on.exit(.finish_run(run))
  withCallingHandlers(expr, error = function(e) .record_error(run, e), interrupt = function(e) .record_error(run, e))
}

#' Start a run that is stopped explicitly
#'
#' For scripts that cannot wrap their work in one expression: `tr <- glia_tracker("name")` at the top,
#' `glia_stop(tr)` at the end. A run still open when R exits is stopped then; an uncaught error while it is open
#' marks it `ERROR`.
#'
#' @inheritParams glia_track
#' @return a tracker (class `glia_tracker`) to pass to [glia_set()] and [glia_stop()].
#' @export
glia_tracker <- function(name = NULL, attrs = list()) {
  run <- .start_run(name, attrs, "block")
  if (is.null(run)) return(.disabled_tracker(name))
  # Called from the top level of a script, no condition handler can be on the stack, so the process-wide error
  # handler that marks open runs failed can be installed safely (R refuses it otherwise).
  if (sys.nframe() == 1L) .install_global_handler()
  .install_exit_guard()
  run
}

#' Stop a run and send it
#'
#' Ends the run, measures it and exports it. Stopping a stopped run does nothing.
#'
#' @param tr a tracker from [glia_tracker()].
#' @return `tr`, invisibly.
#' @export
glia_stop <- function(tr) {
  if (inherits(tr, "glia_tracker")) .finish_run(tr)
  invisible(tr)
}

#' Wrap a function so that each call is a run
#'
#' @param f a function.
#' @param name the runs' name; defaults to the name `f` was passed as.
#' @return a function taking `...`, passed on to `f` unchanged, that tracks each call as a run (`glia.run.kind =
#'   "function"`) and returns what `f` returns.
#' @export
glia_wrap <- function(f, name = NULL) {
  if (is.null(name)) {
    label <- substitute(f)
    name <- if (is.name(label)) as.character(label) else "function"
  }
  f <- match.fun(f)
  wrapper <- function(...) {
    run <- .start_run(name, list(), "function")
    if (is.null(run)) return(f(...))
    on.exit(.finish_run(run))
    withCallingHandlers(f(...), error = function(e) .record_error(run, e),
                        interrupt = function(e) .record_error(run, e))
  }
  wrapper
}

#' Store custom values on a run
#'
#' Values land in the run's attribute bag (the `attributes` JSONB column) under the keys given. Scalars keep their
#' type (logical, integer, double, character); vectors become arrays; nested named lists become dotted keys.
#'
#' @param tr a tracker; defaults to the innermost open run ([glia_current()]).
#' @param ... `key = value` pairs, or one named list.
#' @return `tr`, invisibly.
#' @examples
#' glia_track({
#'   glia_set(epochs = 10L, loss = 0.25)
#' })
#' @export
glia_set <- function(tr, ...) {
  if (missing(tr)) tr <- glia_current()
  values <- list(...)
  if (!inherits(tr, "glia_tracker") && is.list(tr) && !is.null(names(tr))) {
    values <- c(tr, values)
    tr <- glia_current()
  }
  if (length(values) == 1L && is.null(names(values)) && is.list(values[[1]])) values <- values[[1]]
  if (is.null(tr)) return(invisible(NULL))
  if (!inherits(tr, "glia_tracker")) {
    .log_once("set-not-tracker", "glia_set() needs a run from glia_tracker() (or an open run); values ignored")
    return(invisible(tr))
  }
  if (isTRUE(tr$disabled) || isTRUE(tr$ended)) return(invisible(tr))
  .safely({
    if (length(values) && (is.null(names(values)) || any(!nzchar(names(values))))) {
      .log_once("set-unnamed", "glia_set() ignores values without a name")
    }
    for (key in names(values)) if (nzchar(key)) tr$custom[key] <- list(values[[key]])
    .memory_sample()
  }, "glia_set")
  invisible(tr)
}

#' The innermost open run
#'
#' @return the tracker of the innermost run that has started and not yet stopped, or `NULL`.
#' @export
glia_current <- function() {
  n <- length(.glia$open)
  if (n) .glia$open[[n]] else NULL
}

#' @export
print.glia_tracker <- function(x, ...) {
  if (isTRUE(x$disabled)) {
    cat("<glia run (disabled)>\n")
  } else {
    cat(sprintf("<glia run '%s' %s trace %s span %s>\n", x$name, if (isTRUE(x$ended)) "stopped" else "open",
                x$trace_id, x$span_id))
  }
  invisible(x)
}

.disabled_tracker <- function(name) {
  run <- new.env(parent = emptyenv())
  run$disabled <- TRUE
  run$name <- if (is.null(name)) "" else name
  class(run) <- "glia_tracker"
  run
}

#' Opens a run: ids, parent, start measurements. Returns NULL when tracking is off or failed to start.
#' @noRd
.start_run <- function(name, attrs, kind) {
  if (.disabled()) return(NULL)
  .safely({
    settings <- .settings()
    resource <- .resource(settings)
    run <- new.env(parent = emptyenv())
    class(run) <- "glia_tracker"
    run$disabled <- FALSE
    run$ended <- FALSE
    run$settings <- settings
    run$name <- if (is.null(name) || !nzchar(name)) resource[["service.name"]] else as.character(name)[[1]]
    run$kind <- kind
    run$custom <- if (is.list(attrs)) attrs else as.list(attrs)
    run$events <- list()
    run$status_code <- .status_unset
    run$status_message <- NULL
    parent <- glia_current()
    if (!is.null(parent)) {
      run$trace_id <- parent$trace_id
      run$parent_span_id <- parent$span_id
    } else {
      context <- .parse_traceparent(.env("TRACEPARENT"))
      run$trace_id <- if (is.null(context)) .new_trace_id() else context$trace_id
      run$parent_span_id <- if (is.null(context)) NULL else context$span_id
    }
    run$span_id <- .new_span_id()
    # Child processes started during the run (system2, processx) see it as their parent.
    run$previous_traceparent <- .env("TRACEPARENT")
    Sys.setenv(TRACEPARENT = sprintf("00-%s-%s-01", run$trace_id, run$span_id))
    .memory_start(run)
    .glia$open <- c(.glia$open, list(run))
    run$start <- .snapshot()
    run$start_unix_nano <- .unix_nano(run$start$time)
    # After the start is taken: the start record carries exactly the final span's start time and span id.
    .live_run_started(run)
    run
  }, "starting a run")
}

#' Records an error (or interrupt) on a run: status ERROR and an exception event.
#' @noRd
.record_error <- function(run, condition) {
  .safely({
    if (run$status_code == .status_error) return(invisible(NULL))
    type <- class(condition)[[1]]
    message <- conditionMessage(condition)
    calls <- sys.calls()
    # Drop the frames of the handler itself (this function and the closure that called it).
    calls <- calls[seq_len(max(0L, length(calls) - 2L))]
    stack <- vapply(rev(calls), function(call) paste(deparse(call, nlines = 1L, width.cutoff = 200L), collapse = ""),
                    character(1))
    run$status_code <- .status_error
    run$status_message <- paste0(type, ": ", message)
    run$events <- c(run$events, list(list(
      name = "exception",
      time_unix_nano = .unix_nano(Sys.time()),
      attributes = list(
        "exception.type" = type,
        "exception.message" = message,
        "exception.stacktrace" = paste(c(paste0(type, ": ", message), paste0("  at ", stack)), collapse = "\n")
      )
    )))
  }, "recording an error")
  invisible(NULL)
}

#' Closes a run: measures it, takes it off the open list, exports it. Never raises.
#' @noRd
.finish_run <- function(run) {
  if (isTRUE(run$disabled) || isTRUE(run$ended)) return(invisible(NULL))
  run$ended <- TRUE
  .safely({
    end <- .snapshot()
    .live_run_ended(run)
    peak <- .memory_peak(run)
    .glia$open <- Filter(function(other) !identical(other, run), .glia$open)
    # The enclosing runs reset nothing here, but they must still see this run's peak if a later run resets.
    .fold_peak_into_open_runs(peak)
    if (is.null(run$previous_traceparent)) Sys.unsetenv("TRACEPARENT")
    else Sys.setenv(TRACEPARENT = run$previous_traceparent)
    wall <- .wall_seconds(run$start, end)
    run$end_unix_nano <- .add_nanos(run$start_unix_nano, wall)
    failed <- run$status_code == .status_error
    run$attributes <- c(
      run$custom[setdiff(names(run$custom), .measured_keys)],
      list("glia.run.kind" = run$kind, "process.exit.code" = if (failed) 1L else 0L),
      .usage_attributes(run$start, end, peak, run$memory_method, if (is.null(run$start_rss)) NA_real_ else run$start_rss)
    )
    body <- .export_request_json(.resource(run$settings), list(run))
    run$outcome <- if (is.null(.glia$exporter)) .export(body, run$settings) else .glia$exporter(body)
  }, "exporting a run")
  invisible(NULL)
}

.measured_keys <- c(
  "glia.run.kind", "process.exit.code", "glia.cpu.user_seconds", "glia.cpu.system_seconds", "glia.cpu.percent",
  "glia.memory.peak_rss_bytes", "glia.memory.peak_rss_method", "glia.memory.start_rss_bytes", "glia.io.read_bytes",
  "glia.io.write_bytes"
)

# Marks every open run failed when an error reaches the top level uncaught (Rscript then exits).
.install_global_handler <- function() {
  if (.glia$global_handler) return(invisible(NULL))
  .glia$global_handler <- TRUE
  # Not inside tryCatch(): that would itself put a handler on the stack and make R refuse.
  globalCallingHandlers(error = function(e) {
    for (run in .glia$open) .record_error(run, e)
  })
  invisible(NULL)
}

# Stops the runs still open when R exits, innermost first, so a script that never reaches glia_stop() (an
# uncaught error, q()) still records its run.
.install_exit_guard <- function() {
  if (!is.null(.glia$exit_guard)) return(invisible(NULL))
  guard <- new.env(parent = emptyenv())
  .glia$exit_guard <- guard
  reg.finalizer(guard, function(e) {
    for (run in rev(.glia$open)) .finish_run(run)
  }, onexit = TRUE)
  invisible(NULL)
}
