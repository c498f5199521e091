// GuestPause: the epoch engine's PauseControl over a GuestProcess (the primary
// and the tests that run the engine on a real guest use this one adapter).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_process.h"

namespace romulus::checkpoint {

class GuestPause final : public PauseControl {
 public:
  explicit GuestPause(GuestProcess& g) : g_(g) {}
  Status pause(std::chrono::milliseconds gate_timeout) override { return g_.pause(gate_timeout); }
  Status resume() override { return g_.resume(); }
  std::optional<std::string> exited() override { return g_.poll_exit(); }

 private:
  GuestProcess& g_;
};

}  // namespace romulus::checkpoint
