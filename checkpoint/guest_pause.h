// GuestPause: the epoch engine's PauseControl over a GuestProcess (the primary
// and the tests that run the engine on a real guest use this one adapter). Its
// activity() reads the guest's scheduler state (scheduler_probe.h). Used by the
// engine's thread only.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/scheduler_probe.h"

namespace romulus::checkpoint {

class GuestPause final : public PauseControl {
 public:
  explicit GuestPause(GuestProcess& g) : g_(g), probe_(g.pid()) {}
  Status pause(std::chrono::milliseconds gate_timeout) override { return g_.pause(gate_timeout); }
  Status resume() override { return g_.resume(); }
  std::optional<std::string> exited() override { return g_.poll_exit(); }
  GuestActivity activity() override { return probe_.read(); }

 private:
  GuestProcess& g_;
  SchedulerProbe probe_;
};

}  // namespace romulus::checkpoint
