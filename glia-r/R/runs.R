# Reading runs back: glia_runs() through a receiver's query API (/api/runs), the filters of `glia runs`.
#
# Unlike tracking, this is a query the user asked for: a problem (no GLIA_API_URL, a refused key, a bad filter, the
# receiver away) is an R error with the API's own message, as a failed read.csv() would be.

# The columns of the data.frame, in the order of `glia runs --format csv` and of its Parquet file
# (glia_otel/_format.py CSV_COLUMNS; tests/integration/test_r_runs.py holds them equal).
.run_columns <- c(
  "run_id", "trace_id", "program_name", "run_name", "run_kind", "user_name", "host_name", "status", "exit_code",
  "started_at", "ended_at", "wall_seconds", "cpu_seconds", "cpu_percent", "peak_rss_bytes", "peak_rss_method",
  "tree_peak_bytes", "tree_peak_method", "oom_kills", "io_read_bytes", "io_write_bytes", "workflow_engine",
  "workflow_run_id", "workflow_name", "task_name", "task_attempt", "scheduler", "scheduler_job_id",
  "requested_memory_bytes", "requested_cpus", "requested_seconds", "script_path", "script_sha256", "attributes"
)
# Byte counts pass 2^31: doubles, exact to 2^53.
.run_doubles <- c(
  "wall_seconds", "cpu_seconds", "cpu_percent", "peak_rss_bytes", "tree_peak_bytes", "io_read_bytes",
  "io_write_bytes", "requested_memory_bytes", "requested_cpus", "requested_seconds"
)
.run_integers <- c("exit_code", "oom_kills", "task_attempt")
.run_times <- c("started_at", "ended_at")
.api_page_limit <- 500L

#' Runs from a Glia receiver as a data.frame.
#'
#' Reads `/api/runs` of the receiver at `url` (default `GLIA_API_URL`) with the read key `key` (default
#' `GLIA_API_KEY`), following its pages until `limit` runs or the last page. The filters are those of `glia runs`;
#' `NULL` leaves one off. One row per run, newest first by default, with the columns of `glia runs --format csv`:
#' times as POSIXct in UTC, byte counts and seconds as doubles, exit codes as integers, `attributes` as JSON text
#' (`jsonlite::fromJSON(df$attributes[1])`).
#'
#' @param program service.name of the runs.
#' @param user,host process.owner, host.name.
#' @param status a status (`ok`, `error`, ...), as `glia runs --status`.
#' @param exit_code an exit code.
#' @param since,until started at or after / before: an ISO 8601 time, an age such as `"7d"`, or a POSIXct.
#' @param attr custom values, all of which must match: a named vector or list (`c(sample = "S1")`,
#'   `list(reads = 7000)`), each matched with its type (the number 7000, not the text "7000"), or `"key=value"`
#'   strings as `glia runs --attr` takes them.
#' @param sha256 the script's sha256.
#' @param workflow a workflow's runs: the engine's workflow run id, or the workflow span's run id.
#' @param sort a sort key of the API (`"-started_at"`, `"wall_seconds"`, `"-peak_rss_bytes"`, ...).
#' @param limit the most runs to return (`Inf` for all).
#' @param ... further query parameters of `/api/runs`, passed as given (`name = "align"` where the receiver has it).
#' @param url,key the receiver's address and a read key.
#' @return a data.frame.
#' @export
glia_runs <- function(program = NULL, user = NULL, host = NULL, status = NULL, exit_code = NULL, since = NULL,
                      until = NULL, attr = NULL, sha256 = NULL, workflow = NULL, sort = "-started_at",
                      limit = 1000, ..., url = Sys.getenv("GLIA_API_URL"), key = Sys.getenv("GLIA_API_KEY")) {
  if (!is.character(url) || length(url) != 1 || !nzchar(trimws(url))) {
    stop("glia_runs: set GLIA_API_URL to the receiver's address (http://host:4318), or pass url =", call. = FALSE)
  }
  if (!is.numeric(limit) || length(limit) != 1 || is.na(limit) || limit < 1) {
    stop("glia_runs: limit must be a number of runs, at least 1 (Inf for all)", call. = FALSE)
  }
  params <- .runs_params(program = program, user = user, host = host, status = status, exit_code = exit_code,
                         since = since, until = until, attr = attr, sha256 = sha256, workflow = workflow,
                         sort = sort, extra = list(...))
  runs <- list()
  cursor <- NULL
  repeat {
    page_size <- as.integer(min(.api_page_limit, limit - length(runs)))
    page <- .api_get(url, key, "/api/runs", c(params, list(limit = page_size, cursor = cursor)))
    runs <- c(runs, page$runs)
    cursor <- page$next_cursor
    if (is.null(cursor) || length(runs) >= limit) break
  }
  .runs_frame(runs)
}

# The query parameters of /api/runs, as a list of name -> character (`attr` may repeat).
.runs_params <- function(program = NULL, user = NULL, host = NULL, status = NULL, exit_code = NULL, since = NULL,
                         until = NULL, attr = NULL, sha256 = NULL, workflow = NULL, sort = NULL, extra = list()) {
  one <- function(name, value) {
    if (is.null(value)) return(NULL)
    if (length(value) != 1 || is.na(value)) stop(sprintf("glia_runs: %s must be one value", name), call. = FALSE)
    if (inherits(value, "POSIXt")) value <- format(value, "%Y-%m-%dT%H:%M:%OS6Z", tz = "UTC")
    if (is.numeric(value)) value <- format(value, scientific = FALSE, trim = TRUE)
    stats::setNames(list(as.character(value)), name)
  }
  params <- c(list(), one("program", program), one("user", user), one("host", host), one("status", status),
              one("exit_code", exit_code), one("since", since), one("until", until),
              one("script_sha256", sha256), one("workflow", workflow), one("sort", sort))
  for (item in .attr_items(attr)) params <- c(params, list(attr = item))
  for (name in names(extra)) params <- c(params, one(name, extra[[name]]))
  params
}

# `attr` as "key=value" strings: a named value is written as JSON, so the API matches it with its R type (the number
# 7000, the string "7000"); unnamed ones are "key=value" as `glia runs --attr` takes them (a value that reads as JSON
# is that JSON).
.attr_items <- function(attr) {
  if (is.null(attr) || length(attr) == 0) return(character(0))
  keys <- names(attr)
  out <- character(length(attr))
  for (i in seq_along(attr)) {
    value <- attr[[i]]
    if (is.null(keys) || !nzchar(keys[[i]])) {
      if (!is.character(value) || !grepl("=", value, fixed = TRUE)) {
        stop("glia_runs: attr takes named values (c(sample = \"S1\")) or \"key=value\" strings", call. = FALSE)
      }
      out[[i]] <- value
    } else {
      out[[i]] <- paste0(keys[[i]], "=", as.character(jsonlite::toJSON(value, auto_unbox = TRUE, digits = NA)))
    }
  }
  out
}

# GET `path` of the query API; the decoded JSON body, or an R error with what the API said.
.api_get <- function(url, key, path, params) {
  params <- params[!vapply(params, is.null, logical(1))]
  query <- if (length(params)) {
    paste0("?", paste(curl::curl_escape(names(params)), curl::curl_escape(unlist(params)), sep = "=", collapse = "&"))
  } else ""
  target <- paste0(sub("/+$", "", trimws(url)), path, query)
  handle <- curl::new_handle()
  curl::handle_setopt(handle, timeout = 60, connecttimeout = 10, followlocation = FALSE)
  headers <- list(Accept = "application/json", "User-Agent" = .user_agent())
  if (is.character(key) && length(key) == 1 && nzchar(trimws(key))) {
    headers[["Authorization"]] <- paste("Bearer", trimws(key))
  }
  do.call(curl::handle_setheaders, c(list(handle), headers))
  response <- tryCatch(curl::curl_fetch_memory(target, handle = handle), error = function(e) {
    stop(sprintf("glia_runs: cannot reach the query API at %s: %s", url, conditionMessage(e)), call. = FALSE)
  })
  text <- rawToChar(response$content)
  body <- tryCatch(jsonlite::fromJSON(text, simplifyVector = FALSE), error = function(e) NULL)
  status <- response$status_code
  if (status == 200 && is.list(body) && is.list(body$runs)) return(body)
  if (status == 200) stop(sprintf("glia_runs: %s%s did not answer as glia's query API", url, path), call. = FALSE)
  stop(sprintf("glia_runs: %s", .api_problem(status, body, key)), call. = FALSE)
}

.api_problem <- function(status, body, key) {
  detail <- if (is.list(body)) body$detail else NULL
  param <- NULL
  if (is.list(detail) && length(detail) && is.list(detail[[1]])) {
    loc <- detail[[1]]$loc
    param <- if (length(loc)) loc[[length(loc)]] else NULL
    detail <- detail[[1]]$msg
  }
  detail <- if (is.null(detail)) "no detail" else paste(as.character(detail), collapse = " ")
  if (status %in% c(401L, 403L)) {
    has_key <- is.character(key) && length(key) == 1 && nzchar(trimws(key))
    return(sprintf("the query API %s (%d: %s)", if (has_key) "refused the key in GLIA_API_KEY" else
                     "needs a read key: set GLIA_API_KEY (glia keys create NAME --scope read)", status, detail))
  }
  if (status == 422 && !is.null(param)) return(sprintf("%s: %s", param, detail))
  sprintf("the query API answered %d: %s", status, detail)
}

# The API's rows as a data.frame of .run_columns, typed; no rows gives the columns with no rows.
.runs_frame <- function(runs) {
  column <- function(name) {
    values <- lapply(runs, function(run) run[[name]])
    if (name == "attributes") {
      return(vapply(values, .attributes_json, character(1)))
    }
    missing <- vapply(values, is.null, logical(1))
    if (name %in% .run_doubles) {
      out <- rep(NA_real_, length(values))
      out[!missing] <- as.numeric(unlist(values[!missing]))
    } else if (name %in% .run_integers) {
      out <- rep(NA_integer_, length(values))
      out[!missing] <- as.integer(unlist(values[!missing]))
    } else if (name %in% .run_times) {
      out <- .parse_times(vapply(values, function(v) if (is.null(v)) NA_character_ else v, character(1)))
    } else {
      out <- rep(NA_character_, length(values))
      out[!missing] <- vapply(values[!missing], function(v) as.character(v)[[1]], character(1))
    }
    out
  }
  frame <- lapply(stats::setNames(.run_columns, .run_columns), column)
  as.data.frame(frame, stringsAsFactors = FALSE, check.names = FALSE)
}

.attributes_json <- function(value) {
  if (is.null(value) || length(value) == 0) return("{}")
  as.character(jsonlite::toJSON(value, auto_unbox = TRUE, digits = NA, null = "null"))
}

# ISO 8601 times as the API writes them (2026-11-02T18:53:26.290354+00:00, or Z) -> POSIXct in UTC.
.parse_times <- function(text) {
  out <- rep(NA_real_, length(text))
  given <- !is.na(text)
  m <- regmatches(text[given], regexec("^(.*?)(Z|([+-])([0-9]{2}):?([0-9]{2}))?$", text[given]))
  local <- vapply(m, function(x) x[[2]], character(1))
  offset <- vapply(m, function(x) {
    if (!nzchar(x[[4]])) return(0)
    (if (x[[4]] == "-") -1 else 1) * (as.numeric(x[[5]]) * 3600 + as.numeric(x[[6]]) * 60)
  }, numeric(1))
  base <- as.numeric(as.POSIXct(local, format = "%Y-%m-%dT%H:%M:%OS", tz = "UTC"))
  out[given] <- base - offset
  as.POSIXct(out, origin = "1970-01-01", tz = "UTC")
}
