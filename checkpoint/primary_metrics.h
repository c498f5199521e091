// The primary's figures for --metrics, rendered as Prometheus text.
//
// PrimaryNode::metrics() gathers a PrimaryMetrics from its sources of truth
// (StatsRecorder::totals() and its pause histogram, OutputProxy::stats() and
// its added-latency histogram, the PrimaryState machine, the Ownership
// witness); render_primary_metrics() is a pure function of it. The names and
// their meaning are listed in docs/operations.md, "Metrics".
#pragma once

#include <optional>

#include "checkpoint/output_proxy.h"
#include "checkpoint/primary_state.h"
#include "checkpoint/stats.h"
#include "checkpoint/tracker_kind.h"
#include "common/histogram.h"
#include "common/metrics_text.h"

namespace romulus::checkpoint {

struct PrimaryMetrics {
  PrimaryState state = PrimaryState::kStarting;
  StatsSnapshot totals;  // counters (StatsRecorder::totals())
  common::Histogram::Snapshot pause;
  common::Histogram::Snapshot pause_phases[std::size(kPausePhases)];  // stats.h, PausePhase
  // Each hop of held output's path but the last (stats.h, OutputHop).
  common::Histogram::Snapshot output_hops[std::size(kOutputHops)];
  double interval_seconds = 0;  // the interval asked for
  bool commit_eager = false;    // --commit eager
  // The dirty tracker, and under uffd-hybrid its chunks (hybrid_tracker.h):
  // how many, how many on the asynchronous userfaultfd now, moves so far.
  TrackerKind tracker = TrackerKind::kUffd;
  struct HybridChunks {
    uint64_t chunks = 0, async_chunks = 0, moves = 0;
  };
  std::optional<HybridChunks> hybrid;
  struct Output {
    OutputProxyStats stats;
    common::Histogram::Snapshot added_latency;
    common::Histogram::Snapshot release_after_ack;  // the path's last hop
  };
  std::optional<Output> output;  // nullopt: no --service proxy
  struct Lease {
    bool owner = false;
    double remaining_seconds = 0;
  };
  std::optional<Lease> lease;  // nullopt: no witness
};

void render_primary_metrics(const PrimaryMetrics& m, common::MetricsText& out);

}  // namespace romulus::checkpoint
