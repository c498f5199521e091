// The primary's metrics: every state a series, the names, output and
// lease families only when there is a proxy and a witness.
#include "checkpoint/primary_metrics.h"

#include <gtest/gtest.h>

namespace romulus::checkpoint::primary_metrics_test {
namespace {

std::string render(const PrimaryMetrics& m) {
  common::MetricsText t;
  render_primary_metrics(m, t);
  return t.text();
}

TEST(PrimaryMetrics, StateIsOneHotOverEveryPrimaryState) {
  PrimaryMetrics m;
  m.state = PrimaryState::kProtected;
  const auto text = render(m);
  EXPECT_NE(text.find("romulus_state{state=\"protected\"} 1\n"), std::string::npos) << text;
  for (const char* s : {"starting", "syncing", "unprotected", "protected_locally", "stalled",
                        "fenced", "demoting", "stopping"}) {
    EXPECT_NE(text.find(std::string("romulus_state{state=\"") + s + "\"} 0\n"), std::string::npos)
        << s;
  }
}

TEST(PrimaryMetrics, CountersComeFromTheStatsTotals) {
  PrimaryMetrics m;
  m.totals.epochs = 7;
  m.totals.acked_epoch = 6;
  m.totals.raw_bytes_total = 4096;
  m.totals.wire_bytes_total = 100;
  m.totals.cache_hits = 3;
  const auto text = render(m);
  EXPECT_NE(text.find("romulus_checkpoints_total 7\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_last_committed_epoch 6\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_checkpoint_bytes_total{kind=\"raw\"} 4096\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_checkpoint_bytes_total{kind=\"wire\"} 100\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_page_cache_hits_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE romulus_pause_seconds histogram\n"), std::string::npos);
}

TEST(PrimaryMetrics, CheckpointsByTriggerAndTheGuestsStoppedTime) {
  PrimaryMetrics m;
  m.commit_eager = true;
  m.totals.sync_checkpoints = 1;
  m.totals.timer_checkpoints = 4;
  m.totals.output_checkpoints = 250;
  m.totals.stopped_us_total = 2'500'000;
  m.totals.stopped_fraction = 0.125;
  const auto text = render(m);
  EXPECT_NE(text.find("romulus_checkpoints_by_trigger_total{trigger=\"sync\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("romulus_checkpoints_by_trigger_total{trigger=\"timer\"} 4\n"),
            std::string::npos);
  EXPECT_NE(text.find("romulus_checkpoints_by_trigger_total{trigger=\"output\"} 250\n"),
            std::string::npos);
  EXPECT_NE(text.find("romulus_guest_stopped_seconds_total 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_guest_stopped_fraction 0.125\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_commit_eager 1\n"), std::string::npos);
}

TEST(PrimaryMetrics, OutputAndLeaseFamiliesOnlyWithAProxyAndAWitness) {
  PrimaryMetrics m;
  EXPECT_EQ(render(m).find("romulus_output_held_bytes"), std::string::npos);
  EXPECT_EQ(render(m).find("romulus_owner"), std::string::npos);
  common::Histogram h;
  m.output = PrimaryMetrics::Output{{}, h.snapshot(), h.snapshot()};
  m.output->stats.bytes_held = 12;
  m.lease = PrimaryMetrics::Lease{true, 1.5};
  const auto text = render(m);
  EXPECT_NE(text.find("romulus_output_held_bytes 12\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE romulus_output_added_latency_seconds histogram\n"),
            std::string::npos);
  EXPECT_NE(text.find("romulus_owner 1\n"), std::string::npos);
  EXPECT_NE(text.find("romulus_lease_remaining_seconds 1.5\n"), std::string::npos);
}

TEST(PrimaryMetrics, TheTrackerAndTheHybridsChunks) {
  PrimaryMetrics m;
  m.tracker = TrackerKind::kUffdSync;
  auto text = render(m);
  EXPECT_NE(text.find("romulus_tracker{tracker=\"uffd-sync\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_tracker{tracker=\"uffd\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_tracker{tracker=\"compare\"} 0\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("tracker=\"auto\""), std::string::npos) << text;
  EXPECT_EQ(text.find("romulus_tracker_chunks"), std::string::npos) << text;
  m.tracker = TrackerKind::kUffdHybrid;
  m.hybrid = PrimaryMetrics::HybridChunks{.chunks = 128, .async_chunks = 2, .moves = 5};
  text = render(m);
  EXPECT_NE(text.find("romulus_tracker{tracker=\"uffd-hybrid\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_tracker_chunks 128\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_tracker_async_chunks 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("romulus_tracker_chunk_moves_total 5\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace romulus::checkpoint::primary_metrics_test
