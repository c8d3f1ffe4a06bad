# Measurements taken at the edges of a run: times, CPU, I/O and the peak resident set size.

# Reads "Key: value" lines of a /proc file into a named numeric vector; NULL when it cannot be read.
.read_proc_numbers <- function(path) {
  lines <- tryCatch(suppressWarnings(readLines(path, warn = FALSE)), error = function(e) NULL)
  if (is.null(lines)) return(NULL)
  keys <- sub(":.*$", "", lines)
  values <- suppressWarnings(as.numeric(sub("^[^:]*:\\s*([0-9]+).*$", "\\1", lines)))
  stats::setNames(values, keys)
}

.status_bytes <- function(field) {
  status <- .read_proc_numbers("/proc/self/status")
  if (is.null(status) || is.na(status[field])) return(NA_real_)
  unname(status[field]) * 1024
}

.io_counters <- function() {
  io <- .read_proc_numbers("/proc/self/io")
  if (is.null(io) || is.na(io["read_bytes"]) || is.na(io["write_bytes"])) return(NULL)
  c(read = unname(io["read_bytes"]), write = unname(io["write_bytes"]))
}

.rss_bytes <- function() {
  rss <- .status_bytes("VmRSS")
  if (is.na(rss)) rss <- tryCatch(ps::ps_memory_info(ps::ps_handle())[["rss"]], error = function(e) NA_real_)
  rss
}

.reset_hwm <- function() {
  ok <- tryCatch({
    cat("5", file = "/proc/self/clear_refs")
    TRUE
  }, error = function(e) FALSE, warning = function(w) FALSE)
  ok
}

# Which peak-RSS method this process can use, probed once: "hwm-reset" when writing 5 to /proc/self/clear_refs
# resets VmHWM, "hwm" when VmHWM can be read but not reset, "sampled" (RSS read at the run's edges and at each
# glia_set()) when there is no /proc (macOS, Windows).
.memory_method <- function() {
  if (!is.null(.glia$memory_method)) return(.glia$memory_method)
  method <- "sampled"
  before <- .status_bytes("VmHWM")
  if (!is.na(before)) {
    method <- "hwm"
    if (.reset_hwm()) {
      after <- .status_bytes("VmHWM")
      rss <- .status_bytes("VmRSS")
      # The write can succeed without effect (some sandboxes); trust it only if the mark now sits at the RSS.
      if (!is.na(after) && (after < before || after <= rss + 4 * 1024^2)) method <- "hwm-reset"
    }
  }
  .glia$memory_method <- method
  method
}

# Folds the process's current peak into every open run, so resetting the mark for an inner run cannot hide a peak
# an enclosing run already reached.
.fold_peak_into_open_runs <- function(value) {
  if (is.na(value)) return(invisible(NULL))
  for (run in .glia$open) run$peak_seen <- max(run$peak_seen, value, na.rm = TRUE)
  invisible(NULL)
}

.current_peak <- function(method) {
  if (method == "sampled") .rss_bytes() else .status_bytes("VmHWM")
}

# Starts the memory measurement of `run` (already on the open list's caller side, not yet pushed).
.memory_start <- function(run) {
  method <- .memory_method()
  run$memory_method <- method
  # The RSS the run starts from, so `peak - start` is what the run added (the peak is the process's, all included).
  run$start_rss <- .rss_bytes()
  .fold_peak_into_open_runs(.current_peak(method))
  if (method == "hwm-reset" && !.reset_hwm()) run$memory_method <- method <- "hwm"
  run$peak_seen <- if (method == "hwm-reset") NA_real_ else .rss_bytes()
}

.memory_sample <- function() {
  method <- .glia$memory_method
  if (!is.null(method) && method == "sampled") .fold_peak_into_open_runs(.rss_bytes())
}

.memory_peak <- function(run) {
  max(run$peak_seen, .current_peak(run$memory_method), na.rm = TRUE)
}

#' A snapshot of the counters a run is measured by.
#' @noRd
.snapshot <- function() {
  list(
    time = Sys.time(),
    proc = proc.time(),
    io = .io_counters()
  )
}

# Wall time between snapshots. Base R has no monotonic clock: this is the real-time clock (microseconds), clamped
# so that a clock stepped backwards cannot give a negative duration.
.wall_seconds <- function(start, end) {
  max(0, as.numeric(end$time) - as.numeric(start$time))
}

#' Usage attributes of a run between two snapshots, as typed attribute values.
#' @noRd
.usage_attributes <- function(start, end, peak_rss, peak_method, start_rss = NA_real_) {
  p0 <- start$proc
  p1 <- end$proc
  child <- function(p, field) {
    value <- p[[field]]
    if (is.na(value)) 0 else value
  }
  user <- (p1[["user.self"]] + child(p1, "user.child")) - (p0[["user.self"]] + child(p0, "user.child"))
  system <- (p1[["sys.self"]] + child(p1, "sys.child")) - (p0[["sys.self"]] + child(p0, "sys.child"))
  wall <- .wall_seconds(start, end)
  attrs <- list(
    "glia.cpu.user_seconds" = .double(max(0, user)),
    "glia.cpu.system_seconds" = .double(max(0, system))
  )
  if (wall > 0) attrs[["glia.cpu.percent"]] <- .double(100 * (max(0, user) + max(0, system)) / wall)
  if (is.finite(peak_rss)) {
    attrs[["glia.memory.peak_rss_bytes"]] <- .int(peak_rss)
    attrs[["glia.memory.peak_rss_method"]] <- peak_method
  }
  if (is.finite(start_rss)) attrs[["glia.memory.start_rss_bytes"]] <- .int(start_rss)
  if (!is.null(start$io) && !is.null(end$io)) {
    attrs[["glia.io.read_bytes"]] <- .int(max(0, end$io[["read"]] - start$io[["read"]]))
    attrs[["glia.io.write_bytes"]] <- .int(max(0, end$io[["write"]] - start$io[["write"]]))
  }
  attrs
}
