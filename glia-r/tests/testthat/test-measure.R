skip_if_no_proc <- function() {
  skip_if_not(file.exists("/proc/self/status"), "no /proc")
}

run_attrs <- function(code) {
  out <- capture_requests(code)
  lapply(out$requests, function(r) attrs_of(span_of(r)))
}

allocate <- function(bytes) {
  x <- rep(1, bytes / 8)
  length(x)
}

number <- function(value) as.numeric(value[[1]])

test_that("the peak RSS of a 200 MiB allocation is measured by resetting VmHWM", {
  skip_if_no_proc()
  invisible(gc())
  before <- glia:::.rss_bytes()
  a <- run_attrs(glia_track(allocate(200 * mib)))[[1]]
  invisible(gc())
  expect_identical(a[["glia.memory.peak_rss_method"]]$stringValue, "hwm-reset")
  peak <- number(a[["glia.memory.peak_rss_bytes"]])
  expect_gt(peak, 200 * mib)
  expect_lt(abs((peak - before) - 200 * mib), 0.1 * 200 * mib)
})

test_that("an inner run's reset does not hide the outer run's earlier peak", {
  skip_if_no_proc()
  invisible(gc())
  before <- glia:::.rss_bytes()
  spans <- run_attrs(glia_track({
    allocate(300 * mib)
    invisible(gc())
    glia_track(allocate(50 * mib), name = "inner")
  }, name = "outer"))
  inner <- number(spans[[1]][["glia.memory.peak_rss_bytes"]])
  outer <- number(spans[[2]][["glia.memory.peak_rss_bytes"]])
  expect_lt(abs((outer - before) - 300 * mib), 0.1 * 300 * mib)
  expect_lt(inner, outer - 150 * mib)
  expect_gt(inner - before, 40 * mib)
})

test_that("an inner run's peak counts for the outer run after a later reset", {
  skip_if_no_proc()
  invisible(gc())
  before <- glia:::.rss_bytes()
  spans <- run_attrs(glia_track({
    glia_track(allocate(250 * mib), name = "first")
    invisible(gc())
    glia_track(1, name = "second")
  }, name = "outer"))
  outer <- number(spans[[3]][["glia.memory.peak_rss_bytes"]])
  expect_gt(outer - before, 0.9 * 250 * mib)
})

test_that("without /proc the method says the RSS was sampled", {
  state <- get(".glia", envir = asNamespace("glia"))
  old <- state$memory_method
  state$memory_method <- "sampled"
  on.exit(state$memory_method <- old)
  a <- run_attrs(glia_track(glia_set(x = 1)))[[1]]
  expect_identical(a[["glia.memory.peak_rss_method"]]$stringValue, "sampled")
  expect_gt(number(a[["glia.memory.peak_rss_bytes"]]), 10 * mib)
})

test_that("CPU time counts the process and its children", {
  # Burn a fixed amount of CPU (not wall) time, so a loaded machine cannot make the test flaky.
  busy <- function(seconds) {
    cpu <- function() sum(proc.time()[c("user.self", "sys.self")])
    t0 <- cpu()
    while (cpu() - t0 < seconds) sum(runif(1000))
  }
  out <- capture_requests(glia_track(busy(0.3)))
  span <- span_of(out$requests[[1]])
  a <- attrs_of(span)
  cpu <- a[["glia.cpu.user_seconds"]]$doubleValue + a[["glia.cpu.system_seconds"]]$doubleValue
  expect_gte(cpu, 0.29)
  wall <- (as.numeric(span$endTimeUnixNano) - as.numeric(span$startTimeUnixNano)) / 1e9
  expect_equal(a[["glia.cpu.percent"]]$doubleValue, 100 * cpu / wall, tolerance = 0.01)
  skip_if_not(nzchar(Sys.which("sh")))
  a <- run_attrs(glia_track(system2("sh", c("-c", shQuote("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")))))[[1]]
  expect_gt(a[["glia.cpu.user_seconds"]]$doubleValue + a[["glia.cpu.system_seconds"]]$doubleValue, 0.05)
})

test_that("I/O bytes written are counted", {
  skip_if_not(file.exists("/proc/self/io"), "no /proc/self/io")
  path <- tempfile()
  on.exit(unlink(path))
  a <- run_attrs(glia_track(writeBin(as.raw(rep(1:255, length.out = 20 * mib)), path)))[[1]]
  written <- number(a[["glia.io.write_bytes"]])
  expect_gte(written, 19 * mib)
  expect_match(a[["glia.io.read_bytes"]]$intValue, "^[0-9]+$")
})

test_that("wall time is the span's duration", {
  out <- capture_requests(glia_track(Sys.sleep(0.3)))
  span <- span_of(out$requests[[1]])
  duration <- (as.numeric(span$endTimeUnixNano) - as.numeric(span$startTimeUnixNano)) / 1e9
  expect_gt(duration, 0.29)
  expect_lt(duration, 1)
  expect_lt(attrs_of(span)[["glia.cpu.percent"]]$doubleValue, 30)
})

# The accuracy table: a run's peak is the process's peak RSS during the run (its VmHWM since the run began, all of the
# process's memory included), checked against VmHWM read by the test at the run's end.
vm_hwm <- function() glia:::.status_bytes("VmHWM")

peak_against_hwm <- function(bytes) {
  seen <- new.env()
  a <- run_attrs(glia_track({
    x <- rep(1, bytes / 8)
    seen$hwm <- vm_hwm()
    length(x)
  }))[[1]]
  list(peak = number(a[[ "glia.memory.peak_rss_bytes" ]]), hwm = seen$hwm, attrs = a)
}

for (size_mib in c(1, 20, 200)) {
  test_that(sprintf("the peak of a %d MiB allocation is VmHWM at the run's end, within 1 MiB", size_mib), {
    skip_if_no_proc()
    invisible(gc())
    got <- peak_against_hwm(size_mib * mib)
    expect_identical(got$attrs[["glia.memory.peak_rss_method"]]$stringValue, "hwm-reset")
    expect_lt(abs(got$peak - got$hwm), 1 * mib)
    start <- number(got$attrs[["glia.memory.start_rss_bytes"]])
    expect_gte(got$peak, start)
    # Above glibc's largest mmap threshold (32 MiB) an allocation is always fresh memory, so the run adds exactly it;
    # a smaller one may reuse pages the process already had (the peak is still the process's, and exact).
    if (size_mib > 32) expect_lt(abs((got$peak - start) - size_mib * mib), 0.05 * size_mib * mib)
  })
}

test_that("a 20 MiB run in a process holding 300 MiB reports the process's peak during the run", {
  skip_if_no_proc()
  spike <- rep(1, 500 * mib / 8)  # the process peaks higher before the run...
  held <- rep(1, 300 * mib / 8)
  rm(spike)
  invisible(gc())                  # ...and holds 300 MiB when it begins
  got <- peak_against_hwm(20 * mib)
  expect_lt(abs(got$peak - got$hwm), 1 * mib)
  start <- number(got$attrs[["glia.memory.start_rss_bytes"]])
  expect_gt(start, 300 * mib)
  expect_gte(got$peak, start)
  expect_lt(got$peak, start + 40 * mib)  # not the earlier 800 MiB
  expect_gt(length(held), 0)
})

test_that("nested runs each report their own peak against VmHWM", {
  skip_if_no_proc()
  invisible(gc())
  seen <- new.env()
  spans <- run_attrs(glia_track({
    tmp <- rep(1, 80 * mib / 8)
    rm(tmp)
    invisible(gc())
    seen$before_inner <- vm_hwm()
    glia_track({
      small <- rep(1, 20 * mib / 8)
      seen$inner_end <- vm_hwm()
      length(small)
    }, name = "inner")
    seen$outer_end <- vm_hwm()
  }, name = "outer"))
  inner <- number(spans[[1]][["glia.memory.peak_rss_bytes"]])
  outer <- number(spans[[2]][["glia.memory.peak_rss_bytes"]])
  expect_lt(abs(inner - seen$inner_end), 1 * mib)
  expect_lt(abs(outer - max(seen$before_inner, seen$inner_end, seen$outer_end)), 1 * mib)
  expect_lt(inner, outer - 40 * mib)
})
