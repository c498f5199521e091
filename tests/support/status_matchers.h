// Assertions on Status and Result<T> that print the error when they fail.
//
//   ASSERT_OK(engine.initial_sync());
//   EXPECT_OK(parse_hello(wire)) << "while parsing the sample";
//
// A bare ASSERT_TRUE(s.is_ok()) says only "false"; a failure under load in CI
// then cannot be told from any other. These print the code and message
// ("Actual: false (timeout: guest held an Update open ...)"). The expression is
// evaluated once. Header-only; any test may include it.
#pragma once

#include <gtest/gtest.h>

#include "common/status.h"

namespace romulus::testing {

inline ::testing::AssertionResult IsOk(const Status& s) {
  if (s.is_ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << s.to_string();
}

template <typename T>
::testing::AssertionResult IsOk(const Result<T>& r) {
  return IsOk(r.status());
}

}  // namespace romulus::testing

#define ASSERT_OK(expr) ASSERT_TRUE(::romulus::testing::IsOk(expr))
#define EXPECT_OK(expr) EXPECT_TRUE(::romulus::testing::IsOk(expr))
