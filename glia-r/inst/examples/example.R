# An R script tracked by glia: one run for the whole script, a nested run for the model fit.
#
#   Rscript example.R [--alloc-mib N] [--fail]
#
# Sends to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318); run it under `glia run -- Rscript
# example.R` and its run becomes a child of the command's run.
library(glia)

args <- commandArgs(trailingOnly = TRUE)
option <- function(flag, default) {
  i <- match(flag, args)
  if (is.na(i) || i == length(args)) default else args[[i + 1L]]
}
alloc_mib <- as.numeric(option("--alloc-mib", "200"))

tr <- glia_tracker("example", attrs = list(dataset = "cars"))

# The script's memory peak: a vector of alloc_mib MiB, touched in full.
x <- rep(1, alloc_mib * 1024^2 / 8)
glia_set(tr, n = length(x), config = list(lr = 0.01, optimizer = "adam"), tags = c("r", "e2e"))
rm(x)
invisible(gc())

fit <- glia_track(lm(dist ~ speed, data = cars), name = "fit", attrs = list(model = "lm"))
glia_set(tr, slope = unname(coef(fit)[["speed"]]))

if ("--fail" %in% args) stop("failing on purpose")

glia_stop(tr)
