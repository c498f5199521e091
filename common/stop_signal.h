// StopSignal: a stop request that waiting threads see at once.
//
// A loop that must wait (a reconnect back-off, an idle role) waits on this
// instead of sleeping in slices: request_stop() and nudge() wake it
// immediately. flag() is the plain atomic that code polling once per unit of
// work (the epoch engine) reads.
//
// Thread-safe; request_stop() may be called from any thread, including a
// signal-watching thread (never from a signal handler).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace romulus::common {

class StopSignal {
 public:
  void request_stop() {
    {
      std::lock_guard lock(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
  }
  // Wakes a wait_for() early without stopping (e.g. a setting changed).
  void nudge() {
    {
      std::lock_guard lock(mu_);
      nudged_ = true;
    }
    cv_.notify_all();
  }
  bool stop_requested() const { return stop_.load(); }
  const std::atomic<bool>& flag() const { return stop_; }

  // Waits up to `d`; returns true if stop was requested (now or before).
  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, d, [&] { return stop_.load() || nudged_; });
    nudged_ = false;
    return stop_.load();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  bool nudged_ = false;
};

}  // namespace romulus::common
