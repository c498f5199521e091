// LeaseGuard: gives up the lease of a `romulus` process that died, so that
// the other node of the pair need not wait out the lease's TTL.
//
// A lease lets its holder release output until the witness expires it
// (docs/design.md, "Ownership"). A holder whose process has died releases
// nothing any more: its output left through its own sockets, which the kernel
// closed when the process exited. But the witness cannot know that, so the
// other node waits out the TTL. The guard knows it: a small process
// (`romulus lease-guard`) that the node starts beside itself on its own host,
// that is told every lease the node holds (over a pipe), and that watches the
// node through a pidfd. The kernel makes a pidfd readable only once every
// thread of the process has exited and its files are closed. Then, and only
// then, the guard deletes the owner key if it is still under that lease and
// revokes the lease (Witness::release), and exits.
//
// It acts on nothing else. A node that is stopped (SIGSTOP), cut off or slow
// has not exited: its pidfd stays quiet and its lease runs out as before. A
// guard that is dead itself (killed with its node's whole process group or
// cgroup, or with the host), or cannot reach the witness, changes nothing:
// the lease expires as before. The guard only ever shortens a wait; it never
// decides who owns the pair, and the lease it revokes is one its own node
// was granted, which no other node ever holds.
//
// The node -> guard pipe carries ASCII lines (GuardCommandReader):
//   "lease <id>\n"   the node holds lease <id> now (decimal; 0: none)
//   "exit\n"         the node ends cleanly and gives its lease up itself
// Anything else is an error: the guard logs it, stops reading, and keeps the
// last lease it was told (revoking a lease of a dead node is always safe).
//
// The lease file. A service manager may kill the guard together with its node
// (systemd, after its main process died, SIGKILLs the rest of the unit before
// ExecStopPost). So the node can also keep its lease in a file
// ($ROMULUS_LEASE_FILE, written like the pipe, replaced atomically):
//   "node <pid>\nlease <id>\n"
// and `romulus release-lease` (the units' ExecStopPost) gives that lease up,
// but only once it has seen that process gone (release_dead_lease()).
//
// Threads: LeaseGuardLink's methods may be called from any thread (a mutex);
// run_lease_guard() is the guard process's whole life, on its main thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "witness/witness.h"

namespace romulus::witness {

// The guard reads the node's lines on this descriptor (the pipe's read end).
inline constexpr int kGuardCommandFd = 3;

// ---- The pipe's lines, decoded. The input is treated as hostile.
struct GuardCommand {
  enum class Kind { kLease, kExit, kNode };
  Kind kind = Kind::kLease;
  LeaseId lease = 0;  // kLease; kNode: the node's pid
  friend bool operator==(const GuardCommand&, const GuardCommand&) = default;
};

class GuardCommandReader {
 public:
  // Longest line accepted, "\n" included ("lease " and 19 digits fit well).
  static constexpr size_t kMaxLine = 64;

  // Appends the complete lines in `bytes` to `out`. Any byte split of the same
  // input gives the same commands. The first error sticks: a line that is not
  // one of the two above, a negative or too large id, or more than kMaxLine
  // bytes without a newline.
  Status feed(std::string_view bytes, std::vector<GuardCommand>* out);

 private:
  std::string line_;
  Status error_;
};

// The text of one command, as the node writes it.
std::string encode_guard_command(const GuardCommand& c);

// ---- The lease file (see above): written by the node, read after its end.
struct LeaseFile {
  pid_t node = 0;
  LeaseId lease = 0;
};
// Replaces `path` with the file for `f` (a temporary file renamed over it).
Status write_lease_file(const std::string& path, const LeaseFile& f);
// Reads and checks it (hostile input: GuardCommandReader's grammar, exactly
// one "node" line and one "lease" line).
Result<LeaseFile> read_lease_file(const std::string& path);

// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
// A pid reused by another process reads as alive: the safe answer.
bool process_exited(pid_t pid);

// Gives `lease` up at the witness (deletes `key` if still under it, revokes
// the lease), trying every `retry_every` for `give_up_for`. Call only once
// the process that held the lease is known to have exited.
Status release_dead_lease(const std::function<Result<std::unique_ptr<Witness>>()>& open_witness,
                          const std::string& key, LeaseId lease,
                          std::chrono::milliseconds give_up_for,
                          std::chrono::milliseconds retry_every);

// ---- The guard process.
struct LeaseGuardConfig {
  pid_t node = 0;                  // the process guarded: must be this process's parent
  int commands = kGuardCommandFd;  // the read end of the node's pipe
  std::string key;                 // the pair's owner key (owner_key(pair))
  // How long, after the node died, the guard keeps trying to give the lease
  // up (the lease's TTL: past it the witness has expired it anyway).
  std::chrono::milliseconds give_up_for{std::chrono::seconds(2)};
  std::chrono::milliseconds retry_every{std::chrono::milliseconds(50)};
  // Opens the witness (afresh for each try, so a TLS file renewed on disk is
  // read again).
  std::function<Result<std::unique_ptr<Witness>>()> open_witness;
  std::function<void(const std::string&)> log;
  // Called once the guard watches its node (tests wait for it). None if empty.
  std::function<void()> on_watching;
};

// Runs the guard until its node has exited (and the lease, if any, was given
// up or could not be) or the node said "exit". Ignores SIGINT, SIGTERM,
// SIGHUP and SIGQUIT: a terminal's Ctrl-C or a service manager's stop is for
// the node, which then tells the guard. Returns the process's exit status.
int run_lease_guard(const LeaseGuardConfig& config);

// ---- The node's end: starts the guard and tells it each lease.
class LeaseGuardLink {
 public:
  // How long stop() waits for the guard to exit before it kills it.
  static constexpr std::chrono::milliseconds kReapWithin{1000};

  // Runs `program` (e.g. "/proc/self/exe") with `argv` (argv[0] its name as
  // `ps` shows it, then "lease-guard" and its options), the read end of a
  // pipe as kGuardCommandFd, /dev/null as stdin, this process's stdout and
  // stderr.
  static Result<std::unique_ptr<LeaseGuardLink>> spawn(const std::string& program,
                                                       const std::vector<std::string>& argv);
  // Closes the pipe without waiting: the guard then waits for this process
  // to exit and gives up the last lease it was told, if any (after a clean
  // give-up that is none: the keeper told it 0).
  ~LeaseGuardLink();
  LeaseGuardLink(const LeaseGuardLink&) = delete;
  LeaseGuardLink& operator=(const LeaseGuardLink&) = delete;

  // The node now holds `lease` (0: none). Never blocks; a guard that is gone
  // is reported once through the returned error, and then ignored.
  Status held(LeaseId lease);
  // The guard is no longer wanted while this process lives on: "exit", then
  // waits up to kReapWithin for it, then kills it. Idempotent.
  void stop();
  pid_t pid() const { return pid_; }

 private:
  LeaseGuardLink(pid_t pid, int fd) : pid_(pid), fd_(fd) {}
  Status write_locked(const GuardCommand& c);

  std::mutex mu_;
  pid_t pid_ = -1;
  int fd_ = -1;  // the pipe's write end; -1 once closed
  bool broken_ = false;
};

}  // namespace romulus::witness
