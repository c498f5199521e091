// EngineSettings: what an operator chooses about checkpoints, in one struct.
//
// `romulus primary`'s options parse straight into it (cli/options.cc), the
// primary carries it (PrimaryConfig::engine) and the engine starts from it
// (EngineOptions derives from it), so each default below is the product's
// default, written once; the CLI's help text prints these values. Some of
// them change at run time with `romulus set` (each is one entry of run_time_settings.h).
#pragma once

#include <chrono>
#include <cstddef>

#include "checkpoint/commit_trigger.h"
#include "protocol/checkpoint_writer.h"

namespace romulus::checkpoint {

struct EngineSettings {
  // The timer of --commit interval, and the longest wait under eager.
  std::chrono::microseconds interval{50'000};
  // When checkpoints start (commit_trigger.h).
  CommitMode commit = CommitMode::kEager;
  std::chrono::microseconds min_gap{1'000};
  double max_stopped_fraction = 0.25;
  size_t staging_bytes = size_t{64} << 20;
  unsigned encoder_threads = 1;
  protocol::EncodeOptions encode;  // codec, LZ4 stage
  size_t cache_bytes = size_t{64} << 20;
  // The longest wait for open Update sections at a pause.
  std::chrono::milliseconds gate_timeout{2000};
};

}  // namespace romulus::checkpoint
