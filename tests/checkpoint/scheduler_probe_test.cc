// SchedulerProbe on real processes: a child blocked in a read is waiting, a
// child spinning is runnable, a reaped child is unknown. And the /proc stat
// parser on command names chosen to confuse it. No timing is asserted: the
// blocked child is waited for with a generous deadline, and a spinning
// process is in state R whether it is on a CPU or queued for one.
#include "checkpoint/scheduler_probe.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace romulus::checkpoint::scheduler_probe_test {
namespace {

using namespace std::chrono_literals;

TEST(ParseStatState, ReadsTheFieldAfterTheLastParenthesis) {
  EXPECT_EQ(parse_stat_state("1234 (kvstore) S 1 1234 1234 0 -1"), 'S');
  EXPECT_EQ(parse_stat_state("1234 (kvstore) R 1 1234"), 'R');
  // The guest names itself: parentheses, spaces and a state-like letter inside.
  EXPECT_EQ(parse_stat_state("77 (a) R (b) S 1 2 3"), 'S');
  EXPECT_EQ(parse_stat_state("77 ()) R 1"), 'R');
  EXPECT_EQ(parse_stat_state("77 ( ) D 1"), 'D');
}

TEST(ParseStatState, RejectsWhatIsNotAStatLine) {
  EXPECT_EQ(parse_stat_state(""), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 kvstore S 1"), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 (kvstore)"), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 (kvstore) "), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 (kvstore)S 1"), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 (kvstore) 5 1"), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 (kvstore) SS 1"), std::nullopt);
  EXPECT_EQ(parse_stat_state("1234 ) ( S 1"), std::nullopt);
}

// A child running `sh -c SCRIPT`, killed and reaped at the end.
class Child {
 public:
  explicit Child(const char* script) {
    pid_ = fork();
    if (pid_ == 0) {
      execl("/bin/sh", "sh", "-c", script, static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Child() { reap(); }
  pid_t pid() const { return pid_; }
  void reap() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

TEST(SchedulerProbe, AChildBlockedInAReadIsWaiting) {
  // exec replaces sh with sleep: blocked in nanosleep (state S).
  Child child("exec sleep 1000");
  ASSERT_GT(child.pid(), 0);
  SchedulerProbe probe(child.pid());
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  GuestActivity seen = GuestActivity::kUnknown;
  while ((seen = probe.read()) != GuestActivity::kWaiting &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(seen, GuestActivity::kWaiting);
}

TEST(SchedulerProbe, AChildThatSpinsIsRunnableWheneverItIsAsked) {
  Child child("while :; do :; done");
  ASSERT_GT(child.pid(), 0);
  SchedulerProbe probe(child.pid());
  // Until the exec, the forked child may still be in fork's bookkeeping:
  // wait for the first runnable answer, then every answer must say so.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (probe.read() != GuestActivity::kRunnable && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(probe.read(), GuestActivity::kRunnable) << "read " << i;
  }
}

TEST(SchedulerProbe, AGoneProcessIsUnknownNotWaiting) {
  Child child("exec sleep 1000");
  ASSERT_GT(child.pid(), 0);
  SchedulerProbe probe(child.pid());
  (void)probe.read();  // opens the task directory while the child lives
  child.reap();
  EXPECT_EQ(probe.read(), GuestActivity::kUnknown);
  EXPECT_EQ(probe.read(), GuestActivity::kUnknown);
}

}  // namespace
}  // namespace romulus::checkpoint::scheduler_probe_test
