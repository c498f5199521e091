// BackgroundMeasurements: the tracker-choice measurements
// (checkpoint/tracker_choice.h), taken in the background while this node is
// a backup, so that a takeover does not spend ~30 ms on them between
// "primary lost" and "guest running".
//
// start() starts one thread that measures at once and again every kRefresh
// (the costs drift with the host: docs/operations.md, "How `--tracker auto`
// decides"); the destructor stops and joins it. A takeover hands latest() to
// the new primary, which measures for itself if there is none yet.
//
// Threads: start() from one thread (the main thread); latest() and age()
// from any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "checkpoint/tracker_choice.h"

namespace romulus::replica {

class BackgroundMeasurements {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::minutes kRefresh{30};

  BackgroundMeasurements() = default;
  ~BackgroundMeasurements();
  BackgroundMeasurements(const BackgroundMeasurements&) = delete;
  BackgroundMeasurements& operator=(const BackgroundMeasurements&) = delete;

  // Idempotent: the first call starts the thread.
  void start();

  // The latest measurements; nullptr until the first is done.
  std::shared_ptr<const checkpoint::Measurements> latest() const;
  // How long ago latest() was measured.
  std::chrono::seconds age() const;

 private:
  void loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::shared_ptr<const checkpoint::Measurements> latest_;
  Clock::time_point measured_at_{};
  std::thread thread_;
};

}  // namespace romulus::replica
