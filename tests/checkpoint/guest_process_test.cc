// GuestProcess: starting, attach handshake, exit reporting, stop, and the
// parent-death signal, with real child processes.
#include "checkpoint/guest_process.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "common/shared_memory.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_guest.h"

namespace romulus::checkpoint::guest_process_test {
namespace {

using namespace std::chrono_literals;
using romulus::testing::TestGuestHarness;

struct Memfds {
  common::SharedMemory arena = std::move(common::SharedMemory::create("arena", 1 << 20)).value();
  common::SharedMemory control = std::move(common::SharedMemory::create("control", 4096)).value();
  GuestSpec spec(std::vector<std::string> argv) const {
    GuestSpec s;
    s.argv = std::move(argv);
    s.arena_fd = arena.fd();
    s.arena_size = arena.size();
    s.control_fd = control.fd();
    s.tracker = "compare";
    return s;
  }
};

// Waits (without a time limit of its own) for the guest to exit; returns the description.
std::string wait_exit(GuestProcess& g) {
  Status s = g.wait_attached(600s);
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.to_string();
  return *g.poll_exit();
}

TEST(GuestProcess, ExitStatusIsReported) {
  Memfds m;
  auto g = GuestProcess::start(m.spec({"/bin/sh", "-c", "exit 3"}));
  ASSERT_OK(g);
  EXPECT_EQ(wait_exit(*g), "guest exited with status 3");
  Status s = g->wait_attached(1s);
  EXPECT_EQ(s.message(), "guest exited with status 3 before calling romulus::guest::attach()");
}

TEST(GuestProcess, DeathBySignalIsReported) {
  Memfds m;
  auto g = GuestProcess::start(m.spec({"/bin/sh", "-c", "kill -SEGV $$"}));
  ASSERT_OK(g);
  std::string exit = wait_exit(*g);
  EXPECT_EQ(exit.rfind("guest was killed by signal 11 (Segmentation fault)", 0), 0u) << exit;
}

TEST(GuestProcess, MissingCommandIsReportedAsNotFound) {
  Memfds m;
  auto g = GuestProcess::start(m.spec({"romulus-no-such-command"}));
  ASSERT_FALSE(g.is_ok());
  EXPECT_EQ(g.status().message(),
            "guest command not found: 'romulus-no-such-command' (No such file or directory)");
  auto h = GuestProcess::start(m.spec({"/nonexistent/romulus-guest"}));
  ASSERT_FALSE(h.is_ok());
  EXPECT_EQ(h.status().message(),
            "guest command not found: '/nonexistent/romulus-guest' (No such file or directory)");
}

TEST(GuestProcess, GuestThatNeverAttachesTimesOut) {
  Memfds m;
  auto g = GuestProcess::start(m.spec({"/bin/sleep", "600"}));
  ASSERT_OK(g);
  Status s = g->wait_attached(100ms);
  EXPECT_EQ(s.code(), StatusCode::kTimeout);
  EXPECT_EQ(s.message(), "guest did not call romulus::guest::attach() within 100 ms");
  ASSERT_OK(g->stop(10s));
  EXPECT_EQ(*g->poll_exit(), "guest was killed by signal 15 (Terminated)");
}

TEST(GuestProcess, AttachFailureCarriesTheGuestsMessage) {
  Memfds m;
  GuestSpec spec = m.spec({romulus::testing::testguest_path()});
  spec.extra_env = {{"ROMULUS_TRACKER", "bogus"}};
  auto g = GuestProcess::start(spec);
  ASSERT_OK(g);
  Status s = g->wait_attached(600s);
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_NE(s.message().find("unknown ROMULUS_TRACKER 'bogus'"), std::string::npos) << s.message();
}

TEST(GuestProcess, GuestSeesResumeAndTracker) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", 1 << 20, {}, 42));
  std::string info = h.command("info");
  EXPECT_NE(info.find("resumed=1"), std::string::npos) << info;
  EXPECT_NE(info.find("tracker=compare"), std::string::npos) << info;
  EXPECT_NE(info.find("size=1048576"), std::string::npos) << info;
}

TEST(GuestProcess, ASecondProcessCannotAttachTheSameArena) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", 1 << 20));
  ASSERT_EQ(h.write(100, 1, 7), "ok");
  // The child inherits ROMULUS_ARENA_FD and ROMULUS_CONTROL_FD; its attach is refused
  // (testguest exits 3 on attach failure) and leaves the parent's attach as it was.
  EXPECT_EQ(h.command("spawn"), "ok 3");
  EXPECT_EQ(h.command("r 100"), "ok 7");
  EXPECT_EQ(h.guest->poll_exit(), std::nullopt);
}

TEST(GuestProcess, GuestWritesAreVisibleThroughTheSupervisorsMapping) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", 1 << 20));
  ASSERT_EQ(h.write(12345, 3, 0x42), "ok");
  EXPECT_EQ(h.arena.data()[12345], 0x42);
  EXPECT_EQ(h.arena.data()[12347], 0x42);
  h.arena.data()[500000] = 9;
  EXPECT_EQ(h.command("r 500000"), "ok 9");
}

TEST(GuestProcess, StopEndsAPausedGuest) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", 1 << 20));
  ASSERT_OK(h.guest->pause(30s));
  ASSERT_OK(h.guest->stop(10s));
  EXPECT_EQ(*h.guest->poll_exit(), "guest was killed by signal 15 (Terminated)");
  EXPECT_EQ(h.guest->pause(1s).code(), StatusCode::kAborted);
}

TEST(GuestProcess, CrashIsReportedByPollExit) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", 1 << 20));
  h.send("crash");
  EXPECT_EQ(h.reply(), "");  // EOF: the guest is gone
  std::optional<std::string> exit;
  while (!(exit = h.guest->poll_exit())) {
    struct pollfd p = {h.guest->pidfd(), POLLIN, 0};
    poll(&p, 1, 1000);
  }
  EXPECT_EQ(exit->rfind("guest was killed by signal 11 (Segmentation fault)", 0), 0u) << *exit;
}

TEST(GuestProcess, KillingTheSupervisorKillsTheGuest) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t supervisor = fork();
  ASSERT_GE(supervisor, 0);
  if (supervisor == 0) {
    // The stand-in supervisor: start a guest, say its pid, wait to be killed.
    close(pipefd[0]);
    Memfds m;
    auto g = GuestProcess::start(m.spec({"/bin/sleep", "600"}));
    pid_t pid = g.is_ok() ? g->pid() : -1;
    if (write(pipefd[1], &pid, sizeof(pid)) != sizeof(pid)) _exit(1);
    for (;;) pause();
  }
  close(pipefd[1]);
  pid_t guest = -1;
  ASSERT_EQ(read(pipefd[0], &guest, sizeof(guest)), static_cast<ssize_t>(sizeof(guest)));
  close(pipefd[0]);
  ASSERT_GT(guest, 0);
  int guest_fd = static_cast<int>(syscall(SYS_pidfd_open, guest, 0));
  ASSERT_GE(guest_fd, 0);
  ASSERT_EQ(kill(supervisor, SIGKILL), 0);
  int ws = 0;
  ASSERT_EQ(waitpid(supervisor, &ws, 0), supervisor);
  // The guest must die too: its pidfd becomes readable once it has exited.
  struct pollfd p = {guest_fd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 600 * 1000), 1) << "guest survived its supervisor";
  close(guest_fd);
}

}  // namespace
}  // namespace romulus::checkpoint::guest_process_test
