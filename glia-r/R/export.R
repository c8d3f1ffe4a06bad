# Sending a request to the OTLP/HTTP endpoint within the export deadline, and spooling it when that fails.

# As in the Python client (glia_otel/_export.py): busy or down, and misconfigured (wrong key, path or proxy), are
# spooled and resent later; a body refused for what it is (400, 413, ...) is kept in the spool as `.rejected`.
.retryable_statuses <- c(429L, 502L, 503L, 504L)
.endpoint_problem_statuses <- c(401L, 403L, 404L, 405L, 407L, 408L)

#' POSTs one OTLP JSON request. Returns "sent", "spooled", "rejected" or "dropped"; never raises.
#' @noRd
.export <- function(body, settings) {
  outcome <- .post(body, settings)
  if (identical(outcome$result, "sent")) return("sent")
  if (identical(outcome$result, "rejected")) {
    path <- .spool_write(body, settings, rejected = TRUE)
    .log(sprintf("the endpoint %s rejected the run (HTTP %d: %s); kept as %s, 'glia flush --retry-rejected' resends it",
                 settings$endpoint, outcome$status, outcome$detail, if (is.null(path)) "nothing" else path))
    return(if (is.null(path)) "dropped" else "rejected")
  }
  path <- .spool_write(body, settings)
  if (is.null(path)) return("dropped")
  .log(sprintf("could not send the run to %s (%s); spooled to %s, 'glia flush' will resend it",
               settings$endpoint, outcome$detail, path))
  "spooled"
}

.post <- function(body, settings) {
  tryCatch({
    handle <- curl::new_handle()
    deadline <- max(1, round(settings$deadline_ms))
    curl::handle_setopt(handle,
      post = TRUE, postfields = body,
      timeout_ms = deadline, connecttimeout_ms = deadline,
      nosignal = TRUE, followlocation = FALSE
    )
    headers <- c(settings$headers, list("Content-Type" = "application/json", "User-Agent" = .user_agent()))
    do.call(curl::handle_setheaders, c(list(handle), headers))
    response <- curl::curl_fetch_memory(settings$endpoint, handle = handle)
    status <- response$status_code
    detail <- .response_detail(response)
    if (status >= 200 && status < 300) {
      .log_partial_success(detail)
      list(result = "sent", status = status, detail = detail)
    } else if (status %in% c(.retryable_statuses, .endpoint_problem_statuses)) {
      list(result = "retry", status = status, detail = sprintf("HTTP %d", status))
    } else {
      list(result = "rejected", status = status, detail = detail)
    }
  }, error = function(e) list(result = "retry", status = NA_integer_, detail = conditionMessage(e)))
}

.user_agent <- function() {
  paste0("glia-r/", as.character(utils::packageVersion("glia")))
}

.response_detail <- function(response) {
  text <- tryCatch(rawToChar(response$content), error = function(e) "")
  substr(text, 1, 500)
}

# The receiver answers 200 with partial_success when it could not store some spans; say so, once per message.
.log_partial_success <- function(detail) {
  parsed <- tryCatch(jsonlite::fromJSON(detail, simplifyVector = FALSE), error = function(e) NULL)
  rejected <- parsed$partialSuccess$rejectedSpans
  if (!is.null(rejected) && as.numeric(rejected) > 0) {
    .log(sprintf("the endpoint stored the request but rejected %s span(s): %s", rejected,
                 if (is.null(parsed$partialSuccess$errorMessage)) "" else parsed$partialSuccess$errorMessage))
  }
}

# A spool file name: traces-<unix-time-ns>-<pid>-<random hex>.json (docs/attributes.md). The signal comes first, as
# the Python client writes it, so `glia flush` posts the file to /v1/traces, and a client older than the logs signal
# skips it rather than post it anywhere else. (R only sends traces.)
.spool_name <- function(signal = "traces") {
  sprintf("%s-%s-%d-%s.json", signal, .unix_nano(Sys.time()), Sys.getpid(), .random_hex(4))
}

# The spool is resent by `glia flush` with the user's headers (an ingest key), so, as in glia_otel/_spool.py, R
# writes only into a directory of the user's own that no one else can write, and its files are 0600 from the start.
# R has no fstat on an open descriptor, so the directory is checked by its path just before each write; a directory
# only the user can write is one whose entries nobody else can change in between.

#' Why the spool directory must not be used, with how to fix it; NULL when it is the user's own.
#' @noRd
.spool_dir_problem <- function(dir) {
  # file.info() follows a symbolic link: what is checked is the directory written into. (R cannot look at the link
  # itself; the Python client also refuses a link owned by another user.)
  info <- file.info(dir, extra_cols = TRUE)
  if (is.na(info$isdir) || !info$isdir) stop(dir, " is not a directory")  # cannot be written: not unsafe
  me <- ps::ps_uids()[["effective"]]
  if (info$uid != me) {
    return(sprintf(paste0(
      "the spool directory %s belongs to %s (uid %d), not to you (%s, uid %d): files there would be sent with ",
      "your headers; set GLIA_SPOOL_DIR to a directory of your own, or remove it and glia creates it (mode 0700)"),
      dir, info$uname, info$uid, Sys.info()[["effective_user"]], me))
  }
  mode <- as.integer(info$mode)
  writable <- bitwAnd(mode, strtoi("22", 8L))
  if (writable != 0) {
    whom <- if (writable == strtoi("20", 8L)) "its group" else if (writable == 2L) "the world" else "its group and the world"
    return(sprintf(paste0(
      "the spool directory %s is writable by others (mode %s: %s can write): anyone who can write there could ",
      "plant requests sent with your headers, or links to your files; fix it with `chmod go-w %s` (glia creates ",
      "it 0700) or set GLIA_SPOOL_DIR to another"),
      dir, format(as.octmode(mode)), whom, dir))
  }
  NULL
}

# Writes `bytes` to a new file that is 0600 from the start (not chmod-ed after).
.write_private <- function(path, bytes) {
  old <- Sys.umask("077")
  on.exit(Sys.umask(old))
  con <- file(path, open = "wb")
  on.exit(close(con), add = TRUE)
  writeBin(bytes, con)
}

#' Writes a request body to the spool (tmp file, then rename); returns the path, or NULL when it cannot.
#' `rejected`: a body the endpoint refused, kept as `<name>.rejected` and not resent until asked.
#' @noRd
.spool_write <- function(body, settings, rejected = FALSE) {
  tryCatch({
    dir <- settings$spool_dir
    if (!dir.exists(dir)) dir.create(dir, recursive = TRUE, mode = "0700", showWarnings = FALSE)
    problem <- .spool_dir_problem(dir)
    if (!is.null(problem)) {
      .log_once(paste0("spool-unsafe:", dir), paste0(
        "will not use the spool: ", problem, ". Until then nothing is written to it: runs the endpoint cannot ",
        "take are lost"))
      return(NULL)
    }
    path <- file.path(dir, paste0(.spool_name(), if (rejected) ".rejected" else ""))
    tmp <- paste0(path, ".tmp")
    .write_private(tmp, charToRaw(enc2utf8(body)))
    if (!file.rename(tmp, path)) {
      unlink(tmp)
      stop("could not rename ", tmp)
    }
    .spool_trim(dir, settings$spool_max_bytes, keep = basename(path))
    path
  }, error = function(e) {
    .log(sprintf("could not send the run to %s nor spool it under %s (%s); the run is lost",
                 settings$endpoint, settings$spool_dir, conditionMessage(e)))
    NULL
  })
}

# Spool file names (docs/attributes.md): what the size bound may count and drop; anything else is not the client's.
# The signal prefix is optional: files of older clients (and of R before it wrote one) are traces.
.spool_file_pattern <- "^((traces|metrics|logs)-)?[0-9]+(-[^/]*)?\\.(pb|json)(\\.gz)?$"

# The time (ns, as a decimal string) a spool file name starts with, after its signal.
.spool_file_time <- function(files) {
  sub("^((traces|metrics|logs)-)?([0-9]+).*$", "\\3", files)
}

# Keeps the spool under its size bound by deleting the oldest files first (by the time in their names, whatever
# their signal). Only the spool's own regular files count and go: a link to a big file must not make real runs go,
# nor be followed.
.spool_trim <- function(dir, max_bytes, keep) {
  files <- list.files(dir, pattern = .spool_file_pattern)
  times <- .spool_file_time(files)
  # Equal-length decimal strings sort as numbers; pad so that a shorter one (an old clock) sorts first.
  files <- files[order(paste0(strrep("0", pmax(0L, 24L - nchar(times))), times), files)]
  paths <- file.path(dir, files)
  link <- Sys.readlink(paths)
  plain <- !is.na(link) & !nzchar(link) & !dir.exists(paths)
  files <- files[plain]
  sizes <- file.size(paths[plain])
  sizes[is.na(sizes)] <- 0
  total <- sum(sizes)
  dropped <- 0L
  for (i in seq_along(files)) {
    if (total <= max_bytes) break
    if (files[[i]] == keep) next
    if (unlink(file.path(dir, files[[i]])) == 0) {
      total <- total - sizes[[i]]
      dropped <- dropped + 1L
    }
  }
  if (dropped > 0) {
    .log_once("spool-full", sprintf("the spool %s is over its %.0f-byte limit (GLIA_SPOOL_MAX_BYTES); dropped the %d oldest run file(s)",
                                    dir, max_bytes, dropped))
  }
  invisible(dropped)
}
