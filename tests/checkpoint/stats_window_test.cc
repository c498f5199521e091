// StatsRecorder's recent window: checkpoints by trigger and the guest's
// stopped fraction over the last kRateWindow. The records carry their own
// pause times, set relative to now, and the first one is older than the
// window, so the window's span is exactly kRateWindow: the figures are
// counts over 5 s, not timings.
#include "checkpoint/stats.h"

#include <gtest/gtest.h>

namespace romulus::checkpoint::stats_window_test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

EpochRecord record(uint64_t epoch, CheckpointTrigger why, Clock::time_point at, int64_t pause_us) {
  EpochRecord r;
  r.epoch = epoch;
  r.trigger = why;
  r.paused_at = at;
  r.pause_us = pause_us;
  return r;
}

TEST(StatsWindow, CountsCheckpointsByTriggerAndStoppedTimeOverTheLastFiveSeconds) {
  StatsRecorder stats;
  const auto now = Clock::now();
  stats.record_epoch(record(1, CheckpointTrigger::kSync, now - 20s, 400'000));  // out of window
  for (uint64_t i = 0; i < 3; ++i) {
    stats.record_epoch(record(2 + i, CheckpointTrigger::kTimer, now - 2s, 1'000));
  }
  for (uint64_t i = 0; i < 7; ++i) {
    stats.record_epoch(record(5 + i, CheckpointTrigger::kOutput, now - 1s, 1'000));
  }
  const auto s = stats.snapshot();
  EXPECT_EQ(s.sync_checkpoints, 1u);
  EXPECT_EQ(s.timer_checkpoints, 3u);
  EXPECT_EQ(s.output_checkpoints, 7u);
  EXPECT_EQ(s.stopped_us_total, 410'000);
  // 3 and 7 checkpoints in 5 s; 10 ms stopped in 5 s (the sync's pause is older).
  EXPECT_DOUBLE_EQ(s.timer_checkpoints_per_sec, 3.0 / 5);
  EXPECT_DOUBLE_EQ(s.output_checkpoints_per_sec, 7.0 / 5);
  EXPECT_DOUBLE_EQ(s.stopped_fraction, 0.010 / 5);
  // The same through the cheap path the metrics scrape uses.
  const auto t = stats.totals();
  EXPECT_DOUBLE_EQ(t.stopped_fraction, s.stopped_fraction);
  EXPECT_EQ(t.output_checkpoints, 7u);
}

TEST(StatsWindow, NothingRecordedMeansNoRatesRatherThanADivisionByZero) {
  StatsRecorder stats;
  const auto s = stats.snapshot();
  EXPECT_EQ(s.stopped_fraction, 0);
  EXPECT_EQ(s.output_checkpoints_per_sec, 0);
}

}  // namespace
}  // namespace romulus::checkpoint::stats_window_test
