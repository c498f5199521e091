// LeaseGuard: the pipe's lines decoded as hostile input, and the guard
// process run for real: a forked "node" that starts a forked guard, tells it
// leases, and then dies, stops, or says "exit". The guard's witness records
// each release on a pipe the test reads.
#include "witness/lease_guard.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::witness::lease_guard_test {
namespace {

using namespace std::chrono_literals;
using Kind = GuardCommand::Kind;

// ---- The pipe's lines

std::vector<GuardCommand> decode(std::string_view text, Status* st = nullptr) {
  GuardCommandReader r;
  std::vector<GuardCommand> out;
  Status s = r.feed(text, &out);
  if (st) *st = s;
  return out;
}

TEST(GuardCommandReader, DecodesLeaseAndExitLines) {
  const auto cmds = decode("lease 42\nlease 0\nexit\n");
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(cmds[0], (GuardCommand{Kind::kLease, 42}));
  EXPECT_EQ(cmds[1], (GuardCommand{Kind::kLease, 0}));
  EXPECT_EQ(cmds[2].kind, Kind::kExit);
}

TEST(GuardCommandReader, AnyByteSplitGivesTheSameCommands) {
  const std::string text = "lease 7694562194386524161\nlease 3\nexit\n";
  const auto whole = decode(text);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    GuardCommandReader r;
    std::vector<GuardCommand> out;
    ASSERT_OK(r.feed(std::string_view(text).substr(0, cut), &out));
    ASSERT_OK(r.feed(std::string_view(text).substr(cut), &out));
    EXPECT_EQ(out, whole) << "cut at " << cut;
  }
}

TEST(GuardCommandReader, AnIncompleteLineIsNotACommandYet) {
  Status st;
  EXPECT_TRUE(decode("lease 42", &st).empty());
  EXPECT_OK(st);
}

TEST(GuardCommandReader, RejectsWhatIsNotALine) {
  for (const char* bad :
       {"lease\n", "lease \n", "lease -1\n", "lease +1\n", "lease 1x\n",
        "lease 99999999999999999999\n", "lease  1\n", "Lease 1\n", "exit \n", "\n", "rm -rf /\n"}) {
    Status st;
    decode(bad, &st);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << bad;
  }
}

TEST(GuardCommandReader, ALineLongerThanTheLimitIsAnErrorThatSticks) {
  GuardCommandReader r;
  std::vector<GuardCommand> out;
  EXPECT_EQ(r.feed(std::string(GuardCommandReader::kMaxLine, '1'), &out).code(),
            StatusCode::kCorrupt);
  EXPECT_EQ(r.feed("lease 1\n", &out).code(), StatusCode::kCorrupt);
  EXPECT_TRUE(out.empty());
}

TEST(GuardCommandReader, EncodesWhatItDecodes) {
  for (const GuardCommand& c :
       {GuardCommand{Kind::kLease, 0}, GuardCommand{Kind::kLease, INT64_MAX},
        GuardCommand{Kind::kExit, 0}, GuardCommand{Kind::kNode, 4321}}) {
    const auto back = decode(encode_guard_command(c));
    ASSERT_EQ(back.size(), 1u);
    EXPECT_EQ(back[0], c);
  }
}

// ---- The lease file

class LeaseFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/romulus-lease-file-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/kv.lease";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  void put(const std::string& text) {
    FILE* f = std::fopen(path_.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(text.c_str(), f);
    std::fclose(f);
  }
  std::string dir_, path_;
};

TEST_F(LeaseFileTest, ReadsBackWhatWasWritten) {
  ASSERT_OK(write_lease_file(path_, {1234, 7694562194386524161}));
  auto f = read_lease_file(path_);
  ASSERT_OK(f);
  EXPECT_EQ(f->node, 1234);
  EXPECT_EQ(f->lease, 7694562194386524161);
  ASSERT_OK(write_lease_file(path_, {1234, 0}));  // replaced, not appended
  EXPECT_EQ(read_lease_file(path_)->lease, 0);
}

TEST_F(LeaseFileTest, RejectsAFileThatIsNotNodeThenLease) {
  for (const char* bad : {"", "lease 5\n", "lease 5\nnode 12\n", "node 12\n",
                          "node 12\nlease 5\nlease 6\n", "node 1\nlease 5\n", "node 12\nlease -5\n",
                          "node 99999999999\nlease 5\n", "node 12\nexit\n"}) {
    put(bad);
    EXPECT_EQ(read_lease_file(path_).status().code(), StatusCode::kCorrupt) << bad;
  }
}

TEST_F(LeaseFileTest, AMissingFileIsAnErrorNotACrash) {
  EXPECT_FALSE(read_lease_file(dir_ + "/none.lease").is_ok());
}

TEST(ProcessExited, ALiveProcessHasNotAZombieHasAndAReapedOneHas) {
  EXPECT_FALSE(process_exited(getpid()));
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  // Not reaped yet: a zombie, which has exited (its files are closed).
  for (int i = 0; i < 2000 && !process_exited(child); ++i) usleep(1000);
  EXPECT_TRUE(process_exited(child));
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  EXPECT_TRUE(process_exited(child));
}

// ---- The guard process

// Records each release as a line "release KEY LEASE" on `fd`; fails the first
// `failures` tries.
class RecordingWitness final : public Witness {
 public:
  RecordingWitness(int fd, int* failures) : fd_(fd), failures_(failures) {}
  Result<LeaseGrant> grant(std::chrono::seconds) override { return no(); }
  Result<std::chrono::seconds> keepalive(LeaseId) override { return no(); }
  Result<AcquireOutcome> acquire(const std::string&, const OwnerValue&, LeaseId) override {
    return no();
  }
  Result<std::optional<Owner>> get(const std::string&) override { return no(); }
  Result<std::chrono::milliseconds> lease_remaining(LeaseId) override { return no(); }
  Status release(const std::string& key, LeaseId lease) override {
    if (*failures_ > 0) {
      --*failures_;
      return Status::unavailable("etcd is away");
    }
    const std::string line = "release " + key + " " + std::to_string(lease) + "\n";
    return ::write(fd_, line.data(), line.size()) == static_cast<ssize_t>(line.size())
               ? Status::ok()
               : Status::io_error("write");
  }
  std::string describe() const override { return "recording"; }

 private:
  static Status no() { return Status::unsupported("not used by the guard"); }
  int fd_;
  int* failures_;
};

// A node process (forked) that writes `lines` into its guard's pipe, starts
// its guard (forked from it, running run_lease_guard()), then runs `then` (by
// default: waits to be killed). A regression: the lines were written after the
// guard started, so a test could kill the node before it wrote them. The guard reports "watching"
// and each release on the results pipe.
class GuardTest : public ::testing::Test {
 protected:
  void start_node(
      const std::string& lines, int witness_failures = 0, std::function<void()> then = [] {
        for (;;) pause();
      }) {
    int results[2];
    ASSERT_EQ(pipe(results), 0);
    node_ = fork();
    ASSERT_GE(node_, 0);
    if (node_ == 0) {
      ::close(results[0]);
      int cmds[2];
      if (pipe(cmds) != 0) _exit(90);
      // Written before the guard starts, so the lines are in the pipe before the
      // guard says "watching" and the test may kill this node.
      if (::write(cmds[1], lines.data(), lines.size()) != static_cast<ssize_t>(lines.size())) {
        _exit(92);
      }
      const pid_t node = getpid();
      const pid_t guard = fork();
      if (guard < 0) _exit(91);
      if (guard == 0) {
        ::close(cmds[1]);
        int failures = witness_failures;
        LeaseGuardConfig c;
        c.node = node;
        c.commands = cmds[0];
        c.key = "/romulus/p/owner";
        c.give_up_for = 10s;
        c.retry_every = 1ms;
        c.open_witness = [&]() -> Result<std::unique_ptr<Witness>> {
          return std::unique_ptr<Witness>(
              std::make_unique<RecordingWitness>(results[1], &failures));
        };
        c.on_watching = [&] { (void)!::write(results[1], "watching\n", 9); };
        _exit(run_lease_guard(c));
      }
      ::close(cmds[0]);
      ::close(results[1]);
      then();
      _exit(0);
    }
    ::close(results[1]);
    results_ = results[0];
    ASSERT_EQ(read_line(), "watching");
  }

  // The next line from the guard ("" at its end, or after 20 s of nothing:
  // a deadline for a hung test, not a timing check).
  std::string read_line(std::chrono::milliseconds wait = 20s) {
    std::string line;
    char c;
    for (;;) {
      pollfd p{results_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return line;
      if (::read(results_, &c, 1) != 1) return line;
      if (c == '\n') return line;
      line += c;
    }
  }

  void kill_node(int sig = SIGKILL) {
    ASSERT_EQ(::kill(node_, sig), 0);
    if (sig == SIGKILL) {
      int status = 0;
      ASSERT_EQ(waitpid(node_, &status, 0), node_);
      node_ = -1;
    }
  }

  void TearDown() override {
    if (node_ > 0) {
      ::kill(node_, SIGKILL);
      waitpid(node_, nullptr, 0);
    }
    if (results_ >= 0) ::close(results_);
  }

  pid_t node_ = -1;
  int results_ = -1;
};

TEST_F(GuardTest, ANodeKilledWhileHoldingALeaseHasThatLeaseGivenUp) {
  start_node("lease 41\nlease 42\n");
  kill_node();
  EXPECT_EQ(read_line(), "release /romulus/p/owner 42");
  EXPECT_EQ(read_line(), "");  // and the guard is gone
}

TEST_F(GuardTest, ANodeThatHeldNoLeaseWhenKilledHasNothingGivenUp) {
  start_node("lease 42\nlease 0\n");
  kill_node();
  EXPECT_EQ(read_line(), "");
}

TEST_F(GuardTest, ANodeThatSaysExitHasNothingGivenUpWhenItEnds) {
  start_node("lease 42\nexit\n", 0, [] { usleep(100 * 1000); });
  int status = 0;
  ASSERT_EQ(waitpid(node_, &status, 0), node_);
  node_ = -1;
  EXPECT_EQ(read_line(), "");
}

TEST_F(GuardTest, AStoppedNodeKeepsItsLeaseUntilItReallyDies) {
  start_node("lease 42\n");
  kill_node(SIGSTOP);
  // Stopped is not dead: nothing is given up while it stays stopped.
  EXPECT_EQ(read_line(300ms), "");
  kill_node();
  EXPECT_EQ(read_line(), "release /romulus/p/owner 42");
}

TEST_F(GuardTest, GarbageFromTheNodeKeepsTheLastLeaseItWasTold) {
  start_node("lease 42\nbogus\nlease 43\n");
  kill_node();
  EXPECT_EQ(read_line(), "release /romulus/p/owner 42");
}

TEST_F(GuardTest, AWitnessThatFailsIsTriedAgainUntilItAnswers) {
  start_node("lease 42\n", /*witness_failures=*/3);
  kill_node();
  EXPECT_EQ(read_line(), "release /romulus/p/owner 42");
}

}  // namespace
}  // namespace romulus::witness::lease_guard_test
