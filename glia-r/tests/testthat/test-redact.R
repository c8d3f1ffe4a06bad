test_that("values of secret flags are redacted, separate or after =", {
  r <- glia:::.redact_args
  expect_identical(r(c("x.R", "--password", "p", "--n", "3")), c("x.R", "--password", "[REDACTED]", "--n", "3"))
  expect_identical(r(c("--token=abc", "--api-key", "k", "--api_key=k", "-secret", "s")),
                   c("--token=[REDACTED]", "--api-key", "[REDACTED]", "--api_key=[REDACTED]", "-secret", "[REDACTED]"))
  expect_identical(r(c("--db-password=x", "--Auth-Token", "t", "--passwd", "p", "--credentials=c")),
                   c("--db-password=[REDACTED]", "--Auth-Token", "[REDACTED]", "--passwd", "[REDACTED]",
                     "--credentials=[REDACTED]"))
})

test_that("NAME_KEY= style assignments are redacted", {
  r <- glia:::.redact_args
  expect_identical(r(c("AWS_SECRET_ACCESS_KEY=abc", "GH_TOKEN=t", "DB_PASSWORD=p", "MY_SECRET=s", "api_key=z")),
                   c("AWS_SECRET_ACCESS_KEY=[REDACTED]", "GH_TOKEN=[REDACTED]", "DB_PASSWORD=[REDACTED]",
                     "MY_SECRET=[REDACTED]", "api_key=[REDACTED]"))
})

test_that("passwords in URLs are redacted, the rest of the URL kept", {
  r <- glia:::.redact_args
  expect_identical(r(c("postgresql://me:hunter2@db/x", "--url=https://u:p@h/path")),
                   c("postgresql://me:[REDACTED]@db/x", "--url=https://u:[REDACTED]@h/path"))
})

test_that("ordinary arguments are left alone", {
  r <- glia:::.redact_args
  args <- c("--n", "5", "--keyfile", "k", "KEYBOARD=1", "--sort-key", "name", "--file=x.R", "token", "--",
            "https://host/path")
  expect_identical(r(args), args)
  expect_identical(r(c("--password")), "--password")
})

test_that("GLIA_RECORD_ARGS=false leaves the arguments out", {
  on <- glia:::.compute_resource(list(record_args = TRUE))
  off <- glia:::.compute_resource(list(record_args = FALSE))
  expect_true("process.command_args" %in% names(on))
  expect_false("process.command_args" %in% names(off))
  with_env(c(GLIA_RECORD_ARGS = "false"), expect_false(glia:::.settings()$record_args))
})
