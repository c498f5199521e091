#include "checkpoint/commit_trigger.h"

#include <algorithm>

namespace romulus::checkpoint {
namespace {

using std::chrono::microseconds;

// Weight of the newest pause in the average: about the last 8 pauses count,
// so one long pause does not stretch the gap for long, and a sustained rise does.
constexpr double kPauseWeight = 1.0 / 8;

}  // namespace

std::string_view commit_mode_name(CommitMode m) { return enum_name(kCommitModeNames, m); }

std::string_view trigger_name(CheckpointTrigger t) {
  switch (t) {
    case CheckpointTrigger::kSync:
      return "sync";
    case CheckpointTrigger::kTimer:
      return "timer";
    case CheckpointTrigger::kOutput:
      return "output";
  }
  return "?";
}

void CommitTrigger::start(Clock::time_point now) {
  if (deadline_ == Clock::time_point{}) deadline_ = now + policy_.interval;
  if (last_resumed_ == Clock::time_point{}) last_resumed_ = now;
}

void CommitTrigger::on_checkpoint(Clock::time_point paused, Clock::time_point resumed,
                                  CheckpointTrigger why, microseconds faults) {
  const double pause_us =
      static_cast<double>(std::chrono::duration_cast<microseconds>(resumed - paused).count());
  const bool first = pause_avg_us_ == 0;
  pause_avg_us_ = first ? pause_us : pause_avg_us_ + kPauseWeight * (pause_us - pause_avg_us_);
  const double fault_us = static_cast<double>(faults.count());
  fault_avg_us_ = first ? fault_us : fault_avg_us_ + kPauseWeight * (fault_us - fault_avg_us_);
  last_resumed_ = resumed;
  postponed_ = false;
  // The timer keeps a fixed cadence (waking a little late each time must not
  // cost checkpoints), unless this one was not the timer's or came late: then
  // the interval counts from this pause (no catch-up burst).
  if (why == CheckpointTrigger::kTimer && deadline_ != Clock::time_point{} &&
      paused <= deadline_ + kLateness) {
    deadline_ += policy_.interval;
    if (deadline_ <= paused) deadline_ = paused + policy_.interval;  // interval shortened
  } else {
    deadline_ = paused + policy_.interval;
  }
}

void CommitTrigger::on_postponed(Clock::time_point now) {
  deadline_ = now + policy_.interval;
  last_resumed_ = now;
  postponed_ = true;
}

microseconds CommitTrigger::gap() const {
  const double f = std::clamp(policy_.max_stopped_fraction, 0.01, 1.0);
  // A cycle is the pause and the gap after it; of it, the guest is stopped
  // for the pause and blocked in faults for about fault_avg_us_ of the gap.
  const auto by_fraction =
      microseconds(static_cast<int64_t>((pause_avg_us_ + fault_avg_us_) / f - pause_avg_us_));
  return std::max(policy_.min_gap, by_fraction);
}

CommitTrigger::Due CommitTrigger::next(bool output_held, GuestActivity guest) const {
  // The interval may have been shortened since the deadline was set.
  const Clock::time_point timer = std::min(deadline_, last_resumed_ + policy_.interval);
  if (policy_.mode == CommitMode::kEager && output_held) {
    // A waiting guest loses nothing to a pause: no gap (but after a
    // postponed pause, the gap first: its Update gate held the guest up).
    const Clock::time_point eager =
        guest == GuestActivity::kWaiting && !postponed_ ? last_resumed_ : last_resumed_ + gap();
    if (eager < timer) return {eager, CheckpointTrigger::kOutput};
  }
  return {timer, CheckpointTrigger::kTimer};
}

}  // namespace romulus::checkpoint
