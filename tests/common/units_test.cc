// Durations and sizes as operators type them: what each reader accepts
// (a bare number is milliseconds for a duration, bytes for a size), its
// errors, and that what the writers print reads back to the same value.
#include "common/units.h"

#include <gtest/gtest.h>

#include "tests/support/status_matchers.h"

namespace romulus::common::units_test {
namespace {

using std::chrono::microseconds;

TEST(Units, ADurationTakesItsUnitAndABareNumberIsMilliseconds) {
  EXPECT_EQ(*parse_duration("50ms"), microseconds(50'000));
  EXPECT_EQ(*parse_duration("50"), microseconds(50'000));
  EXPECT_EQ(*parse_duration("250us"), microseconds(250));
  EXPECT_EQ(*parse_duration("1.5s"), microseconds(1'500'000));
  EXPECT_EQ(*parse_duration("2m"), microseconds(120'000'000));
  EXPECT_EQ(*parse_duration("2MIN"), microseconds(120'000'000));
  EXPECT_EQ(*parse_duration("0"), microseconds(0));
}

TEST(Units, ADurationItCannotReadIsRefusedQuotingTheText) {
  EXPECT_EQ(parse_duration("banana").status().message(), "'banana' is not a duration (try 50ms)");
  EXPECT_EQ(parse_duration("").status().message(), "'' is not a duration (try 50ms)");
  EXPECT_EQ(parse_duration("-1ms").status().message(), "'-1ms' is not a duration (try 50ms)");
  EXPECT_EQ(parse_duration(".").status().message(), "'.' is not a duration (try 50ms)");
  EXPECT_EQ(parse_duration("5parsecs").status().message(),
            "'5parsecs': unknown unit 'parsecs' (use us, ms, s)");
}

TEST(Units, ASizeTakesABinaryUnitAndABareNumberIsBytes) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("512k"), 512u << 10);
  EXPECT_EQ(*parse_size("64M"), uint64_t{64} << 20);
  EXPECT_EQ(*parse_size("64MiB"), uint64_t{64} << 20);
  EXPECT_EQ(*parse_size("64mb"), uint64_t{64} << 20);
  EXPECT_EQ(*parse_size("1G"), uint64_t{1} << 30);
  EXPECT_EQ(*parse_size("2T"), uint64_t{2} << 40);
  EXPECT_EQ(*parse_size("7b"), 7u);
}

TEST(Units, ASizeItCannotReadIsRefusedQuotingTheText) {
  EXPECT_EQ(parse_size("lots").status().message(), "'lots' is not a size (try 256M)");
  EXPECT_EQ(parse_size("1234567890123456").status().message(),
            "'1234567890123456' is not a size (try 256M)")
      << "16 digits: refused before it could overflow";
  EXPECT_EQ(parse_size("1.5G").status().message(), "'1.5G': unknown unit '.5g' (use K, M, G)");
  EXPECT_EQ(parse_size("3X").status().message(), "'3X': unknown unit 'x' (use K, M, G)");
}

TEST(Units, WhatTheWritersPrintReadsBackToTheSameValue) {
  for (const microseconds d : {microseconds(0), microseconds(250), microseconds(1'000),
                               microseconds(1'500), microseconds(60'000'000)}) {
    SCOPED_TRACE(duration_text(d));
    EXPECT_EQ(*parse_duration(duration_text(d)), d);
  }
  for (const uint64_t bytes : {uint64_t{0}, uint64_t{4095}, uint64_t{4096}, uint64_t{1536} << 10,
                               uint64_t{64} << 20, uint64_t{1} << 40}) {
    SCOPED_TRACE(size_text(bytes));
    EXPECT_EQ(*parse_size(size_text(bytes)), bytes);
  }
}

}  // namespace
}  // namespace romulus::common::units_test
