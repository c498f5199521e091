// The Update gate across real processes: pause() waits for open Updates, holds
// new ones back, and the guest is stopped with no Update open.
#include <gtest/gtest.h>

#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/offset_ptr.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <vector>

#include "checkpoint/guest_process.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_guest.h"

namespace romulus::checkpoint::update_gate_test {
namespace {

using namespace std::chrono_literals;
using romulus::testing::process_state;
using romulus::testing::TestGuestHarness;

constexpr size_t kArenaBytes = 1 << 20;

TEST(UpdateGate, PauseWithNoUpdateOpenStopsTheGuest) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  ASSERT_OK(h.guest->pause(30s));
  EXPECT_TRUE(h.guest->paused());
  EXPECT_EQ(process_state(h.guest->pid()), 'T');
  ASSERT_OK(h.guest->resume());
  EXPECT_EQ(h.command("r 0").substr(0, 2), "ok");  // runs again
}

TEST(UpdateGate, OpenUpdateBlocksPauseUntilItCloses) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  ASSERT_EQ(h.command("ub"), "ok");
  auto paused = std::async(std::launch::async, [&] { return h.guest->pause(600s); });
  // pause() cannot finish while the Update is open, however long we look.
  EXPECT_EQ(paused.wait_for(200ms), std::future_status::timeout);
  EXPECT_EQ(h.guest->control()->open_updates.load(), 1u);
  // The guest still runs (only new Updates are held back), so it closes the Update;
  // it may be stopped before it answers.
  h.send("ue");
  Status s = paused.get();
  ASSERT_OK(s);
  EXPECT_EQ(process_state(h.guest->pid()), 'T');
  EXPECT_EQ(h.guest->control()->open_updates.load(), 0u);
  EXPECT_GE(h.guest->control()->pause_waits.load(), 1u);
  ASSERT_OK(h.guest->resume());
  EXPECT_EQ(h.reply(), "ok");
}

TEST(UpdateGate, UpdateHeldPastGateTimeoutPostponesThePause) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  ASSERT_EQ(h.command("ub"), "ok");
  Status s = h.guest->pause(50ms);
  EXPECT_EQ(s.code(), StatusCode::kTimeout);
  EXPECT_EQ(s.message(), "guest held an Update open for more than 50 ms; checkpoint postponed");
  EXPECT_FALSE(h.guest->paused());
  EXPECT_EQ(h.guest->control()->pause_pending.load(), 0u);
  // The guest continues, inside and outside Updates.
  EXPECT_EQ(h.command("w 100 1 5"), "ok");
  EXPECT_EQ(h.command("ue"), "ok");
  EXPECT_EQ(h.command("nested"), "ok");
  ASSERT_OK(h.guest->pause(30s));
  ASSERT_OK(h.guest->resume());
}

TEST(UpdateGate, NestedUpdatesDoNotDeadlockAndCountOnce) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  EXPECT_EQ(h.command("nested"), "ok");
  ASSERT_EQ(h.command("ub"), "ok");
  ASSERT_EQ(h.command("ub"), "ok");
  EXPECT_EQ(h.guest->control()->open_updates.load(), 1u);
  ASSERT_EQ(h.command("ue"), "ok");
  EXPECT_EQ(h.guest->control()->open_updates.load(), 1u);
  ASSERT_EQ(h.command("ue"), "ok");
  EXPECT_EQ(h.guest->control()->open_updates.load(), 0u);
  ASSERT_OK(h.guest->pause(30s));
  ASSERT_OK(h.guest->resume());
}

TEST(UpdateGate, ManyThreadsUpdatingWhilePausedRepeatedly) {
  // Each guest thread i increments a[i] (page 1+2i) then b[i] (page 2+2i) inside
  // one Update, so a stopped guest with no Update open has a[i] == b[i].
  constexpr int kThreads = 4;
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  ASSERT_EQ(h.command("threads " + std::to_string(kThreads)), "ok");
  const guest::ControlPage* cp = h.guest->control();
  for (int round = 0; round < 300; ++round) {
    Status s = h.guest->pause(60s);
    ASSERT_OK(s);
    EXPECT_EQ(cp->open_updates.load(), 0u) << "round " << round;
    EXPECT_EQ(process_state(h.guest->pid()), 'T') << "round " << round;
    for (int i = 0; i < kThreads; ++i) {
      uint64_t a, b;
      std::memcpy(&a, h.arena.data() + (1 + 2 * i) * 4096, 8);
      std::memcpy(&b, h.arena.data() + (2 + 2 * i) * 4096, 8);
      ASSERT_EQ(a, b) << "thread " << i << " round " << round;
    }
    ASSERT_OK(h.guest->resume());
  }
  EXPECT_EQ(cp->pauses.load(), 300u);
  EXPECT_EQ(h.command("stopthreads"), "ok");
}

// The counter guest's root object (examples/counter/counter.cc).
struct CounterState {
  boost::interprocess::offset_ptr<uint8_t> pages;
  uint64_t counters;
};

TEST(UpdateGate, CounterGuestIsConsistentAtEveryPause) {
  constexpr uint64_t kCounters = 64;
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", 4 << 20,
                    {romulus::testing::counter_path(), "--counters", std::to_string(kCounters)}));
  // Find the counters as a backup would: open the segment on a copy of a paused arena.
  std::vector<uint8_t> copy(h.arena.size());
  size_t offset = 0;
  for (;;) {
    ASSERT_OK(h.guest->pause(30s));
    std::memcpy(copy.data(), h.arena.data(), copy.size());
    ASSERT_OK(h.guest->resume());
    boost::interprocess::managed_external_buffer segment(boost::interprocess::open_only,
                                                         copy.data(), copy.size());
    auto found = segment.find<CounterState>("romulus-counter");
    if (found.first != nullptr && found.first->pages != nullptr) {
      ASSERT_EQ(found.first->counters, kCounters);
      offset = static_cast<size_t>(found.first->pages.get() - copy.data());
      break;
    }
    ASSERT_FALSE(h.guest->poll_exit().has_value());
  }
  uint64_t last = 0;
  for (int round = 0; round < 300; ++round) {
    ASSERT_OK(h.guest->pause(60s));
    uint64_t first;
    std::memcpy(&first, h.arena.data() + offset, 8);
    for (uint64_t i = 1; i < kCounters; ++i) {
      uint64_t v;
      std::memcpy(&v, h.arena.data() + offset + i * 4096, 8);
      ASSERT_EQ(v, first) << "counter " << i << " round " << round;
    }
    EXPECT_GE(first, last);
    last = first;
    ASSERT_OK(h.guest->resume());
  }
}

TEST(UpdateGate, PauseOfAnExitedGuestIsAborted) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  h.command("exit 7");  // no answer: the guest is gone
  Status s = h.guest->pause(30s);
  while (s.is_ok()) {  // raced with the exit: the stop came first
    ASSERT_OK(h.guest->resume());
    s = h.guest->pause(30s);
  }
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  EXPECT_EQ(s.message(), "guest exited with status 7");
}

}  // namespace
}  // namespace romulus::checkpoint::update_gate_test
