# Resource attributes: one set per process, computed on the first run and reused.

.arch_names <- c(
  x86_64 = "amd64", amd64 = "amd64", i386 = "x86", i686 = "x86", aarch64 = "arm64", arm64 = "arm64",
  arm = "arm32", armv7l = "arm32", ppc64 = "ppc64", ppc64le = "ppc64", s390x = "s390x"
)

# The script R is running, from commandArgs(): `Rscript x.R` gives `--file=x.R`, `R -f x.R` gives `-f x.R`.
.script_path <- function(args = commandArgs(trailingOnly = FALSE)) {
  args <- args[seq_len(match("--args", args, nomatch = length(args) + 1L) - 1L)]
  path <- NULL
  file_arg <- grep("^--file=", args, value = TRUE)
  if (length(file_arg)) {
    path <- sub("^--file=", "", file_arg[[1]])
  } else {
    f <- match("-f", args)
    if (!is.na(f) && f < length(args)) path <- args[[f + 1L]]
  }
  if (is.null(path) || !nzchar(path) || path == "-" || !file.exists(path)) return(NULL)
  normalizePath(path, mustWork = FALSE)
}

.sha256_file <- function(path) {
  digest::digest(file = path, algo = "sha256")
}

.os_description <- function(info) {
  if (file.exists("/etc/os-release")) {
    lines <- readLines("/etc/os-release", warn = FALSE)
    pretty <- grep("^PRETTY_NAME=", lines, value = TRUE)
    if (length(pretty)) return(gsub("^PRETTY_NAME=\"?|\"$", "", pretty[[1]]))
  }
  paste(info[["sysname"]], info[["release"]])
}

.uuid4 <- function() {
  bytes <- .random_bytes(16)
  bytes[7] <- as.raw(bitwOr(bitwAnd(as.integer(bytes[7]), 0x0f), 0x40))
  bytes[9] <- as.raw(bitwOr(bitwAnd(as.integer(bytes[9]), 0x3f), 0x80))
  hex <- paste(format(bytes), collapse = "")
  paste(substring(hex, c(1, 9, 13, 17, 21), c(8, 12, 16, 20, 32)), collapse = "-")
}

#' Computes the resource attributes of this process as a named list (attribute -> value).
#' @noRd
.compute_resource <- function(settings) {
  info <- Sys.info()
  args <- commandArgs(trailingOnly = FALSE)
  script <- .script_path(args)
  attrs <- list()
  add <- function(key, value) {
    value <- tryCatch(value, error = function(e) NULL)
    if (!is.null(value) && length(value) && !all(is.na(value))) attrs[[key]] <<- value
  }
  service <- .env("OTEL_SERVICE_NAME")
  if (is.null(service) && !is.null(script)) service <- tools::file_path_sans_ext(basename(script))
  add("service.name", if (is.null(service)) "R" else service)
  add("service.instance.id", .uuid4())
  add("telemetry.sdk.name", "glia")
  add("telemetry.sdk.language", "r")
  add("telemetry.sdk.version", as.character(utils::packageVersion("glia")))
  add("host.name", info[["nodename"]])
  machine <- info[["machine"]]
  add("host.arch", if (machine %in% names(.arch_names)) .arch_names[[machine]] else machine)
  add("os.type", tolower(info[["sysname"]]))
  add("os.description", .os_description(info))
  add("process.pid", Sys.getpid())
  add("process.parent_pid", ps::ps_ppid(ps::ps_handle()))
  exe <- tryCatch(ps::ps_exe(ps::ps_handle()), error = function(e) file.path(R.home("bin"), "R"))
  add("process.executable.name", basename(exe))
  add("process.executable.path", exe)
  if (settings$record_args) add("process.command_args", .redact_args(args))
  add("process.owner", info[["effective_user"]])
  add("process.working_directory", getwd())
  add("process.runtime.name", "R")
  add("process.runtime.version", paste(R.version$major, R.version$minor, sep = "."))
  add("process.runtime.description", paste0(R.version.string, " (", R.version$platform, ")"))
  if (!is.null(script)) {
    add("glia.script.path", script)
    add("glia.script.sha256", .sha256_file(script))
  }
  extra <- .parse_key_values(.env("OTEL_RESOURCE_ATTRIBUTES"))
  # The scheduler's context (scheduler.R), where OTEL_RESOURCE_ATTRIBUTES does not say otherwise.
  scheduler <- tryCatch(.scheduler_attributes(given = extra), error = function(e) list())
  for (key in setdiff(names(scheduler), names(extra))) attrs[[key]] <- scheduler[[key]]
  # OTEL_RESOURCE_ATTRIBUTES adds to, but does not replace, what was measured (OTEL_SERVICE_NAME wins already).
  for (key in names(extra)) {
    if (is.null(attrs[[key]])) attrs[[key]] <- extra[[key]]
  }
  attrs
}

.resource <- function(settings) {
  if (is.null(.glia$resource)) .glia$resource <- .compute_resource(settings)
  .glia$resource
}
