# Per-process state: the open runs (innermost last), the resource attributes (computed once), the peak-RSS method
# (probed once) and which warnings were already printed. Created empty at load; filled on first use.
.glia <- new.env(parent = emptyenv())
.glia$open <- list()
.glia$resource <- NULL
.glia$memory_method <- NULL
.glia$logged <- character()
.glia$global_handler <- FALSE
.glia$exit_guard <- NULL
# In-memory exporter for tests: a function taking the JSON body instead of sending it.
.glia$exporter <- NULL

# Telemetry problems go to stderr directly rather than through message()/warning(): a condition could reach the
# user's own handlers, and the client must never change how the user's code behaves.
.log <- function(text) {
  try(cat("glia: ", text, "\n", sep = "", file = stderr()), silent = TRUE)
  invisible(NULL)
}

.log_once <- function(key, text) {
  if (key %in% .glia$logged) return(invisible(NULL))
  .glia$logged <- c(.glia$logged, key)
  .log(text)
}

# Runs `expr`; on any error logs it once under `key` and returns `fallback`. Every entry point goes through this so
# telemetry never raises into user code.
.safely <- function(expr, key, fallback = NULL) {
  tryCatch(expr, error = function(e) {
    .log_once(key, paste0(key, " failed: ", conditionMessage(e)))
    fallback
  })
}
