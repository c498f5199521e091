// How long the primary waits before trying its backup again.
#include "checkpoint/reconnect_policy.h"

#include <gtest/gtest.h>

namespace romulus::checkpoint::reconnect_policy_test {
namespace {

using namespace std::chrono_literals;

TEST(ReconnectPolicy, UnreachableBackupIsRetriedSoonThenBackingOffToTheMaximum) {
  ReconnectPolicy p;
  EXPECT_EQ(p.after_failure(false), 100ms);
  EXPECT_EQ(p.after_failure(false), 200ms);
  EXPECT_EQ(p.after_failure(false), 400ms);
  EXPECT_EQ(p.after_failure(false), 800ms);
  EXPECT_EQ(p.after_failure(false), 1000ms);
  EXPECT_EQ(p.after_failure(false), 1000ms);
}

TEST(ReconnectPolicy, ARefusalWaitsTheRefusalDelay) {
  ReconnectPolicy p;
  EXPECT_EQ(p.after_failure(true), ReconnectPolicy::kAfterRefusal);
  EXPECT_EQ(p.after_failure(false), 100ms);  // refusals do not advance the back-off
}

TEST(ReconnectPolicy, AConnectionStartsTheSequenceAgain) {
  ReconnectPolicy p;
  p.after_failure(false);
  p.after_failure(false);
  p.on_connected();
  EXPECT_EQ(p.after_failure(false), 100ms);
}

}  // namespace
}  // namespace romulus::checkpoint::reconnect_policy_test
