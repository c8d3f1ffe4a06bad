test_that("glia_track returns the value and sends one block span", {
  out <- capture_requests(glia_track(sum(1:10), name = "b", attrs = list(k = "v")))
  expect_identical(out$value, 55L)
  span <- span_of(out$requests[[1]])
  expect_null(span$parentSpanId)
  expect_identical(attrs_of(span)$k$stringValue, "v")
  expect_identical(attrs_of(span)[["glia.run.kind"]]$stringValue, "block")
})

test_that("an error marks the run ERROR and propagates unchanged", {
  cond <- structure(class = c("my_error", "error", "condition"), list(message = "it broke", call = NULL))
  out <- capture_requests(glia_track(stop(cond), name = "fails"))
  expect_identical(out$value, cond)
  span <- span_of(out$requests[[1]])
  expect_identical(span$status$code, 2L)
  expect_identical(span$status$message, "my_error: it broke")
  expect_identical(attrs_of(span)[["process.exit.code"]]$intValue, "1")
  event <- span$events[[1]]
  expect_identical(event$name, "exception")
  ea <- attrs_of(event)
  expect_identical(ea[["exception.type"]]$stringValue, "my_error")
  expect_identical(ea[["exception.message"]]$stringValue, "it broke")
  expect_match(ea[["exception.stacktrace"]]$stringValue, "^my_error: it broke")
  expect_otlp_request(out$requests[[1]])
})

test_that("errors caught inside the run leave it OK", {
  out <- capture_requests(glia_track(tryCatch(stop("inner"), error = function(e) "handled")))
  expect_identical(out$value, "handled")
  expect_identical(span_of(out$requests[[1]])$status$code, 0L)
})

test_that("nested runs are parent and child in one trace", {
  out <- capture_requests(glia_track(glia_track(1, name = "inner"), name = "outer"))
  expect_length(out$requests, 2)
  inner <- span_of(out$requests[[1]])
  outer <- span_of(out$requests[[2]])
  expect_identical(inner$name, "inner")
  expect_identical(inner$traceId, outer$traceId)
  expect_identical(inner$parentSpanId, outer$spanId)
})

test_that("TRACEPARENT makes the root run a child, and children of the run see the run", {
  parent <- "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
  seen <- NULL
  out <- capture_requests(glia_track(seen <- Sys.getenv("TRACEPARENT")), env = c(TRACEPARENT = parent))
  span <- span_of(out$requests[[1]])
  expect_identical(span$traceId, "4bf92f3577b34da6a3ce929d0e0e4736")
  expect_identical(span$parentSpanId, "00f067aa0ba902b7")
  expect_identical(seen, sprintf("00-%s-%s-01", span$traceId, span$spanId))
})

test_that("glia_tracker/glia_set/glia_stop record a run once", {
  out <- capture_requests({
    tr <- glia_tracker("script", attrs = list(a = 1L))
    glia_set(tr, b = "two")
    glia_set(tr, list(c = TRUE))
    glia_set(d = 4.5)
    glia_stop(tr)
    glia_stop(tr)
    glia_set(tr, late = 1)
    tr
  })
  expect_length(out$requests, 1)
  a <- attrs_of(span_of(out$requests[[1]]))
  expect_identical(a$a$intValue, "1")
  expect_identical(a$b$stringValue, "two")
  expect_identical(a$c$boolValue, TRUE)
  expect_identical(a$d$doubleValue, 4.5)
  expect_false("late" %in% names(a))
  expect_output(print(out$value), "glia run 'script' stopped")
})

test_that("custom values cannot overwrite measured ones", {
  out <- capture_requests(glia_track(glia_set(glia.run.kind = "x", glia.cpu.percent = -1)))
  a <- attrs_of(span_of(out$requests[[1]]))
  expect_identical(a[["glia.run.kind"]]$stringValue, "block")
  expect_true(a[["glia.cpu.percent"]]$doubleValue >= 0)
})

test_that("glia_wrap tracks each call as a function run", {
  add <- function(x, y = 2) x + y
  tracked <- glia_wrap(add)
  out <- capture_requests(c(tracked(1), tracked(1, y = 5)))
  expect_identical(out$value, c(3, 6))
  expect_length(out$requests, 2)
  span <- span_of(out$requests[[1]])
  expect_identical(span$name, "add")
  expect_identical(attrs_of(span)[["glia.run.kind"]]$stringValue, "function")
  failing <- glia_wrap(function() stop("nope"), name = "f")
  out <- capture_requests(failing())
  expect_s3_class(out$value, "simpleError")
  expect_identical(span_of(out$requests[[1]])$status$code, 2L)
})

test_that("GLIA_DISABLED and OTEL_SDK_DISABLED turn the client into a no-op", {
  for (var in c("GLIA_DISABLED", "OTEL_SDK_DISABLED")) {
    env <- stats::setNames("true", var)
    out <- capture_requests({
      tr <- glia_tracker("x")
      glia_set(tr, a = 1)
      glia_stop(tr)
      glia_track(7)
    }, env = env)
    expect_identical(out$value, 7)
    expect_length(out$requests, 0)
  }
})

test_that("a failing exporter never reaches the user's code", {
  state <- get(".glia", envir = asNamespace("glia"))
  old <- state$exporter
  state$exporter <- function(body) stop("exporter exploded")
  on.exit(state$exporter <- old)
  expect_identical(suppressMessages(glia_track(5)), 5)
  expect_length(state$open, 0)
})
