# The OTLP/HTTP JSON payload (opentelemetry-proto's JSON mapping, with the OTLP exceptions): trace and span ids
# are lowercase hex, enums are integers, 64-bit integers are decimal strings, field names are lowerCamelCase.

.span_kind_internal <- 1L
.status_unset <- 0L
.status_error <- 2L

# Typed markers for values whose OTLP type R cannot carry on its own: byte counts exceed R's 32-bit integers, so
# an int64 travels as a double marked "glia_int"; a whole number meant as a double is marked "glia_double".
.int <- function(x) structure(as.numeric(x), class = "glia_int")
.double <- function(x) structure(as.numeric(x), class = "glia_double")

.random_bytes <- function(n) {
  bytes <- tryCatch({
    con <- file("/dev/urandom", open = "rb", raw = TRUE)
    on.exit(close(con))
    readBin(con, "raw", n)
  }, error = function(e) raw(0), warning = function(w) raw(0))
  if (length(bytes) == n) return(bytes)
  # No /dev/urandom (Windows): use R's generator without disturbing the user's random stream.
  had_seed <- exists(".Random.seed", envir = globalenv(), inherits = FALSE)
  if (had_seed) old <- get(".Random.seed", envir = globalenv(), inherits = FALSE)
  on.exit(if (had_seed) assign(".Random.seed", old, envir = globalenv())
          else if (exists(".Random.seed", envir = globalenv(), inherits = FALSE)) rm(".Random.seed", envir = globalenv()))
  set.seed(NULL)
  as.raw(sample.int(256L, n, replace = TRUE) - 1L)
}

.random_hex <- function(n_bytes) {
  repeat {
    bytes <- .random_bytes(n_bytes)
    if (any(bytes != as.raw(0))) return(paste(format(bytes), collapse = ""))
  }
}

.new_trace_id <- function() .random_hex(16)
.new_span_id <- function() .random_hex(8)

# Parses a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"); NULL when absent or malformed.
.parse_traceparent <- function(value) {
  if (is.null(value)) return(NULL)
  value <- tolower(trimws(value))
  m <- regmatches(value, regexec("^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", value))[[1]]
  if (length(m) != 5 || m[[2]] == "ff") return(NULL)
  if (m[[3]] == strrep("0", 32) || m[[4]] == strrep("0", 16)) return(NULL)
  if (m[[2]] == "00" && nchar(value) != 55) return(NULL)
  list(trace_id = m[[3]], span_id = m[[4]])
}

# Formats a POSIXct as integer nanoseconds since the epoch, a decimal string (a double cannot hold it exactly, so
# whole seconds and the fraction are formatted apart).
.unix_nano <- function(time) {
  t <- as.numeric(time)
  secs <- floor(t)
  nanos <- round((t - secs) * 1e9)
  if (nanos >= 1e9) {
    secs <- secs + 1
    nanos <- 0
  }
  sprintf("%.0f%09.0f", secs, nanos)
}

# Adds a duration in seconds to a nanosecond timestamp string, keeping the result exact to the nanosecond.
.add_nanos <- function(unix_nano, seconds) {
  secs <- as.numeric(substr(unix_nano, 1, nchar(unix_nano) - 9))
  nanos <- as.numeric(substr(unix_nano, nchar(unix_nano) - 8, nchar(unix_nano))) + round(max(0, seconds) * 1e9)
  secs <- secs + nanos %/% 1e9
  sprintf("%.0f%09.0f", secs, nanos %% 1e9)
}

.scalar_value <- function(x) {
  if (is.na(x) && !is.nan(x)) return(structure(list(), names = character()))
  if (inherits(x, "glia_int")) return(list(intValue = sprintf("%.0f", unclass(x))))
  if (inherits(x, "glia_int_text")) return(list(intValue = unclass(x)))
  if (is.logical(x)) return(list(boolValue = x))
  if (is.integer(x)) return(list(intValue = as.character(x)))
  if (is.numeric(x)) {
    x <- unclass(x)
    if (is.nan(x)) return(list(doubleValue = "NaN"))
    if (is.infinite(x)) return(list(doubleValue = if (x > 0) "Infinity" else "-Infinity"))
    return(list(doubleValue = x))
  }
  list(stringValue = enc2utf8(as.character(x)))
}

# Turns an R value into an OTLP AnyValue: length-1 vectors become scalars, longer ones arrays; NA becomes an empty
# value. Factors, dates and other classed vectors are sent as their formatted strings.
.any_value <- function(x) {
  if (is.factor(x)) x <- as.character(x)
  if (!inherits(x, c("glia_int", "glia_double", "glia_int_text")) && is.object(x)) x <- format(x)
  if (is.list(x)) return(list(arrayValue = list(values = lapply(unname(x), .any_value))))
  if (is.raw(x)) return(list(bytesValue = jsonlite::base64_enc(x)))
  if (length(x) == 1) return(.scalar_value(x))
  typed <- inherits(x, c("glia_int", "glia_double"))
  cls <- class(x)
  values <- lapply(seq_along(x), function(i) {
    v <- unclass(x)[[i]]
    .scalar_value(if (typed) structure(v, class = cls) else v)
  })
  list(arrayValue = list(values = values))
}

# Flattens nested named lists to dotted keys ({a = list(b = 1)} -> "a.b" = 1), as the attribute contract asks.
.flatten_attributes <- function(values, prefix = "") {
  out <- list()
  for (i in seq_along(values)) {
    key <- names(values)[[i]]
    value <- values[[i]]
    if (is.null(key) || is.na(key) || !nzchar(key)) next
    key <- paste0(prefix, key)
    if (is.null(value)) next
    if (is.list(value) && !is.data.frame(value) && !is.null(names(value)) && all(nzchar(names(value)))) {
      out <- c(out, .flatten_attributes(value, paste0(key, ".")))
    } else {
      if (is.data.frame(value) || is.function(value) || is.environment(value) || is.language(value)) {
        value <- paste(utils::capture.output(utils::str(value)), collapse = "\n")
      }
      out[[key]] <- value
    }
  }
  out
}

.key_values <- function(attrs) {
  attrs <- .flatten_attributes(attrs)
  unname(Map(function(key, value) list(key = key, value = .any_value(value)), names(attrs), attrs))
}

#' Builds the OTLP span object of a finished run.
#' @noRd
.span_json <- function(run) {
  span <- list(
    traceId = run$trace_id,
    spanId = run$span_id,
    parentSpanId = if (is.null(run$parent_span_id)) "" else run$parent_span_id,
    name = run$name,
    kind = .span_kind_internal,
    startTimeUnixNano = run$start_unix_nano,
    endTimeUnixNano = run$end_unix_nano,
    attributes = .key_values(run$attributes),
    events = lapply(run$events, function(event) {
      list(timeUnixNano = event$time_unix_nano, name = event$name, attributes = .key_values(event$attributes))
    }),
    status = if (is.null(run$status_message)) {
      list(code = run$status_code)
    } else {
      list(code = run$status_code, message = run$status_message)
    }
  )
  if (!nzchar(span$parentSpanId)) span$parentSpanId <- NULL
  span
}

#' Builds an ExportTraceServiceRequest for finished runs sharing one resource; returns the JSON text.
#' @noRd
.export_request_json <- function(resource, runs) {
  request <- list(resourceSpans = list(list(
    resource = list(attributes = .key_values(resource)),
    scopeSpans = list(list(
      scope = list(name = "glia", version = as.character(utils::packageVersion("glia"))),
      spans = lapply(runs, .span_json)
    ))
  )))
  as.character(jsonlite::toJSON(request, auto_unbox = TRUE, digits = NA, null = "null"))
}
