// CommitTrigger on a fake clock: a simulated engine loop takes a checkpoint
// whenever the trigger says one is due, with pauses of a given length, and
// the test counts the checkpoints of one simulated second. Counts, not
// timings: the clock is the test's.
#include "checkpoint/commit_trigger.h"

#include <gtest/gtest.h>

#include <functional>

namespace romulus::checkpoint::commit_trigger_test {
namespace {

using namespace std::chrono_literals;
using Clock = CommitTrigger::Clock;

struct Counts {
  int timer = 0, output = 0;
  Clock::duration stopped{};
  int total() const { return timer + output; }
};

// Simulates `length` of engine time from t0: output_held(now) says whether
// output waits; every checkpoint pauses the guest for `pause`.
Counts simulate(CommitPolicy policy, Clock::duration length, Clock::duration pause,
                const std::function<bool(Clock::time_point)>& output_held) {
  CommitTrigger trigger(policy);
  const Clock::time_point t0{};
  const Clock::time_point start = t0 + 1s;  // a non-zero epoch for the fake clock
  trigger.start(start);
  Counts run;
  Clock::time_point now = start;
  for (;;) {
    auto due = trigger.next(output_held(now));
    // Output that arrives while the engine sleeps wakes it: step through time
    // in 10 us so a later arrival is seen (the real engine is woken by it).
    while (now < due.when) {
      now = std::min(due.when, now + Clock::duration(10us));
      due = trigger.next(output_held(now));
    }
    if (due.when > start + length) break;
    now = std::max(now, due.when);
    const Clock::time_point resumed = now + pause;
    trigger.on_checkpoint(now, resumed, due.why);
    if (due.why == CheckpointTrigger::kOutput) {
      ++run.output;
    } else {
      ++run.timer;
    }
    run.stopped += pause;
    now = resumed;
  }
  return run;
}

CommitPolicy eager(std::chrono::microseconds interval, std::chrono::microseconds min_gap,
                   double max_stopped = 1.0) {
  CommitPolicy p;
  p.mode = CommitMode::kEager;
  p.interval = interval;
  p.min_gap = min_gap;
  p.max_stopped_fraction = max_stopped;
  return p;
}

TEST(CommitTrigger, IntervalModeTakesOneCheckpointPerIntervalWhateverTheOutput) {
  CommitPolicy p;
  p.mode = CommitMode::kInterval;
  p.interval = 50ms;
  const Counts r = simulate(p, 1s, 200us, [](auto) { return true; });
  EXPECT_EQ(r.output, 0);
  EXPECT_EQ(r.timer, 20);  // 1 s / 50 ms: the cadence is kept despite the pauses
}

TEST(CommitTrigger, EagerWithoutOutputSleepsForTheWholeInterval) {
  const Counts r = simulate(eager(50ms, 1ms), 1s, 200us, [](auto) { return false; });
  EXPECT_EQ(r.output, 0);
  EXPECT_EQ(r.timer, 20);
}

TEST(CommitTrigger, EagerWithOutputAlwaysWaitingRespectsMinGap) {
  // Each cycle: a 5 ms gap after the pause, then a 100 us pause.
  const Counts r = simulate(eager(50ms, 5ms), 1s, 100us, [](auto) { return true; });
  EXPECT_EQ(r.timer, 0);
  EXPECT_EQ(r.output, 196);        // floor(1 s / 5.1 ms)
  EXPECT_LE(r.total(), 1000 / 5);  // never more than one per min-gap
}

TEST(CommitTrigger, EagerOutputCheckpointFollowsTheOutputNotTheTimer) {
  // Output appears once, 10 ms after the start; the interval is long.
  const Clock::time_point at = Clock::time_point{} + 1s + 10ms;
  bool taken = false;
  CommitTrigger trigger(eager(1s, 1ms));
  trigger.start(Clock::time_point{} + 1s);
  auto due = trigger.next(false);
  EXPECT_EQ(due.why, CheckpointTrigger::kTimer);
  EXPECT_EQ(due.when, Clock::time_point{} + 2s);
  due = trigger.next(true);  // output is held now (at 10 ms): due at once (gap passed)
  EXPECT_EQ(due.why, CheckpointTrigger::kOutput);
  EXPECT_LE(due.when, at);
  trigger.on_checkpoint(at, at + 100us, due.why);
  taken = true;
  // Right after it, new output waits for the gap after that pause.
  due = trigger.next(true);
  EXPECT_EQ(due.when, at + 100us + 1ms);
  // Without output, the interval counts from that checkpoint.
  due = trigger.next(false);
  EXPECT_EQ(due.when, at + 1s);
  EXPECT_TRUE(taken);
}

TEST(CommitTrigger, EagerKeepsTheIntervalAsTheLongestTimeBetweenCheckpoints) {
  // Output only during the first 100 ms; then the timer alone.
  const Clock::time_point until = Clock::time_point{} + 1s + 100ms;
  const Counts r = simulate(eager(50ms, 10ms), 1s, 100us, [&](auto now) { return now < until; });
  // At 10, 20.1, ..., 90.8 ms: a gap after the start, then gap + pause apart.
  EXPECT_EQ(r.output, 9);
  // From the last output checkpoint (90.8 ms) on, one per 50 ms.
  EXPECT_GE(r.timer, 17);
  EXPECT_LE(r.timer, 18);
}

TEST(CommitTrigger, LongPausesWidenTheGapToCapTheStoppedFraction) {
  // 1 ms pauses with min-gap 0 would stop the guest almost all the time; a
  // cap of 0.25 makes the gap 3 ms, so one pause per 4 ms: at 0, 4, ..., 1000 ms.
  const Counts r = simulate(eager(50ms, 0us, 0.25), 1s, 1ms, [](auto) { return true; });
  EXPECT_EQ(r.output, 251);
  // The first pause came before any was measured (gap = min-gap = 0); from
  // then on the guest was stopped a quarter of the time.
  const double stopped = std::chrono::duration<double>(r.stopped - 1ms).count();
  EXPECT_LE(stopped, 0.25 + 1e-9);
}

TEST(CommitTrigger, FaultTimeCountsWithThePauseAgainstTheBudget) {
  // 1 ms pauses, and after each the guest loses 1 ms to write-protect faults
  // in the gap that follows: with f = 0.25 the cycle must be 8 ms (2 ms lost of
  // every 8), so the gap is 7 ms: one checkpoint per 8 ms, at 0, 8, ..., 1000 ms.
  CommitTrigger trigger(eager(50ms, 0us, 0.25));
  const Clock::time_point start = Clock::time_point{} + 1s;
  trigger.start(start);
  Clock::time_point now = start;
  int checkpoints = 0;
  Clock::duration lost{};
  while (true) {
    const auto due = trigger.next(true, GuestActivity::kRunnable);
    if (due.when > start + 1s) break;
    now = std::max(now, due.when);
    // The faults of the gap before a pause are reported with it (the same
    // each time, so the averages are exact from the first).
    trigger.on_checkpoint(now, now + 1ms, due.why, 1000us);
    lost += 2ms;
    now += 1ms;
    ++checkpoints;
  }
  EXPECT_EQ(checkpoints, 126);
  EXPECT_EQ(trigger.gap(), 7ms);
  // The first pause came before any was measured; from then on the guest
  // was stopped or faulting a quarter of the time.
  EXPECT_LE(std::chrono::duration<double>(lost - 2ms).count(), 0.25 + 1e-9);
  // Without faults the same pauses get a 3 ms gap.
  CommitTrigger no_faults(eager(50ms, 0us, 0.25));
  no_faults.start(start);
  no_faults.on_checkpoint(start, start + 1ms, CheckpointTrigger::kOutput);
  EXPECT_EQ(no_faults.gap(), 3ms);
}

TEST(CommitTrigger, ShorteningTheIntervalTakesEffectAtOnce) {
  CommitPolicy p;
  p.interval = 10s;
  CommitTrigger trigger(p);
  const Clock::time_point t = Clock::time_point{} + 1s;
  trigger.start(t);
  EXPECT_EQ(trigger.next(false).when, t + 10s);
  p.interval = 20ms;
  trigger.set_policy(p);
  EXPECT_EQ(trigger.next(false).when, t + 20ms);
}

TEST(CommitTrigger, APostponedPauseIsRetriedAfterAnIntervalNotAtOnce) {
  CommitPolicy p;
  p.interval = 50ms;
  CommitTrigger trigger(p);
  const Clock::time_point t = Clock::time_point{} + 1s;
  trigger.start(t);
  trigger.on_postponed(t + 2s);
  EXPECT_EQ(trigger.next(false).when, t + 2s + 50ms);
}

TEST(CommitTrigger, AWaitingGuestIsCheckpointedWithoutTheGap) {
  // Min-gap one second: a runnable guest's output waits for it, a waiting
  // guest's does not (stopping it costs nothing).
  CommitTrigger trigger(eager(50ms, 1s));
  const Clock::time_point t = Clock::time_point{} + 1s;
  trigger.start(t);
  trigger.on_checkpoint(t, t + 100us, CheckpointTrigger::kOutput);
  auto due = trigger.next(true, GuestActivity::kWaiting);
  EXPECT_EQ(due.why, CheckpointTrigger::kOutput);
  EXPECT_EQ(due.when, t + 100us);
  // Runnable, or nobody can tell: the gap (here the interval comes first).
  for (auto guest : {GuestActivity::kRunnable, GuestActivity::kUnknown}) {
    due = trigger.next(true, guest);
    EXPECT_EQ(due.why, CheckpointTrigger::kTimer);
    EXPECT_EQ(due.when, t + 50ms);
  }
  // Without output, a waiting guest gets the interval, not a checkpoint.
  due = trigger.next(false, GuestActivity::kWaiting);
  EXPECT_EQ(due.why, CheckpointTrigger::kTimer);
  EXPECT_EQ(due.when, t + 50ms);
  // Interval mode ignores both.
  CommitPolicy p;
  p.mode = CommitMode::kInterval;
  p.interval = 50ms;
  trigger.set_policy(p);
  EXPECT_EQ(trigger.next(true, GuestActivity::kWaiting).why, CheckpointTrigger::kTimer);
}

TEST(CommitTrigger, BackToBackForAWaitingGuestTheBudgetForARunnableOne) {
  // 200 us pauses, min-gap 1 ms, f = 0.25: a guest that always waits when
  // output is held gets checkpoints back to back (one per pause); one that is
  // always runnable keeps at least 3/4 of its time.
  const auto policy = eager(50ms, 1ms, 0.25);
  const Clock::time_point t0{};
  auto run = [&](GuestActivity guest) {
    CommitTrigger trigger(policy);
    Clock::time_point now = t0 + 1s;
    trigger.start(now);
    Counts c;
    while (now < t0 + 2s) {
      const auto due = trigger.next(true, guest);
      now = std::max(now, due.when);
      trigger.on_checkpoint(now, now + 200us, due.why);
      ++(due.why == CheckpointTrigger::kOutput ? c.output : c.timer);
      c.stopped += 200us;
      now += 200us;
    }
    return c;
  };
  const Counts waiting = run(GuestActivity::kWaiting);
  EXPECT_EQ(waiting.output, 5000);  // 1 s / 200 us
  const Counts runnable = run(GuestActivity::kRunnable);
  EXPECT_EQ(runnable.output, 834);  // 1 s / 1.2 ms
  EXPECT_LE(std::chrono::duration<double>(runnable.stopped).count(), 0.25);
}

TEST(CommitTrigger, AfterAPostponedPauseEvenAWaitingGuestGetsTheGapFirst) {
  // The postponed attempt raised the Update gate for its whole timeout: the
  // guest gets a gap of running before the gate goes up again.
  CommitTrigger trigger(eager(50ms, 1ms));
  const Clock::time_point t = Clock::time_point{} + 1s;
  trigger.start(t);
  trigger.on_postponed(t + 2s);
  EXPECT_EQ(trigger.next(true, GuestActivity::kWaiting).when, t + 2s + 1ms);
  trigger.on_checkpoint(t + 3s, t + 3s + 100us, CheckpointTrigger::kOutput);
  EXPECT_EQ(trigger.next(true, GuestActivity::kWaiting).when, t + 3s + 100us);
}

}  // namespace
}  // namespace romulus::checkpoint::commit_trigger_test
