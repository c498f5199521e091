// Replication statistics of the primary, in the spirit of QEMU's `info migrate`.
//
// The epoch engine records one EpochRecord per checkpoint; the sender records
// acknowledgements. Readers take a Snapshot (a plain value) at any time and
// render it as text or JSON. All methods are thread-safe (one mutex; the hot
// path takes it a few times per epoch, not per page). The pause histograms
// (for --metrics: the whole pause and each of its parts) are lock-free: one
// atomic add each per epoch, read by a scrape without the mutex; totals()
// copies the counters without the percentile sort that snapshot() does, so a
// scrape holds the mutex only for a copy.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <iterator>
#include <mutex>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "checkpoint/commit_trigger.h"
#include "common/enum_names.h"
#include "common/histogram.h"

namespace romulus::checkpoint {

// What one checkpoint cost. Durations in microseconds.
struct EpochRecord {
  uint64_t epoch = 0;
  int64_t interval_us = 0;   // achieved: start of previous pause to start of this one
  int64_t pause_us = 0;      // pause requested -> guest running again
  int64_t gate_wait_us = 0;  // part of pause spent waiting for Update sections to close
  int64_t collect_us = 0;    // dirty-page collection (inside the pause)
  int64_t copy_us = 0;       // copying dirty pages to staging (inside the pause; 0 when
                             // the tracker's pages are stable: compare sends its shadow)
  // Copy-before-write (docs/design.md, "Copying after resume"): pages of the
  // dirty set copied after resume instead of in the pause, of those how many
  // on the guest's first write (before it), and how long copying them took
  // the engine after resume.
  uint64_t copied_after_resume = 0;
  uint64_t copied_on_write = 0;
  int64_t copy_after_resume_us = 0;
  // Write-protect faults the guest took since the previous checkpoint, and
  // their estimated cost to it (EngineOptions::guest_fault_us), which the
  // stopped-fraction budget counts with the pause.
  uint64_t write_faults = 0;
  int64_t fault_us = 0;
  int64_t encode_us = 0;  // encoding after resume (wall time across encoder threads)
  int64_t send_us = 0;    // first byte handed to the transport -> last byte written
  uint64_t dirty_pages = 0;
  uint64_t raw_bytes = 0;          // dirty_pages * 4096
  uint64_t wire_bytes = 0;         // bytes of the checkpoint on the wire, framing included
  bool stretched = false;          // interval was longer than asked: previous send not done
  bool sent_while_paused = false;  // dirty set overflowed staging
  CheckpointTrigger trigger = CheckpointTrigger::kTimer;
  // kOutput taken while the guest was waiting for input, so without waiting
  // for the gap (commit_trigger.h, scheduler_probe.h).
  bool guest_waiting = false;
  std::chrono::steady_clock::time_point paused_at{};  // when the pause began
  // When output was first held for this epoch (the proxy read it from the
  // guest), or {} if none was: the start of that output's path.
  std::chrono::steady_clock::time_point output_held_at{};
};

// The path of held output through a checkpoint, hop by hop (docs/operations.md,
// "Where a reply's time goes"), for the checkpoints that carried output:
//   wait     output first held in the epoch -> its checkpoint's pause begins
//   pause    pause begins -> guest running again
//   send     guest running again -> the checkpoint handed to the sender
//            (encoded; on the wire as fast as the link takes it)
//   ack      handed to the sender -> the backup's acknowledgement arrives
// The last hop, ack -> output written to the client, is the proxy's
// (OutputProxyStats::release_after_ack_*).
enum class OutputHop : uint8_t { kWait, kPause, kSend, kAck };
inline constexpr OutputHop kOutputHops[] = {OutputHop::kWait, OutputHop::kPause, OutputHop::kSend,
                                            OutputHop::kAck};
inline constexpr std::string_view output_hop_name(OutputHop h) {
  switch (h) {
    case OutputHop::kWait:
      return "wait";
    case OutputHop::kPause:
      return "pause";
    case OutputHop::kSend:
      return "send";
    case OutputHop::kAck:
      return "ack";
  }
  return "?";
}

// The parts of a pause, in order (EpochRecord): stopping the guest (Update
// sections closing, the stop signal until it is stopped), collecting the
// dirty set, copying it to staging, and re-arming tracking then resuming it.
// Iterate over the table for each phase and its name (the JSON key and the
// metric's label).
enum class PausePhase : uint8_t { kStop, kCollect, kCopy, kResume };
inline constexpr EnumName<PausePhase> kPausePhases[] = {{PausePhase::kStop, "stop"},
                                                        {PausePhase::kCollect, "collect"},
                                                        {PausePhase::kCopy, "copy"},
                                                        {PausePhase::kResume, "resume"}};
// One phase of r's pause; kResume is what the other three leave of pause_us.
int64_t pause_phase_us(const EpochRecord& r, PausePhase p);

// Percentile summary over a recent window.
struct Distribution {
  int64_t p50 = 0, p99 = 0, max = 0;  // max is over all time
};

struct StatsSnapshot {
  uint64_t epochs = 0;       // consistent checkpoints sent
  uint64_t acked_epoch = 0;  // highest epoch the backup acknowledged
  uint64_t sent_epoch = 0;   // highest epoch fully sent
  uint64_t stretched_intervals = 0;
  uint64_t postponed_pauses = 0;  // pause gave up waiting for Update sections
  uint64_t overflowed_staging = 0;
  // Copy-before-write totals (EpochRecord::copied_after_resume, copied_on_write).
  uint64_t copied_after_resume_total = 0, copied_on_write_total = 0;
  Distribution pause_us, interval_us, ack_latency_us, encode_us;
  Distribution pause_phase_us[std::size(kPausePhases)];  // each part of pause_us
  // Checkpoints that carried output (those acknowledged so far), and each hop
  // of their output's path (OutputHop), over the recent window.
  uint64_t output_paths = 0;
  Distribution output_hop_us[std::size(kOutputHops)];
  uint64_t dirty_pages_total = 0;
  uint64_t raw_bytes_total = 0;
  uint64_t wire_bytes_total = 0;
  double compression_ratio = 0;   // raw / wire over all checkpoints (0 if none)
  double wire_bytes_per_sec = 0;  // over the recent window
  EpochRecord last;
  // Checkpoints by what triggered them (commit_trigger.h), and the guest's
  // time stopped in pauses, since start.
  uint64_t sync_checkpoints = 0, timer_checkpoints = 0, output_checkpoints = 0;
  // Of output_checkpoints: those taken while the guest was waiting (no gap).
  uint64_t guest_waiting_checkpoints = 0;
  int64_t stopped_us_total = 0;
  int64_t fault_us_total = 0;  // estimated time lost to write faults, since start
  // Over the last StatsRecorder::kRateWindow (or since the first checkpoint):
  // the fraction of wall time the guest was stopped, and checkpoints/s by trigger.
  double stopped_fraction = 0;
  double timer_checkpoints_per_sec = 0, output_checkpoints_per_sec = 0;
  // Initial sync.
  uint64_t sync_pages_sent = 0, sync_pages_total = 0, sync_rounds = 0;
  int64_t sync_duration_us = 0;
  // Sender page cache.
  uint64_t cache_lookups = 0, cache_hits = 0, cache_misses = 0, cache_evictions = 0,
           cache_overflows = 0;
};

class StatsRecorder {
 public:
  explicit StatsRecorder(size_t window = 1024) : window_(window) {}
  static constexpr std::chrono::seconds kRateWindow{5};

  void record_epoch(const EpochRecord& r);
  // output: the checkpoint carries held output (its EpochRecord::output_held_at is set).
  void record_sent(uint64_t epoch, std::chrono::steady_clock::time_point when, bool output = false);
  void record_ack(uint64_t epoch, std::chrono::steady_clock::time_point when);
  void record_postponed();
  void record_sync_progress(uint64_t sent, uint64_t total, uint64_t rounds, int64_t duration_us);
  void record_cache(uint64_t lookups, uint64_t hits, uint64_t misses, uint64_t evictions,
                    uint64_t overflows);

  StatsSnapshot snapshot() const;
  // The counters of snapshot() (Distribution fields left empty): cheap.
  StatsSnapshot totals() const;
  // Every epoch's pause (pause requested -> guest running again), in seconds.
  const common::Histogram& pause_histogram() const { return pause_seconds_; }
  // Each part of every pause (PausePhase), in seconds, for --metrics.
  const common::Histogram& pause_phase_histogram(PausePhase p) const {
    return pause_phase_seconds_[static_cast<size_t>(p)];
  }
  // Each hop of held output's path (OutputHop), in seconds, for --metrics.
  const common::Histogram& output_hop_histogram(OutputHop h) const {
    return output_hop_seconds_[static_cast<size_t>(h)];
  }

 private:
  struct Sent {
    uint64_t epoch;
    std::chrono::steady_clock::time_point when;
    bool output;
  };

  struct Stop {  // one pause, for the rate window
    std::chrono::steady_clock::time_point at;
    int64_t pause_us;
    CheckpointTrigger trigger;
  };
  // Drops pauses older than the window (mu_ held).
  void prune_stops(std::chrono::steady_clock::time_point now) const;
  // prune_stops(), then fills the window's figures in s.
  void fill_window(StatsSnapshot& s, std::chrono::steady_clock::time_point now) const;
  // One hop of an output path (mu_ held).
  void record_hop(OutputHop h, int64_t us);

  mutable std::mutex mu_;
  size_t window_;
  mutable std::deque<Stop> stops_;  // the last kRateWindow's pauses, oldest first
  mutable int64_t window_stopped_us_ = 0;
  mutable uint64_t window_timer_ = 0, window_output_ = 0;
  std::chrono::steady_clock::time_point first_pause_{};
  StatsSnapshot totals_;
  std::deque<EpochRecord> recent_;
  std::deque<int64_t> ack_latencies_;
  std::deque<Sent> unacked_;
  int64_t max_ack_latency_us_ = 0;
  common::Histogram pause_seconds_;
  common::Histogram pause_phase_seconds_[std::size(kPausePhases)];
  std::deque<int64_t> output_hops_[std::size(kOutputHops)];
  common::Histogram output_hop_seconds_[std::size(kOutputHops)];
};

// One line for the periodic log: "epoch 120: pause p50 1.2 ms p99 3.4 ms, ...".
std::string format_stats_line(const StatsSnapshot& s);
// The JSON object served to `romulus status --json` (the "primary" member).
boost::json::object stats_to_json(const StatsSnapshot& s);

}  // namespace romulus::checkpoint
