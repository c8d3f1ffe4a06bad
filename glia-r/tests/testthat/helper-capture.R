# Runs `code` with the in-memory exporter and returns the OTLP requests it produced, parsed.
capture_requests <- function(code, env = character()) {
  bodies <- character()
  glia <- asNamespace("glia")
  state <- get(".glia", envir = glia)
  old <- state$exporter
  state$resource <- NULL
  on.exit(state$resource <- NULL, add = TRUE)
  state$exporter <- function(body) {
    bodies <<- c(bodies, body)
    "sent"
  }
  on.exit(state$exporter <- old, add = TRUE)
  if (length(env)) {
    saved <- Sys.getenv(names(env), unset = NA, names = TRUE)
    do.call(Sys.setenv, as.list(env))
    on.exit({
      for (key in names(saved)) if (is.na(saved[[key]])) Sys.unsetenv(key) else do.call(Sys.setenv, as.list(saved[key]))
    }, add = TRUE)
  }
  value <- tryCatch(code, error = function(e) e)
  list(value = value, bodies = bodies,
       requests = lapply(bodies, jsonlite::fromJSON, simplifyVector = FALSE))
}

# The single span of a request.
span_of <- function(request) request$resourceSpans[[1]]$scopeSpans[[1]]$spans[[1]]

# Span attributes as a named list of AnyValue objects.
attrs_of <- function(x) {
  kvs <- if (!is.null(x$attributes)) x$attributes else x
  stats::setNames(lapply(kvs, `[[`, "value"), vapply(kvs, `[[`, "", "key"))
}

with_env <- function(env, code) {
  saved <- Sys.getenv(names(env), unset = NA, names = TRUE)
  do.call(Sys.setenv, as.list(env))
  on.exit(for (key in names(saved)) {
    if (is.na(saved[[key]])) Sys.unsetenv(key) else do.call(Sys.setenv, as.list(saved[key]))
  })
  code
}

mib <- 1024^2
