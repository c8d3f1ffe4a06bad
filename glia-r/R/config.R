# Settings, read from the environment when a run starts (never at load time), with the OpenTelemetry SDK's
# precedence: signal-specific OTEL_* > generic OTEL_* > default.

.default_endpoint <- "http://localhost:4318/v1/traces"
.default_deadline_ms <- 250
.default_spool_max_bytes <- 100 * 1024^2
.default_heartbeat_interval_ms <- 30000

.env <- function(name) {
  value <- Sys.getenv(name, unset = "")
  if (nzchar(value)) value else NULL
}

.env_true <- function(name) {
  value <- .env(name)
  !is.null(value) && tolower(trimws(value)) %in% c("true", "1", "yes", "on")
}

.env_false <- function(name) {
  value <- .env(name)
  !is.null(value) && tolower(trimws(value)) %in% c("false", "0", "no", "off")
}

.env_number <- function(name, default) {
  value <- .env(name)
  if (is.null(value)) return(default)
  number <- suppressWarnings(as.numeric(value))
  if (is.na(number) || number < 0) {
    .log_once(paste0("bad-", name), sprintf("ignoring %s=%s (not a non-negative number)", name, value))
    return(default)
  }
  number
}

# Parses "k1=v1,k2=v2" (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES); values are percent-decoded.
.parse_key_values <- function(text) {
  if (is.null(text)) return(list())
  out <- list()
  for (item in strsplit(text, ",", fixed = TRUE)[[1]]) {
    eq <- regexpr("=", item, fixed = TRUE)
    if (eq < 2) next
    key <- trimws(substr(item, 1, eq - 1))
    value <- trimws(substr(item, eq + 1, nchar(item)))
    out[[key]] <- utils::URLdecode(value)
  }
  out
}

#' Settings of the R client, as a list.
#' @noRd
.settings <- function() {
  endpoint <- .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
  if (is.null(endpoint)) {
    base <- .env("OTEL_EXPORTER_OTLP_ENDPOINT")
    endpoint <- if (is.null(base)) .default_endpoint else paste0(sub("/+$", "", base), "/v1/traces")
  }
  headers <- utils::modifyList(
    .parse_key_values(.env("OTEL_EXPORTER_OTLP_HEADERS")),
    .parse_key_values(.env("OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
  )
  list(
    disabled = .env_true("GLIA_DISABLED") || .env_true("OTEL_SDK_DISABLED"),
    endpoint = endpoint,
    headers = headers,
    deadline_ms = .env_number("GLIA_EXPORT_DEADLINE_MS", .default_deadline_ms),
    spool_dir = .spool_dir(),
    spool_max_bytes = .env_number("GLIA_SPOOL_MAX_BYTES", .default_spool_max_bytes),
    record_args = !.env_false("GLIA_RECORD_ARGS"),
    # Live runs (live.R): a run past 1 s is sent as running, then a heartbeat every interval; GLIA_LIVE=false: none.
    live = !.env_false("GLIA_LIVE"),
    heartbeat_interval_s = .heartbeat_interval_ms() / 1000
  )
}

# GLIA_HEARTBEAT_INTERVAL_MS: a positive number of milliseconds, as the Python client reads it.
.heartbeat_interval_ms <- function() {
  ms <- .env_number("GLIA_HEARTBEAT_INTERVAL_MS", .default_heartbeat_interval_ms)
  if (!is.finite(ms) || ms <= 0) {
    .log_once("bad-GLIA_HEARTBEAT_INTERVAL_MS", sprintf(
      "ignoring GLIA_HEARTBEAT_INTERVAL_MS=%s (not a positive number of milliseconds)", .env("GLIA_HEARTBEAT_INTERVAL_MS")))
    ms <- .default_heartbeat_interval_ms
  }
  ms
}

.spool_dir <- function() {
  dir <- .env("GLIA_SPOOL_DIR")
  if (!is.null(dir)) return(dir)
  state <- .env("XDG_STATE_HOME")
  if (!is.null(state)) return(file.path(state, "glia", "spool"))
  file.path(path.expand("~"), ".local", "state", "glia", "spool")
}

.disabled <- function() {
  .env_true("GLIA_DISABLED") || .env_true("OTEL_SDK_DISABLED")
}
