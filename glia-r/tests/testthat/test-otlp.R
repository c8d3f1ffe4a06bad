test_that("a run's request follows the OTLP JSON rules", {
  out <- capture_requests(glia_track({
    glia_set(epochs = 10L, loss = 0.25, ok = TRUE, label = "a", tags = c("x", "y"),
             cfg = list(lr = 0.1, optim = list(name = "adam")), big = glia:::.int(2^40),
             missing = NA, nothing = NULL, factor = factor("lvl"), when = as.Date("2026-01-02"))
    42
  }, name = "unit"))
  expect_identical(out$value, 42)
  expect_length(out$requests, 1)
  request <- out$requests[[1]]
  expect_otlp_request(request)
  span <- span_of(request)
  expect_identical(span$name, "unit")
  expect_identical(span$kind, 1L)
  expect_identical(span$status$code, 0L)
  a <- attrs_of(span)
  expect_identical(a$epochs, list(intValue = "10"))
  expect_identical(a$loss, list(doubleValue = 0.25))
  expect_identical(a$ok, list(boolValue = TRUE))
  expect_identical(a$label, list(stringValue = "a"))
  expect_identical(a$tags$arrayValue$values, list(list(stringValue = "x"), list(stringValue = "y")))
  expect_identical(a[["cfg.lr"]], list(doubleValue = 0.1))
  expect_identical(a[["cfg.optim.name"]], list(stringValue = "adam"))
  expect_identical(a$big, list(intValue = "1099511627776"))
  expect_length(a$missing, 0)
  expect_false("nothing" %in% names(a))
  expect_identical(a$factor, list(stringValue = "lvl"))
  expect_identical(a$when, list(stringValue = "2026-01-02"))
  expect_identical(a[["glia.run.kind"]], list(stringValue = "block"))
  expect_identical(a[["process.exit.code"]], list(intValue = "0"))
})

test_that("the resource carries the contract's attributes", {
  out <- capture_requests(glia_track(1), env = c(OTEL_SERVICE_NAME = "svc"))
  r <- attrs_of(out$requests[[1]]$resourceSpans[[1]]$resource)
  expect_identical(r[["service.name"]]$stringValue, "svc")
  for (key in c("service.instance.id", "host.name", "host.arch", "os.type", "os.description",
                "process.executable.name", "process.executable.path", "process.owner",
                "process.working_directory", "process.runtime.version")) {
    expect_type(r[[key]]$stringValue, "character")
  }
  expect_identical(r[["process.runtime.name"]]$stringValue, "R")
  expect_identical(r[["process.pid"]]$intValue, as.character(Sys.getpid()))
  expect_match(r[["process.parent_pid"]]$intValue, "^[0-9]+$")
  expect_match(r[["service.instance.id"]]$stringValue, "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
  expect_type(r[["process.command_args"]]$arrayValue$values[[1]]$stringValue, "character")
})

test_that("special doubles and vectors with NA are encoded as protobuf JSON allows", {
  v <- glia:::.any_value
  expect_identical(v(NaN), list(doubleValue = "NaN"))
  expect_identical(v(Inf), list(doubleValue = "Infinity"))
  expect_identical(v(-Inf), list(doubleValue = "-Infinity"))
  expect_identical(v(c(1L, NA))$arrayValue$values[[2]], structure(list(), names = character()))
  expect_identical(v(glia:::.int(c(1, 2)))$arrayValue$values[[2]], list(intValue = "2"))
  expect_identical(v(list(1L, "a"))$arrayValue$values, list(list(intValue = "1"), list(stringValue = "a")))
  json <- glia:::.export_request_json(list(x = NaN), list())
  expect_match(json, '"doubleValue":"NaN"', fixed = TRUE)
})

test_that("timestamps are exact nanosecond strings", {
  t <- as.POSIXct(1700000000.123456, origin = "1970-01-01")
  ns <- glia:::.unix_nano(t)
  expect_match(ns, "^1700000000123456[0-9]{3}$")
  expect_identical(glia:::.add_nanos("1700000000999999999", 0.000000001), "1700000001000000000")
  expect_identical(glia:::.add_nanos("1700000000000000000", 2.5), "1700000002500000000")
  expect_identical(glia:::.add_nanos("1700000000000000000", -1), "1700000000000000000")
})

test_that("traceparent is parsed per W3C trace context", {
  p <- glia:::.parse_traceparent
  ok <- p("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
  expect_identical(ok, list(trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", span_id = "00f067aa0ba902b7"))
  expect_identical(p(" 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01 ")$span_id, "00f067aa0ba902b7")
  expect_null(p(NULL))
  expect_null(p("garbage"))
  expect_null(p("00-00000000000000000000000000000000-00f067aa0ba902b7-01"))
  expect_null(p("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"))
  expect_null(p("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
  expect_null(p("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"))
})

test_that("ids are random lowercase hex of the right length", {
  ids <- replicate(50, glia:::.new_span_id())
  expect_true(all(grepl("^[0-9a-f]{16}$", ids)))
  expect_identical(length(unique(ids)), 50L)
  expect_match(glia:::.new_trace_id(), "^[0-9a-f]{32}$")
})

test_that("making ids does not touch the user's random stream", {
  set.seed(1)
  a <- runif(1)
  set.seed(1)
  glia:::.new_trace_id()
  expect_identical(runif(1), a)
})
