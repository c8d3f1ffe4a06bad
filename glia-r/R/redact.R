# Command lines may carry secrets (the semantic conventions advise sanitizing process.command_args). This is the
# Python client's rule (glia_otel/_redact.py), kept identical so both clients store the same thing. A value is
# replaced by [REDACTED] when:
#   1. it follows, or is attached with `=` to, a flag whose name contains a secret word: password, passwd, pwd,
#      token, secret, apikey/api-key/api_key, access-key, private-key, credential(s), auth
#      (`--password x`, `--db-password=x`, `-token x`);
#   2. it is a NAME=VALUE assignment whose NAME (case-insensitive) ends in _KEY, _TOKEN, _SECRET, _PASSWORD,
#      _PASSWD, _PWD or _CREDENTIALS, or contains PASSWORD/SECRET/TOKEN (`AWS_SECRET_ACCESS_KEY=...`);
#   3. it is a URL with a password (`scheme://user:secret@host`): the password part only.

.redacted <- "[REDACTED]"
.secret_flag_pattern <- paste0(
  "^--?[A-Za-z0-9_.-]*(pass(word|wd)?|pwd|token|secret|api[-_]?key|access[-_]?key|private[-_]?key",
  "|credentials?|auth)[A-Za-z0-9_.-]*$"
)
.secret_assignment_pattern <- paste0(
  "^[A-Za-z_][A-Za-z0-9_.-]*(_key|_token|_secret|_password|_passwd|_pwd|_credentials",
  "|password|secret|token)[A-Za-z0-9_]*$"
)
.url_password_pattern <- "([A-Za-z][A-Za-z0-9+.-]*://[^/@:\\s]*:)([^/@\\s]+)(@)"

.is_secret_flag <- function(flag) {
  grepl(.secret_flag_pattern, flag, ignore.case = TRUE, perl = TRUE)
}

#' Redacts secret values from a character vector of command-line arguments.
#' @noRd
.redact_args <- function(args) {
  args <- as.character(args)
  out <- character(length(args))
  redact_next <- FALSE
  for (i in seq_along(args)) {
    arg <- args[[i]]
    if (redact_next) {
      out[[i]] <- .redacted
      redact_next <- FALSE
      next
    }
    eq <- regexpr("=", arg, fixed = TRUE)
    name <- if (eq > 0) substr(arg, 1, eq - 1) else arg
    if (startsWith(arg, "-") && arg != "--") {
      if (.is_secret_flag(name)) {
        if (eq > 0) out[[i]] <- paste0(name, "=", .redacted) else {
          out[[i]] <- arg
          redact_next <- TRUE
        }
        next
      }
    } else if (eq > 0 && grepl(.secret_assignment_pattern, name, ignore.case = TRUE, perl = TRUE)) {
      out[[i]] <- paste0(name, "=", .redacted)
      next
    }
    out[[i]] <- gsub(.url_password_pattern, paste0("\\1", .redacted, "\\3"), arg, perl = TRUE)
  }
  out
}
