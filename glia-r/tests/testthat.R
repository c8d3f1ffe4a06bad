library(testthat)
library(glia)

test_check("glia")
