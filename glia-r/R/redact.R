# Command lines may carry secrets (the semantic conventions advise sanitizing process.command_args). The rule,
# shared with the Python client:
#   * a flag whose name ends in password, passwd, token, secret, api-key or apikey (case-insensitive, `_` counts
#     as `-`, one or two leading dashes): its value is replaced, whether given as `--flag=value` or as the next
#     argument (`--flag value`);
#   * an assignment `NAME=value` whose NAME ends in _KEY, _TOKEN, _PASSWORD or _SECRET (case-insensitive): the
#     value is replaced.
# The replacement is the literal string REDACTED.

.redacted <- "REDACTED"
.secret_flag_pattern <- "^--?([a-z0-9]+-)*(password|passwd|token|secret|api-key|apikey)$"
.secret_assignment_pattern <- "^[A-Za-z_][A-Za-z0-9_]*_(key|token|password|secret)$"

.is_secret_flag <- function(name) {
  grepl(.secret_flag_pattern, gsub("_", "-", tolower(name)))
}

#' Redacts secret values from a character vector of command-line arguments.
#' @noRd
.redact_args <- function(args) {
  args <- as.character(args)
  out <- args
  redact_next <- FALSE
  for (i in seq_along(args)) {
    arg <- args[[i]]
    if (redact_next) {
      out[[i]] <- .redacted
      redact_next <- FALSE
      next
    }
    eq <- regexpr("=", arg, fixed = TRUE)
    if (eq > 1) {
      name <- substr(arg, 1, eq - 1)
      if (.is_secret_flag(name) || grepl(.secret_assignment_pattern, name, ignore.case = TRUE)) {
        out[[i]] <- paste0(name, "=", .redacted)
      }
    } else if (.is_secret_flag(arg)) {
      redact_next <- TRUE
    }
  }
  out
}
