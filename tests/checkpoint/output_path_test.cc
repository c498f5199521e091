// StatsRecorder's output path: for each checkpoint that carried held output,
// the hops wait (held -> pause), pause, send (resumed -> handed to the
// sender) and ack (-> acknowledged), from times the records carry (set
// relative to one instant: these are sums of given durations, not timings),
// in the snapshot, the JSON and the metrics histograms; and the parts of each
// pause (stop, collect, copy, resume).
#include <gtest/gtest.h>

#include "checkpoint/primary_metrics.h"
#include "checkpoint/stats.h"
#include "common/metrics_text.h"

namespace romulus::checkpoint::output_path_test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr size_t hop(OutputHop h) { return static_cast<size_t>(h); }

// Epoch `epoch` paused at t0 + at, its output (if any) held `held_before`
// earlier; pause and encode as given.
EpochRecord record(uint64_t epoch, Clock::time_point paused, std::optional<Clock::duration> held,
                   int64_t pause_us, int64_t encode_us) {
  EpochRecord r;
  r.epoch = epoch;
  r.trigger = held ? CheckpointTrigger::kOutput : CheckpointTrigger::kTimer;
  r.paused_at = paused;
  if (held) r.output_held_at = paused - *held;
  r.pause_us = pause_us;
  r.encode_us = encode_us;
  return r;
}

// Epoch 1 paused a second ago: output held 300 µs before the pause; 40 µs
// pause, 60 µs to hand it over, acknowledged 200 µs after that.
void one_output_checkpoint(StatsRecorder& stats) {
  const auto t0 = Clock::now() - 1s;
  stats.record_epoch(record(1, t0, 300us, 40, 60));
  stats.record_sent(1, t0 + 100us, true);
  stats.record_ack(1, t0 + 300us);
}

TEST(OutputPath, EachHopOfACheckpointThatCarriedOutput) {
  StatsRecorder stats;
  one_output_checkpoint(stats);
  const auto s = stats.snapshot();
  EXPECT_EQ(s.output_paths, 1u);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kWait)].p50, 300);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kPause)].p50, 40);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kSend)].p50, 60);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kAck)].p50, 200);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kAck)].max, 200);
}

TEST(OutputPath, CheckpointsWithoutOutputAreLeftOut) {
  StatsRecorder stats;
  const auto t0 = Clock::now() - 1s;
  stats.record_epoch(record(1, t0, std::nullopt, 5'000, 9'000));  // a timer checkpoint
  stats.record_sent(1, t0 + 14ms, false);
  stats.record_ack(1, t0 + 20ms);
  stats.record_epoch(record(2, t0 + 30ms, 100us, 50, 70));
  stats.record_sent(2, t0 + 30ms + 120us, true);
  stats.record_ack(2, t0 + 30ms + 220us);
  const auto s = stats.snapshot();
  EXPECT_EQ(s.output_paths, 1u);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kPause)].max, 50);  // not the timer's 5 ms
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kAck)].max, 100);
  // The pause distribution of every checkpoint still has both.
  EXPECT_EQ(s.pause_us.max, 5'000);
}

TEST(OutputPath, OneAckReleasesEveryEarlierEpochsOutput) {
  StatsRecorder stats;
  const auto t0 = Clock::now() - 1s;
  // Two checkpoints in flight (they pipeline); the backup's ack of the
  // second covers the first, whose ack was lost or skipped.
  stats.record_epoch(record(1, t0, 10us, 20, 30));
  stats.record_sent(1, t0 + 50us, true);
  stats.record_epoch(record(2, t0 + 60us, 10us, 20, 30));
  stats.record_sent(2, t0 + 110us, true);
  stats.record_ack(2, t0 + 410us);
  const auto s = stats.snapshot();
  EXPECT_EQ(s.output_paths, 2u);
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kAck)].max, 360);  // epoch 1: 50 µs -> 410 µs
  EXPECT_EQ(s.output_hop_us[hop(OutputHop::kAck)].p50, 300);  // epoch 2: 110 µs -> 410 µs
}

TEST(OutputPath, OutputNotedJustAfterThePauseBeganWaitsNoTimeRatherThanLessThanNone) {
  StatsRecorder stats;
  const auto t0 = Clock::now() - 1s;
  // The proxy read the reply while the pause was starting: noted 5 µs after it.
  stats.record_epoch(record(1, t0, -5us, 20, 30));
  EXPECT_EQ(stats.snapshot().output_hop_us[hop(OutputHop::kWait)].max, 0);
}

// The pause's parts: stop, collect and copy as the engine measured them, and
// resume as what they leave of the pause (never less than nothing), with the
// largest of each since start, in the snapshot, the JSON and the metrics.
TEST(PausePhases, EachPartOfEveryPauseWithResumeAsTheRest) {
  StatsRecorder stats;
  const auto t0 = Clock::now() - 1s;
  EpochRecord a = record(1, t0, std::nullopt, 100, 0);
  a.gate_wait_us = 50;
  a.collect_us = 20;
  a.copy_us = 10;  // resume: 100 - 80 = 20
  EpochRecord b = record(2, t0 + 1ms, std::nullopt, 30, 0);
  b.gate_wait_us = 10;
  b.collect_us = 12;
  b.copy_us = 9;  // 31 > 30 (rounding): resume 0
  EpochRecord c = record(3, t0 + 2ms, std::nullopt, 70, 0);
  c.gate_wait_us = 30;
  c.collect_us = 16;
  c.copy_us = 4;  // resume 20
  for (const auto& r : {a, b, c}) stats.record_epoch(r);
  const auto s = stats.snapshot();
  auto phase = [&](PausePhase p) { return s.pause_phase_us[static_cast<size_t>(p)]; };
  EXPECT_EQ(phase(PausePhase::kStop).p50, 30);
  EXPECT_EQ(phase(PausePhase::kStop).max, 50);
  EXPECT_EQ(phase(PausePhase::kCollect).p50, 16);
  EXPECT_EQ(phase(PausePhase::kCopy).max, 10);
  EXPECT_EQ(phase(PausePhase::kResume).p50, 20);
  EXPECT_EQ(phase(PausePhase::kResume).max, 20);
  const auto j = stats_to_json(s);
  const auto& phases = j.at("pause_phases_ms").as_object();
  for (const auto& [p, name] : kPausePhases) {
    ASSERT_TRUE(phases.contains(name)) << name;
  }
  EXPECT_DOUBLE_EQ(phases.at("stop").at("p50").as_double(), 0.03);
  EXPECT_DOUBLE_EQ(phases.at("resume").at("max").as_double(), 0.02);

  // /metrics: one histogram family, one series per part, every pause in each.
  PrimaryMetrics m;
  m.totals = stats.totals();
  for (const auto& [p, name] : kPausePhases) {
    m.pause_phases[static_cast<size_t>(p)] = stats.pause_phase_histogram(p).snapshot();
  }
  common::MetricsText text;
  render_primary_metrics(m, text);
  const std::string out = text.text();
  const auto family = out.find("# TYPE romulus_pause_phase_seconds histogram");
  ASSERT_NE(family, std::string::npos) << out;
  EXPECT_EQ(out.find("# TYPE romulus_pause_phase_seconds", family + 1), std::string::npos);
  for (const auto& [p, name] : kPausePhases) {
    EXPECT_NE(out.find(fmt::format("romulus_pause_phase_seconds_count{{phase=\"{}\"}} 3", name)),
              std::string::npos)
        << name << "\n"
        << out;
  }
}

TEST(OutputPath, TheJsonHasEveryHopAndTheMetricsOneSeriesPerHop) {
  StatsRecorder stats;
  one_output_checkpoint(stats);
  const auto j = stats_to_json(stats.snapshot());
  const auto& path = j.at("output_path_ms").as_object();
  EXPECT_EQ(path.at("checkpoints").as_uint64(), 1u);
  for (OutputHop h : kOutputHops) {
    ASSERT_TRUE(path.contains(output_hop_name(h))) << output_hop_name(h);
  }
  EXPECT_DOUBLE_EQ(path.at("wait").at("p50").as_double(), 0.3);

  PrimaryMetrics m;
  m.totals = stats.totals();
  for (OutputHop h : kOutputHops) m.output_hops[hop(h)] = stats.output_hop_histogram(h).snapshot();
  common::MetricsText text;
  render_primary_metrics(m, text);
  const std::string out = text.text();
  EXPECT_NE(out.find("# TYPE romulus_output_path_seconds histogram"), std::string::npos);
  // One family, one series per hop; the last hop only with a proxy.
  EXPECT_EQ(out.find("# TYPE romulus_output_path_seconds",
                     out.find("# TYPE romulus_output_path_seconds") + 1),
            std::string::npos);
  for (const char* h : {"wait", "pause", "send", "ack"}) {
    EXPECT_NE(out.find(fmt::format("romulus_output_path_seconds_count{{hop=\"{}\"}} 1", h)),
              std::string::npos)
        << h << "\n"
        << out;
    EXPECT_NE(
        out.find(fmt::format("romulus_output_path_seconds_bucket{{hop=\"{}\",le=\"+Inf\"}} 1", h)),
        std::string::npos)
        << h;
  }
  EXPECT_EQ(out.find("hop=\"release\""), std::string::npos);
}

}  // namespace
}  // namespace romulus::checkpoint::output_path_test
