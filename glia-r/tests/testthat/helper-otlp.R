# Checks a parsed OTLP/HTTP JSON ExportTraceServiceRequest against the OTLP JSON rules: lowerCamelCase fields,
# hex ids, integer enums, 64-bit integers (and nanosecond times) as decimal strings, one value type per AnyValue.
expect_otlp_any_value <- function(value) {
  types <- c("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue")
  expect_true(length(value) <= 1, info = "an AnyValue holds one value")
  if (!length(value)) return(invisible())
  type <- names(value)
  expect_true(type %in% types, info = type)
  v <- value[[1]]
  switch(type,
    stringValue = expect_type(v, "character"),
    boolValue = expect_type(v, "logical"),
    intValue = expect_match(v, "^-?[0-9]+$"),
    doubleValue = expect_true(is.numeric(v) || v %in% c("NaN", "Infinity", "-Infinity")),
    arrayValue = for (item in v$values) expect_otlp_any_value(item),
    kvlistValue = for (kv in v$values) expect_otlp_key_value(kv),
    bytesValue = expect_type(v, "character")
  )
}

expect_otlp_key_value <- function(kv) {
  expect_setequal(names(kv), c("key", "value"))
  expect_type(kv$key, "character")
  expect_otlp_any_value(kv$value)
}

expect_otlp_request <- function(request) {
  expect_identical(names(request), "resourceSpans")
  for (rs in request$resourceSpans) {
    expect_true(all(names(rs) %in% c("resource", "scopeSpans", "schemaUrl")))
    for (kv in rs$resource$attributes) expect_otlp_key_value(kv)
    for (ss in rs$scopeSpans) {
      expect_true(all(names(ss) %in% c("scope", "spans", "schemaUrl")))
      expect_type(ss$scope$name, "character")
      for (span in ss$spans) {
        expect_true(all(names(span) %in% c(
          "traceId", "spanId", "parentSpanId", "traceState", "name", "kind", "startTimeUnixNano",
          "endTimeUnixNano", "attributes", "events", "links", "status", "flags",
          "droppedAttributesCount", "droppedEventsCount", "droppedLinksCount"
        )))
        expect_match(span$traceId, "^[0-9a-f]{32}$")
        expect_match(span$spanId, "^[0-9a-f]{16}$")
        if (!is.null(span$parentSpanId)) expect_match(span$parentSpanId, "^[0-9a-f]{16}$")
        expect_type(span$kind, "integer")
        expect_true(span$kind %in% 0:5)
        expect_match(span$startTimeUnixNano, "^[0-9]{19}$")
        expect_match(span$endTimeUnixNano, "^[0-9]{19}$")
        expect_true(as.numeric(span$endTimeUnixNano) >= as.numeric(span$startTimeUnixNano))
        for (kv in span$attributes) expect_otlp_key_value(kv)
        for (event in span$events) {
          expect_match(event$timeUnixNano, "^[0-9]{19}$")
          expect_type(event$name, "character")
          for (kv in event$attributes) expect_otlp_key_value(kv)
        }
        expect_type(span$status$code, "integer")
        expect_true(span$status$code %in% 0:2)
      }
    }
  }
}
