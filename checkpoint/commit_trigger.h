// CommitTrigger: when the epoch engine starts its next checkpoint.
//
// Two modes (docs/design.md, "When a checkpoint starts"):
//   interval  a checkpoint every `interval`, on a fixed cadence (the next one
//             is due one interval after the previous was due; after a
//             stretched one, one interval after it actually began).
//   eager     output-triggered group commit: as soon as guest output is held
//             for the open epoch, the next checkpoint is due. If the guest is
//             waiting (no thread runnable: it has answered and blocks for
//             input) it is due at once: stopping a guest that cannot run costs
//             it nothing. If it is runnable (or nobody can tell), not sooner
//             than the gap after the previous pause ended, so that checkpoints
//             do not starve a guest that has work. `interval` stays the
//             longest time between checkpoints. Everything the guest produces
//             meanwhile is in the next one. The gap is
//             max(min_gap, (pause + faults) / f - pause) for the recent pause
//             and the recent time the guest lost to write-protect faults
//             between two pauses (averages; faults as the engine estimates
//             them), and f = max_stopped_fraction: back-to-back checkpoints
//             then keep a runnable guest stopped or faulting at most that
//             fraction of the time, however long pauses grow under load.
// "The previous checkpoint was sent" is the engine's part (it flushes the
// transport before pausing), not this class's.
//
// A pure state machine: time comes in as arguments, so tests drive it with a
// fake clock. One thread (the engine's) uses it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "common/enum_names.h"

namespace romulus::checkpoint {

enum class CommitMode : uint8_t { kInterval, kEager };
// The names of --commit and `set commit`, in the order help texts list them.
inline constexpr EnumName<CommitMode> kCommitModeNames[] = {{CommitMode::kEager, "eager"},
                                                            {CommitMode::kInterval, "interval"}};
// What the guest was doing when the engine looked (scheduler_probe.h):
// a thread could run (kRunnable), every thread was blocked (kWaiting), or the
// engine cannot tell (kUnknown: treated as runnable).
enum class GuestActivity : uint8_t { kUnknown, kRunnable, kWaiting };

// Why a checkpoint was taken: the first of a stream (sync), its interval
// elapsed (timer), or output was waiting for it (output).
enum class CheckpointTrigger : uint8_t { kSync, kTimer, kOutput };

std::string_view commit_mode_name(CommitMode m);
std::string_view trigger_name(CheckpointTrigger t);

struct CommitPolicy {
  CommitMode mode = CommitMode::kInterval;
  std::chrono::microseconds interval{50'000};
  std::chrono::microseconds min_gap{1'000};
  double max_stopped_fraction = 0.25;  // in (0, 1]
};

class CommitTrigger {
 public:
  using Clock = std::chrono::steady_clock;

  explicit CommitTrigger(CommitPolicy policy = {}) : policy_(policy) {}

  // A timer checkpoint that began at most this long after it was due kept the
  // cadence (was not stretched): a thread's usual wake-up delay is well inside it.
  static constexpr std::chrono::milliseconds kLateness{1};

  // Settings may change between checkpoints (romulus set ...).
  void set_policy(const CommitPolicy& policy) { policy_ = policy; }
  const CommitPolicy& policy() const { return policy_; }

  // Before the first checkpoint of a run: the cadence starts at `now`.
  void start(Clock::time_point now);
  // A checkpoint's pause began at `paused` and the guest ran again at
  // `resumed`; `why` is what triggered it. `faults`: the time the guest lost
  // to write-protect faults since the previous pause (an estimate; zero when
  // its tracker takes none), counted with the pause against the budget.
  void on_checkpoint(Clock::time_point paused, Clock::time_point resumed, CheckpointTrigger why,
                     std::chrono::microseconds faults = std::chrono::microseconds(0));
  // A pause gave up (an Update stayed open): try again after an interval or
  // a gap, as if one had been taken at `now` (a gap even for a waiting guest).
  void on_postponed(Clock::time_point now);

  struct Due {
    Clock::time_point when;
    CheckpointTrigger why;
  };
  // When the next checkpoint is due, given whether output is held for the
  // open epoch and what the guest is doing (both ignored in interval mode).
  Due next(bool output_held, GuestActivity guest = GuestActivity::kUnknown) const;

  // The current eager gap for a runnable guest:
  // max(min_gap, (average pause + average faults) / f - average pause).
  std::chrono::microseconds gap() const;

 private:
  CommitPolicy policy_;
  Clock::time_point deadline_{};      // the timer: the interval elapses
  Clock::time_point last_resumed_{};  // end of the previous pause
  double pause_avg_us_ = 0;           // exponential average of recent pauses
  double fault_avg_us_ = 0;           // the same of the fault time between them
  bool postponed_ = false;            // the last attempt gave up (on_postponed)
};

}  // namespace romulus::checkpoint
