// romulus-kvstore and romulus-kvload as real processes on loopback, without a
// supervisor: the line protocol command by command, pipelining, the limits, a
// full arena, a resume on the same arena (the supervisor's environment made by
// hand), and kvload's --check against a plain server.
//
// The kvstore is started with --port 0 and its "listening on" line tells the
// port. Nothing here asserts on timing; a hung server is caught by ctest's timeout.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "guest/control_page.h"
#include "guest/guest.h"
#include "tests/support/guest_paths.h"

extern char** environ;

namespace romulus::guest::kvstore_test {
namespace {

using Env = std::vector<std::pair<std::string, std::string>>;

// A child process with its stdout on a pipe. Killed (SIGKILL) if still running
// when destroyed.
class Child {
 public:
  // with_stderr: the child's stderr goes to the same pipe as its stdout.
  Child(const std::vector<std::string>& argv, const Env& env, bool with_stderr = false) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return;
    // The environment, minus anything that would make the child think it is
    // supervised, plus env.
    std::vector<std::string> vars;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "ROMULUS_", 8) != 0) vars.emplace_back(*e);
    }
    for (const auto& [k, v] : env) vars.push_back(k + "=" + v);
    std::vector<char*> envp, args;
    for (auto& v : vars) envp.push_back(v.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = argv;
    for (auto& a : argv_copy) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      if (with_stderr) dup2(out[1], 2);
      execve(args[0], args.data(), envp.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
  }
  ~Child() {
    if (pid_ > 0 && status_ < 0) {
      kill(pid_, SIGKILL);
      wait();
    }
    if (stdout_ != nullptr) std::fclose(stdout_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line of the child's stdout without '\n'; nullopt at EOF.
  std::optional<std::string> read_line() {
    std::string line;
    int c;
    while ((c = std::fgetc(stdout_)) != EOF) {
      if (c == '\n') return line;
      line.push_back(static_cast<char>(c));
    }
    if (line.empty()) return std::nullopt;
    return line;
  }

  std::string read_all() {
    std::string all;
    while (auto line = read_line()) all += *line + "\n";
    return all;
  }

  void signal(int sig) { kill(pid_, sig); }

  // Waits for exit: the exit status, or 128 + signal.
  int wait() {
    if (status_ >= 0) return status_;
    int st = 0;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  FILE* stdout_ = nullptr;
};

// A blocking loopback client speaking the line protocol.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return fd_ >= 0; }

  bool send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // The next reply line without '\n'; nullopt on EOF or error.
  std::optional<std::string> read_line() {
    for (;;) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      char chunk[65536];
      ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  // Sends one request line and returns its reply ("<EOF>" if the server closed).
  std::string command(const std::string& line) {
    if (!send(line + "\n")) return "<SEND FAILED>";
    return read_line().value_or("<EOF>");
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

std::string kvstore_path() { return romulus::testing::example_binary("kvstore"); }
std::string kvload_path() { return romulus::testing::example_binary("kvload"); }

// The port from "romulus-kvstore: listening on 127.0.0.1:P" (0 if absent).
uint16_t listening_port(const std::string& line) {
  size_t colon = line.rfind(':');
  if (line.find("listening on 127.0.0.1:") == std::string::npos) return 0;
  return static_cast<uint16_t>(std::stoul(line.substr(colon + 1)));
}

// The unsigned number after "key": in a one-line JSON object; nullopt if absent.
std::optional<uint64_t> json_uint(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return std::nullopt;
  return std::stoull(json.substr(at + key.size() + 3));
}

// A kvstore started alone on a free port.
class KvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  void start(const Env& env) {
    server_ = std::make_unique<Child>(std::vector<std::string>{kvstore_path(), "--port", "0"}, env);
    auto line = server_->read_line();
    ASSERT_TRUE(line.has_value()) << "romulus-kvstore did not start: " << kvstore_path();
    port_ = listening_port(*line);
    ASSERT_NE(port_, 0) << *line;
  }

  std::unique_ptr<Child> server_;
  uint16_t port_ = 0;
};

TEST_F(KvStoreTest, PingAnswersPong) {
  Client c(port_);
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(c.command("PING"), "PONG");
}

TEST_F(KvStoreTest, SetThenGetReturnsTheValueWithItsSpaces) {
  Client c(port_);
  EXPECT_EQ(c.command("SET greeting hello, brave new world"), "OK");
  EXPECT_EQ(c.command("GET greeting"), "VALUE hello, brave new world");
}

TEST_F(KvStoreTest, SetOverwritesAndAcceptsAnEmptyValue) {
  Client c(port_);
  EXPECT_EQ(c.command("SET k first"), "OK");
  EXPECT_EQ(c.command("SET k second"), "OK");
  EXPECT_EQ(c.command("GET k"), "VALUE second");
  EXPECT_EQ(c.command("SET k "), "OK");
  EXPECT_EQ(c.command("GET k"), "VALUE ");
}

TEST_F(KvStoreTest, GetOfAMissingKeyIsNotFound) {
  Client c(port_);
  EXPECT_EQ(c.command("GET nothing"), "NOT_FOUND");
}

TEST_F(KvStoreTest, IncrCountsFromZeroForAMissingKey) {
  Client c(port_);
  EXPECT_EQ(c.command("INCR n"), "INTEGER 1");
  EXPECT_EQ(c.command("INCR n"), "INTEGER 2");
  EXPECT_EQ(c.command("GET n"), "VALUE 2");
  EXPECT_EQ(c.command("SET m -5"), "OK");
  EXPECT_EQ(c.command("INCR m"), "INTEGER -4");
}

TEST_F(KvStoreTest, IncrOfANonIntegerIsAnErrorAndLeavesTheValue) {
  Client c(port_);
  EXPECT_EQ(c.command("SET word twelve"), "OK");
  EXPECT_EQ(c.command("INCR word"), "ERROR not an integer");
  EXPECT_EQ(c.command("SET spaced 1 2"), "OK");
  EXPECT_EQ(c.command("INCR spaced"), "ERROR not an integer");
  EXPECT_EQ(c.command("GET word"), "VALUE twelve");
}

TEST_F(KvStoreTest, DelRemovesAKeyAndReportsAMissingOne) {
  Client c(port_);
  EXPECT_EQ(c.command("SET k v"), "OK");
  EXPECT_EQ(c.command("DEL k"), "DELETED");
  EXPECT_EQ(c.command("GET k"), "NOT_FOUND");
  EXPECT_EQ(c.command("DEL k"), "NOT_FOUND");
}

TEST_F(KvStoreTest, SizeCountsTheKeys) {
  Client c(port_);
  EXPECT_EQ(c.command("SIZE"), "SIZE 0");
  EXPECT_EQ(c.command("SET a 1"), "OK");
  EXPECT_EQ(c.command("SET b 2"), "OK");
  EXPECT_EQ(c.command("SET a 3"), "OK");
  EXPECT_EQ(c.command("SIZE"), "SIZE 2");
  EXPECT_EQ(c.command("DEL a"), "DELETED");
  EXPECT_EQ(c.command("SIZE"), "SIZE 1");
}

TEST_F(KvStoreTest, UnknownCommandsAndWrongArgumentsAreErrors) {
  Client c(port_);
  EXPECT_EQ(c.command("FLUSHALL"), "ERROR unknown command");
  EXPECT_EQ(c.command(""), "ERROR unknown command");
  EXPECT_EQ(c.command("SET lonely"), "ERROR wrong number of arguments");
  EXPECT_EQ(c.command("GET a b"), "ERROR wrong number of arguments");
  EXPECT_EQ(c.command("DEL"), "ERROR wrong number of arguments");
  EXPECT_EQ(c.command("PING now"), "ERROR wrong number of arguments");
  EXPECT_EQ(c.command("PING"), "PONG");  // the connection still serves
}

TEST_F(KvStoreTest, CommandNamesIgnoreCase) {
  Client c(port_);
  EXPECT_EQ(c.command("set k v"), "OK");
  EXPECT_EQ(c.command("Get k"), "VALUE v");
}

TEST_F(KvStoreTest, CrLfLineEndingsAreTolerated) {
  Client c(port_);
  EXPECT_EQ(c.command("SET k value\r"), "OK");
  EXPECT_EQ(c.command("GET k\r"), "VALUE value");
  EXPECT_EQ(c.command("PING\r"), "PONG");
}

TEST_F(KvStoreTest, PipelinedRequestsAreAnsweredInOrder) {
  Client c(port_);
  std::string batch;
  for (int i = 0; i < 2000; ++i) {
    batch += "SET k" + std::to_string(i) + " v" + std::to_string(i) + "\n";
    batch += "GET k" + std::to_string(i) + "\n";
    batch += "INCR n\n";
  }
  ASSERT_TRUE(c.send(batch));  // one write, many lines
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(c.read_line(), "OK") << i;
    ASSERT_EQ(c.read_line(), "VALUE v" + std::to_string(i)) << i;
    ASSERT_EQ(c.read_line(), "INTEGER " + std::to_string(i + 1)) << i;
  }
  EXPECT_EQ(c.command("SIZE"), "SIZE 2001");
}

TEST_F(KvStoreTest, ALineSplitAcrossWritesIsOneRequest) {
  Client c(port_);
  ASSERT_TRUE(c.send("SE"));
  ASSERT_TRUE(c.send("T k par"));
  ASSERT_TRUE(c.send("ts\nGET k\n"));
  EXPECT_EQ(c.read_line(), "OK");
  EXPECT_EQ(c.read_line(), "VALUE parts");
}

TEST_F(KvStoreTest, KeysAndValuesAtTheirLimitsAreAccepted) {
  Client c(port_);
  std::string key(256, 'k'), value(64 * 1024, 'v');
  EXPECT_EQ(c.command("SET " + key + " " + value), "OK");
  EXPECT_EQ(c.command("GET " + key), "VALUE " + value);
}

TEST_F(KvStoreTest, KeysAndValuesPastTheirLimitsAreRefused) {
  Client c(port_);
  EXPECT_EQ(c.command("SET " + std::string(257, 'k') + " v"), "ERROR key too long");
  EXPECT_EQ(c.command("GET " + std::string(257, 'k')), "ERROR key too long");
  EXPECT_EQ(c.command("SET k " + std::string(64 * 1024 + 1, 'v')), "ERROR value too long");
  EXPECT_EQ(c.command("SIZE"), "SIZE 0");
}

TEST_F(KvStoreTest, ALineLongerThanAnyRequestIsRefusedAndTheConnectionClosed) {
  Client c(port_);
  ASSERT_TRUE(c.send("SET k " + std::string(200 * 1024, 'v')));  // no '\n' at all
  EXPECT_EQ(c.read_line(), "ERROR line too long");
  EXPECT_EQ(c.read_line(), std::nullopt);  // closed
  Client other(port_);
  EXPECT_EQ(other.command("PING"), "PONG");  // the server lives on
}

TEST_F(KvStoreTest, ConnectionsShareOneDataSet) {
  Client a(port_), b(port_);
  EXPECT_EQ(a.command("SET shared 42"), "OK");
  EXPECT_EQ(b.command("GET shared"), "VALUE 42");
}

TEST_F(KvStoreTest, SigtermStopsTheServerCleanly) {
  Client c(port_);
  EXPECT_EQ(c.command("SET k v"), "OK");
  server_->signal(SIGTERM);
  EXPECT_EQ(server_->wait(), 0);
  EXPECT_NE(server_->read_all().find("romulus-kvstore: stopped with 1 keys"), std::string::npos);
}

TEST_F(KvStoreTest, AFullArenaAnswersOutOfMemoryAndKeepsServing) {
  server_.reset();
  start({{"ROMULUS_ARENA_SIZE", std::to_string(256 * 1024)}});
  Client c(port_);
  std::string value(60 * 1024, 'v');
  int stored = 0;
  std::string reply;
  while (stored < 100) {
    reply = c.command("SET k" + std::to_string(stored) + " " + value);
    if (reply != "OK") break;
    ++stored;
  }
  EXPECT_EQ(reply, "ERROR out of memory");
  EXPECT_GT(stored, 0);
  EXPECT_EQ(c.command("PING"), "PONG");
  EXPECT_EQ(c.command("SIZE"), "SIZE " + std::to_string(stored));
  EXPECT_EQ(c.command("GET k0"), "VALUE " + value);
  EXPECT_EQ(c.command("DEL k0"), "DELETED");  // frees room
  EXPECT_EQ(c.command("SET again " + value), "OK");
}

// The environment a supervisor gives its guest, made by hand: an arena memfd,
// a control page, and the service port. Restarting the kvstore on the same
// arena with ROMULUS_RESUMED_EPOCH is what the backup does after a failover.
class SupervisedArena {
 public:
  SupervisedArena() {
    arena_fd_ = memfd_create("kvstore-test-arena", 0);  // inherited by the child
    control_fd_ = memfd_create("kvstore-test-control", 0);
    if (ftruncate(arena_fd_, kArenaBytes) != 0 || ftruncate(control_fd_, 4096) != 0) return;
    ok_ = true;
  }
  ~SupervisedArena() {
    close(arena_fd_);
    close(control_fd_);
  }
  bool ok() const { return ok_; }

  // Overwrites the start of the arena with seeded random bytes.
  void scribble(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> junk(64 * 1024);
    for (auto& b : junk) b = static_cast<uint8_t>(rng() | 1);
    ASSERT_EQ(pwrite(arena_fd_, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
  }

  // The environment for one start; a fresh control page each time.
  Env env(uint16_t port, std::optional<uint64_t> resumed_epoch) {
    void* p = mmap(nullptr, kControlPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, control_fd_, 0);
    if (p != MAP_FAILED) {
      init_control_page(static_cast<ControlPage*>(p));
      munmap(p, kControlPageSize);
    }
    Env env = {{kEnvArenaFd, std::to_string(arena_fd_)},
               {kEnvArenaSize, std::to_string(kArenaBytes)},
               {kEnvControlFd, std::to_string(control_fd_)},
               {kEnvTracker, "compare"},
               {kEnvServicePort, std::to_string(port)}};
    if (resumed_epoch) env.emplace_back(kEnvResumedEpoch, std::to_string(*resumed_epoch));
    return env;
  }

 private:
  static constexpr size_t kArenaBytes = 8 << 20;
  int arena_fd_ = -1, control_fd_ = -1;
  bool ok_ = false;
};

// A loopback port nobody listens on right now.
uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(KvStoreResume, AResumedServerServesTheDataItsArenaHeld) {
  SupervisedArena arena;
  ASSERT_TRUE(arena.ok());
  uint16_t port = free_port();
  {
    Child first({kvstore_path(), "--port", "1"}, arena.env(port, std::nullopt));
    auto line = first.read_line();
    ASSERT_TRUE(line.has_value());
    EXPECT_EQ(listening_port(*line), port) << "the service port must win over --port";
    Client c(port);
    for (int i = 0; i < 500; ++i) {
      ASSERT_EQ(c.command("SET key" + std::to_string(i) + " value" + std::to_string(i)), "OK");
    }
    ASSERT_EQ(c.command("INCR counter"), "INTEGER 1");
    first.signal(SIGKILL);  // every reply came back, so no Update is open
    first.wait();
  }
  Child second({kvstore_path()}, arena.env(port, 7));
  EXPECT_EQ(second.read_line(), "romulus-kvstore: resumed at epoch 7 with 501 keys");
  auto line = second.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(listening_port(*line), port);
  Client c(port);
  EXPECT_EQ(c.command("SIZE"), "SIZE 501");
  EXPECT_EQ(c.command("GET key0"), "VALUE value0");
  EXPECT_EQ(c.command("GET key499"), "VALUE value499");
  EXPECT_EQ(c.command("INCR counter"), "INTEGER 2");
  EXPECT_EQ(c.command("SET key500 new"), "OK");  // the map still grows
  EXPECT_EQ(c.command("SIZE"), "SIZE 502");
}

// A checkpoint taken while the guest was still starting up holds no segment
// yet: the resumed guest builds it, as the original would have.
TEST(KvStoreResume, ResumingACheckpointFromBeforeTheSegmentExistedStartsEmpty) {
  SupervisedArena arena;
  ASSERT_TRUE(arena.ok());
  uint16_t port = free_port();
  Child guest({kvstore_path()}, arena.env(port, 3));
  EXPECT_EQ(guest.read_line(), "romulus-kvstore: resumed at epoch 3 with 0 keys");
  auto line = guest.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(listening_port(*line), port);
  Client c(port);
  EXPECT_EQ(c.command("SET a b"), "OK");
  EXPECT_EQ(c.command("SIZE"), "SIZE 1");
}

// An arena that holds something other than a segment is refused with a clear
// message, never walked.
TEST(KvStoreResume, ResumingAnArenaWithoutASegmentIsRefused) {
  SupervisedArena arena;
  ASSERT_TRUE(arena.ok());
  uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  arena.scribble(seed);
  Child guest({kvstore_path()}, arena.env(free_port(), 3), /*with_stderr=*/true);
  const std::string out = guest.read_all();
  EXPECT_EQ(guest.wait(), 1) << out;
  EXPECT_NE(out.find("holds no managed segment"), std::string::npos) << out;
}

TEST_F(KvStoreTest, KvloadCheckFindsNoAcknowledgedWriteLost) {
  std::string server = "127.0.0.1:" + std::to_string(port_);
  Child load({kvload_path(), "--server", server, "--check", "--ops", "2000", "--json", "--quiet",
              "--seed", "1"},
             {});
  std::string out = load.read_all();
  EXPECT_EQ(load.wait(), 0) << out;
  ASSERT_EQ(out.find('\n'), out.size() - 1) << "one JSON line expected: " << out;
  EXPECT_EQ(json_uint(out, "ops"), 2000u) << out;
  EXPECT_EQ(json_uint(out, "acked_lost"), 0u) << out;
  EXPECT_EQ(json_uint(out, "corrupt"), 0u) << out;
  EXPECT_EQ(json_uint(out, "errors"), 0u) << out;
  EXPECT_EQ(json_uint(out, "unacked_writes"), 0u) << out;
  EXPECT_GT(json_uint(out, "acked_writes").value_or(0), 0u) << out;
  EXPECT_EQ(json_uint(out, "keys_checked"), 2000u) << out;  // 1000 keys + 1000 counters
  for (const char* key : {"ops_per_sec", "p50_ms", "p99_ms", "max_ms", "reconnects"}) {
    EXPECT_NE(out.find(std::string("\"") + key + "\":"), std::string::npos) << key;
  }
}

TEST_F(KvStoreTest, KvloadCheckPassesAgainOnTheSameServer) {
  std::string server = "127.0.0.1:" + std::to_string(port_);
  for (int run = 0; run < 2; ++run) {
    Child load({kvload_path(), "--server", server, "--check", "--ops", "500", "--keys", "50",
                "--connections", "2", "--quiet", "--seed", std::to_string(run)},
               {});
    std::string out = load.read_all();
    EXPECT_EQ(load.wait(), 0) << out;
    EXPECT_NE(out.find("acknowledged writes lost: 0"), std::string::npos) << out;
  }
}

TEST_F(KvStoreTest, KvloadCheckIgnoresWhatEarlierRunsLeft) {
  // A value in a checked key that this run never wrote (seq 999999): the
  // prepare phase deletes the run's keys first, so it is not "corrupt".
  Client c(port_);
  EXPECT_EQ(c.command("SET c0:k0 0:0:999999"), "OK");
  std::string server = "127.0.0.1:" + std::to_string(port_);
  Child load({kvload_path(), "--server", server, "--check", "--ops", "200", "--keys", "4",
              "--connections", "1", "--mix", "get=100", "--quiet", "--json", "--seed", "3"},
             {});
  std::string out = load.read_all();
  EXPECT_EQ(load.wait(), 0) << out;
  EXPECT_EQ(json_uint(out, "corrupt"), 0u) << out;
}

TEST_F(KvStoreTest, KvloadCheckDetectsAServerThatForgotAcknowledgedWrites) {
  // Without Romulus a restart loses the data: kvload must notice and fail.
  std::string server = "127.0.0.1:" + std::to_string(port_);
  Child load({kvload_path(), "--server", server, "--check", "--seconds", "3", "--keys", "4",
              "--connections", "1", "--mix", "incr=100", "--quiet", "--json", "--seed", "4"},
             {});
  {
    // Counter c0:n0 at 2 or more means kvload has received the reply to an
    // INCR of it (it sends one request at a time).
    Client c(port_);
    for (;;) {
      std::string reply = c.command("GET c0:n0");
      ASSERT_NE(reply, "<EOF>");
      if (reply.starts_with("VALUE ") && std::stoll(reply.substr(6)) >= 2) break;
    }
  }
  server_->signal(SIGKILL);
  server_->wait();
  server_ = std::make_unique<Child>(
      std::vector<std::string>{kvstore_path(), "--port", std::to_string(port_)}, Env{});
  ASSERT_TRUE(server_->read_line().has_value());
  std::string out = load.read_all();
  EXPECT_EQ(load.wait(), 1) << out;
  EXPECT_GE(json_uint(out, "acked_lost").value_or(0), 1u) << out;
  EXPECT_GE(json_uint(out, "reconnects").value_or(0), 1u) << out;
}

TEST(Kvload, GivesUpWhenNoServerAnswersWithinTheReconnectTimeout) {
  Child load({kvload_path(), "--server", "127.0.0.1:" + std::to_string(free_port()), "--ops", "10",
              "--reconnect-timeout", "200ms", "--quiet", "--json"},
             {});
  std::string out = load.read_all();
  EXPECT_EQ(load.wait(), 1) << out;
}

TEST(Kvload, BadOptionsExitWithStatusTwo) {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--ops", "10"},  // no --server
        {"--server", "127.0.0.1:1", "--ops", "10", "--seconds", "1"},
        {"--server", "127.0.0.1:1", "--mix", "put=10"},
        {"--server", "nocolon"},
        {"--server", "127.0.0.1:1", "--reconnect-timeout", "soon"}}) {
    args.insert(args.begin(), kvload_path());
    Child load(args, {});
    load.read_all();
    EXPECT_EQ(load.wait(), 2) << args[1] << " " << args[2];
  }
}

}  // namespace
}  // namespace romulus::guest::kvstore_test
