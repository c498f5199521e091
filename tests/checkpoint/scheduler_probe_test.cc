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

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "guest/linux_abi.h"

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

TEST(ParseStatThreads, ReadsField20AfterTheLastParenthesis) {
  const char* line =
      "4321 (a) b) S 1 4321 4321 0 -1 4194560 1234 0 0 0 10 3 0 0 20 0 7 0 555 1000 50 "
      "18446744073709551615";
  EXPECT_EQ(parse_stat_threads(line), 7);
  EXPECT_EQ(parse_stat_threads("1 (x) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1\n"), 1);
  EXPECT_EQ(parse_stat_threads("1 (x) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0"), std::nullopt);
  EXPECT_EQ(parse_stat_threads("1 (x) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 7x 0"), std::nullopt);
  EXPECT_EQ(parse_stat_threads("no parenthesis here"), std::nullopt);
}

TEST(SyscallText, BlockedOutsideASystemCallOrRunningIsBusy) {
  EXPECT_TRUE(syscall_text_says_busy("-1 0x7ffd5d1c3e08 0x55d0c2a1b2c4\n"));
  EXPECT_TRUE(syscall_text_says_busy("-1\n"));
  EXPECT_TRUE(syscall_text_says_busy("running\n"));
  // Waiting in a system call: its number, then its arguments.
  EXPECT_FALSE(syscall_text_says_busy("232 0x4 0x7ffd 0x400 0xffffffff 0x0 0x0 0x7ffd 0x7f\n"));
  EXPECT_FALSE(syscall_text_says_busy("0 0x3 0x55 0x1000 0x0 0x0 0x0 0x7ffd 0x7f\n"));
  EXPECT_FALSE(syscall_text_says_busy("-10 0x1 0x2\n"));
  EXPECT_FALSE(syscall_text_says_busy(""));
  EXPECT_FALSE(syscall_text_says_busy("-"));
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

// The state letter of `pid` now, or 0.
char state_of(pid_t pid) {
  char buf[256];
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  const size_t n = std::fread(buf, 1, sizeof buf, f);
  std::fclose(f);
  return parse_stat_state(std::string_view(buf, n)).value_or(0);
}

TEST(SchedulerProbe, AChildBlockedInAWriteProtectFaultIsBusyNotWaiting) {
  // The child write-protects a page of its own in synchronous mode and writes
  // it: nobody resolves the fault, so it stays blocked in it (as a guest's
  // thread does under --tracker uffd-sync until the supervisor's handler
  // resolves it). Blocked, but in the middle of its work.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) _exit(2);
    *static_cast<volatile char*>(page) = 1;  // populated
    const int uffd = guest::linux_abi::userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (uffd < 0) _exit(3);
    if (guest::linux_abi::arm_write_protect(uffd, page, 4096,
                                            guest::linux_abi::kUffdSyncWantedFeatures) != nullptr)
      _exit(4);
    *static_cast<volatile char*>(page) = 2;  // blocks here
    _exit(0);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reap{pid};
  // Wait until it is blocked (or has exited: no write-protect here).
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  char st = 0;
  while ((st = state_of(pid)) != 'S' && st != 'D' && st != 'Z' &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  if (st == 'Z') {
    int status = 0;
    waitpid(pid, &status, 0);
    GTEST_SKIP() << "synchronous write-protect unavailable here (child exit " << WEXITSTATUS(status)
                 << ")";
  }
  ASSERT_TRUE(st == 'S' || st == 'D') << "state " << st;
  SchedulerProbe probe(pid);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(probe.read(), GuestActivity::kRunnable) << "read " << i;
}

// A forked child whose main thread blocks reading a pipe; a byte written to
// it starts a thread that spins (and, with `replace`, first ends the helper
// thread, so that the thread count stays the same).
class ThreadedChild {
 public:
  explicit ThreadedChild(bool replace) {
    int go[2], started[2];
    if (pipe(go) != 0) return;
    if (pipe(started) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(go[1]);
      close(started[0]);
      std::atomic<bool> stop_helper{false};
      // A helper thread, blocked nearly all the time, for `replace` to end.
      std::thread helper([&] {
        while (!stop_helper.load()) std::this_thread::sleep_for(1ms);
      });
      char c;
      if (read(go[0], &c, 1) != 1) _exit(1);
      if (replace) {
        stop_helper = true;
        helper.join();
      }
      std::thread([] {
        volatile uint64_t spins = 0;
        for (;;) spins = spins + 1;
      }).detach();
      if (write(started[1], "x", 1) != 1) _exit(1);
      for (;;) pause();
    }
    close(go[0]);
    close(started[1]);
    go_ = go[1];
    started_ = started[0];
  }
  ~ThreadedChild() {
    if (go_ >= 0) close(go_);
    if (started_ >= 0) close(started_);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Starts the spinning thread; returns once the main thread is blocked again
  // (in pause()), so that only the new thread can be seen running.
  void start_spinner() {
    ASSERT_EQ(write(go_, "x", 1), 1);
    char c;
    ASSERT_EQ(read(started_, &c, 1), 1);
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (state_of(pid_) != 'S' && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(state_of(pid_), 'S');
  }

 private:
  pid_t pid_ = -1;
  int go_ = -1, started_ = -1;
};

// Reads until `want` or 20 s.
GuestActivity read_until(SchedulerProbe& probe, GuestActivity want) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  GuestActivity seen = GuestActivity::kUnknown;
  while ((seen = probe.read()) != want && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  return seen;
}

TEST(SchedulerProbe, ANewThreadThatSpinsIsSeenThoughTheListIsCached) {
  ThreadedChild child(/*replace=*/false);
  ASSERT_GT(child.pid(), 0);
  SchedulerProbe probe(child.pid());
  // The helper sleeps 1 ms at a time: waiting nearly always.
  ASSERT_EQ(read_until(probe, GuestActivity::kWaiting), GuestActivity::kWaiting);
  const uint64_t listed = probe.listings();
  for (int i = 0; i < 20; ++i) (void)probe.read();
  EXPECT_EQ(probe.listings(), listed) << "the same threads were listed again";
  child.start_spinner();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(probe.read(), GuestActivity::kRunnable) << "read " << i;
  EXPECT_GT(probe.listings(), listed);
}

TEST(SchedulerProbe, AThreadThatReplacesAnEndedOneIsSeenAtTheSameCount) {
  ThreadedChild child(/*replace=*/true);
  ASSERT_GT(child.pid(), 0);
  SchedulerProbe probe(child.pid());
  ASSERT_EQ(read_until(probe, GuestActivity::kWaiting), GuestActivity::kWaiting);
  child.start_spinner();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(probe.read(), GuestActivity::kRunnable) << "read " << i;
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
