// TestGuestHarness: a supervisor in miniature for checkpoint-layer tests. Creates
// the arena and control memfds, starts a guest (by default romulus-testguest,
// which takes commands on a pipe, see examples/testguest/testguest.cc), and lets
// the test send it commands. Header-only; one test thread uses it.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/guest_process.h"
#include "common/shared_memory.h"
#include "tests/support/guest_paths.h"

namespace romulus::testing {

class TestGuestHarness {
 public:
  TestGuestHarness() { signal(SIGPIPE, SIG_IGN); }  // a dead guest must not kill the test
  TestGuestHarness(const TestGuestHarness&) = delete;
  TestGuestHarness& operator=(const TestGuestHarness&) = delete;
  ~TestGuestHarness() {
    guest.reset();
    if (cmd_ != nullptr) std::fclose(cmd_);
    if (ack_ != nullptr) std::fclose(ack_);
  }

  // Starts `argv` (default: the test guest) on a fresh arena of arena_bytes and
  // waits until it has attached.
  Status start(const std::string& tracker, size_t arena_bytes, std::vector<std::string> argv = {},
               std::optional<uint64_t> resumed_epoch = std::nullopt) {
    if (argv.empty()) argv = {testguest_path()};
    ROMULUS_ASSIGN_OR_RETURN(arena, common::SharedMemory::create("test-arena", arena_bytes));
    ROMULUS_ASSIGN_OR_RETURN(control, common::SharedMemory::create("test-control", 4096));
    int cmd_pipe[2], ack_pipe[2];
    if (pipe2(cmd_pipe, O_CLOEXEC) != 0 || pipe2(ack_pipe, O_CLOEXEC) != 0) {
      return Status::from_errno("pipe2", errno);
    }
    checkpoint::GuestSpec spec;
    spec.argv = argv;
    spec.arena_fd = arena.fd();
    spec.arena_size = arena.size();
    spec.control_fd = control.fd();
    spec.tracker = tracker;
    spec.resumed_epoch = resumed_epoch;
    spec.inherit_fds = {cmd_pipe[0], ack_pipe[1]};
    spec.extra_env = {{"ROMULUS_TEST_CMD_FD", std::to_string(cmd_pipe[0])},
                      {"ROMULUS_TEST_ACK_FD", std::to_string(ack_pipe[1])}};
    auto started = checkpoint::GuestProcess::start(spec);
    close(cmd_pipe[0]);
    close(ack_pipe[1]);
    cmd_ = fdopen(cmd_pipe[1], "w");
    ack_ = fdopen(ack_pipe[0], "r");
    if (!started.is_ok()) return started.status();
    guest.emplace(std::move(started).value());
    return guest->wait_attached(std::chrono::seconds(30));
  }

  // Sends one command line; returns the guest's answer line without '\n' ("" on EOF).
  std::string command(const std::string& line) {
    send(line);
    return reply();
  }

  // The two halves of command(), for when the guest may be stopped in between.
  void send(const std::string& line) {
    std::fprintf(cmd_, "%s\n", line.c_str());
    std::fflush(cmd_);
  }
  std::string reply() {
    char buf[512];
    if (std::fgets(buf, sizeof(buf), ack_) == nullptr) return "";
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }

  // Writes len bytes of value at offset in the arena, through the guest.
  std::string write(uint64_t offset, uint64_t len, unsigned value) {
    return command("w " + std::to_string(offset) + " " + std::to_string(len) + " " +
                   std::to_string(value));
  }

  common::SharedMemory arena;
  common::SharedMemory control;
  std::optional<checkpoint::GuestProcess> guest;

 private:
  FILE* cmd_ = nullptr;
  FILE* ack_ = nullptr;
};

// The state letter of a process from /proc/PID/stat ('R', 'S', 'T', 'Z', ...).
inline char process_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return '?';
  return text[paren + 2];
}

}  // namespace romulus::testing
