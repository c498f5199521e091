// The run-time settings' ranges: one definition, the same words at start-up
// (the CLI adds "--") and from `romulus set`.
#include "checkpoint/setting_ranges.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/support/status_matchers.h"

namespace romulus::checkpoint::setting_ranges_test {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(SettingRanges, BoundsAreInclusiveAndTheErrorSaysThem) {
  EXPECT_OK(kIntervalRange.check(milliseconds(1)));
  EXPECT_OK(kIntervalRange.check(seconds(60)));
  EXPECT_EQ(kIntervalRange.check(microseconds(999)).message(),
            "interval must be between 1ms and 60s");
  EXPECT_FALSE(kIntervalRange.check(seconds(61)).is_ok());
  EXPECT_OK(kMinGapRange.check(microseconds(0)));
  EXPECT_OK(kMinGapRange.check(seconds(1)));
  EXPECT_EQ(kMinGapRange.check(seconds(60)).message(), "min-gap must be between 0 and 1s")
      << "start-up and `set` agree: at most 1 s";
  EXPECT_FALSE(kMinGapRange.check(microseconds(-1)).is_ok());
  EXPECT_OK(kMaxStoppedFractionRange.check(0.01));
  EXPECT_OK(kMaxStoppedFractionRange.check(1.0));
  EXPECT_EQ(kMaxStoppedFractionRange.check(0.0).message(),
            "max-stopped-fraction must be between 0.01 and 1");
  EXPECT_FALSE(kMaxStoppedFractionRange.check(std::nan("")).is_ok());
}

}  // namespace
}  // namespace romulus::checkpoint::setting_ranges_test
