#include "witness/lease_guard.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <thread>
#include <utility>

extern char** environ;

namespace romulus::witness {

namespace {

using Clock = std::chrono::steady_clock;

// A line as the log shows it: printable ASCII, the rest as \xNN, at most 64 bytes.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 64)) {
    if (std::isprint(c)) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

Result<GuardCommand> parse_line(std::string_view line) {
  if (line == "exit") return GuardCommand{GuardCommand::Kind::kExit, 0};
  for (const auto& [word, kind] :
       {std::pair{std::string_view("lease "), GuardCommand::Kind::kLease},
        std::pair{std::string_view("node "), GuardCommand::Kind::kNode}}) {
    if (line.substr(0, word.size()) != word) continue;
    const std::string_view digits = line.substr(word.size());
    LeaseId id = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
    const bool all_digits =
        !digits.empty() &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (all_digits && ec == std::errc() && end == digits.data() + digits.size()) {
      return GuardCommand{kind, id};
    }
  }
  return Status::corrupt(fmt::format(
      "the lease guard got a line it does not know from its node: '{}'", printable(line)));
}

void ignore_stop_signals() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) signal(sig, SIG_IGN);
}

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

}  // namespace

// ---- GuardCommandReader

Status GuardCommandReader::feed(std::string_view bytes, std::vector<GuardCommand>* out) {
  if (!error_.is_ok()) return error_;
  for (char c : bytes) {
    if (c != '\n') {
      if (line_.size() + 1 >= kMaxLine) {
        error_ = Status::corrupt(
            fmt::format("the lease guard got a line longer than {} bytes from its node: '{}...'",
                        kMaxLine, printable(line_)));
        return error_;
      }
      line_ += c;
      continue;
    }
    auto cmd = parse_line(line_);
    line_.clear();
    if (!cmd.is_ok()) {
      error_ = cmd.status();
      return error_;
    }
    out->push_back(*cmd);
  }
  return Status::ok();
}

std::string encode_guard_command(const GuardCommand& c) {
  if (c.kind == GuardCommand::Kind::kExit) return "exit\n";
  if (c.kind == GuardCommand::Kind::kNode) return fmt::format("node {}\n", c.lease);
  return fmt::format("lease {}\n", c.lease);
}

// ---- The lease file

Status write_lease_file(const std::string& path, const LeaseFile& f) {
  const std::string text = encode_guard_command({GuardCommand::Kind::kNode, f.node}) +
                           encode_guard_command({GuardCommand::Kind::kLease, f.lease});
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::from_errno("lease file " + tmp, errno);
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  ::close(fd);
  if (!ok) return Status::from_errno("lease file " + tmp, err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::from_errno("lease file " + path, errno);
  }
  return Status::ok();
}

Result<LeaseFile> read_lease_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::from_errno("lease file " + path, errno);
  char buf[2 * GuardCommandReader::kMaxLine];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  const int err = errno;
  ::close(fd);
  if (n < 0) return Status::from_errno("lease file " + path, err);
  GuardCommandReader reader;
  std::vector<GuardCommand> cmds;
  ROMULUS_RETURN_IF_ERROR(reader.feed(std::string_view(buf, static_cast<size_t>(n)), &cmds)
                              .context("lease file " + path));
  if (cmds.size() != 2 || cmds[0].kind != GuardCommand::Kind::kNode ||
      cmds[1].kind != GuardCommand::Kind::kLease || cmds[0].lease <= 1 ||
      cmds[0].lease > INT32_MAX) {
    return Status::corrupt(fmt::format(
        "lease file {} is not 'node PID' then 'lease ID': delete it if no node uses it", path));
  }
  return LeaseFile{static_cast<pid_t>(cmds[0].lease), cmds[1].lease};
}

bool process_exited(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  // A zombie has exited: its threads are gone and its files closed.
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  const std::string_view stat(buf, static_cast<size_t>(n));
  const auto paren = stat.rfind(')');  // the name may hold spaces and parentheses
  if (paren == std::string_view::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  return state == 'Z' || state == 'X';
}

Status release_dead_lease(const std::function<Result<std::unique_ptr<Witness>>()>& open_witness,
                          const std::string& key, LeaseId lease,
                          std::chrono::milliseconds give_up_for,
                          std::chrono::milliseconds retry_every) {
  const auto until = Clock::now() + give_up_for;
  Status last = Status::invalid_argument("no witness to open");
  for (;;) {
    if (open_witness) {
      auto w = open_witness();
      last = w.is_ok() ? (*w)->release(key, lease) : w.status();
      if (last.is_ok()) return last;
    }
    if (Clock::now() >= until) return last;
    std::this_thread::sleep_for(retry_every);
  }
}

// ---- The guard process

int run_lease_guard(const LeaseGuardConfig& config) {
  ignore_stop_signals();
  auto log = [&](const std::string& line) {
    if (config.log) config.log(line);
  };
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, config.node, 0));
  if (pidfd < 0) {
    log(
        fmt::format("cannot watch romulus (pid {}): pidfd_open: {}; its lease will expire by "
                    "itself if it dies (Linux 5.3 or newer is needed)",
                    config.node, std::strerror(errno)));
    return 1;
  }
  // The pidfd now names the node: if it is still our parent, it is alive.
  if (getppid() != config.node) {
    log(fmt::format("romulus (pid {}) is not this guard's parent (any more): nothing to guard",
                    config.node));
    ::close(pidfd);
    return 1;
  }

  if (config.on_watching) config.on_watching();
  LeaseId lease = 0;
  GuardCommandReader reader;
  bool reading = true;
  // Reads what the pipe holds now; false once the node said "exit".
  auto take = [&](bool wait) -> bool {
    char buf[512];
    for (;;) {
      const ssize_t n = ::read(config.commands, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return true;
      if (n <= 0) {  // end of the pipe: the node exited or closed it
        reading = false;
        return true;
      }
      std::vector<GuardCommand> cmds;
      Status st = reader.feed(std::string_view(buf, static_cast<size_t>(n)), &cmds);
      for (const GuardCommand& c : cmds) {
        if (c.kind == GuardCommand::Kind::kExit) return false;
        if (c.kind == GuardCommand::Kind::kLease) lease = c.lease;
      }
      if (!st.is_ok()) {
        log(fmt::format("{}; keeping lease {}", st.message(), lease));
        reading = false;
        return true;
      }
      if (wait) return true;  // one read per wake-up while the node lives
    }
  };

  for (;;) {
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {config.commands, POLLIN, 0}};
    const int n = ::poll(fds, reading ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log(fmt::format("lease guard: poll: {}", std::strerror(errno)));
      return 1;
    }
    if (reading && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (!take(/*wait=*/true)) {
        ::close(pidfd);
        return 0;  // a clean end: the node gives its lease up itself
      }
    }
    if (fds[0].revents & POLLIN) break;  // every thread of the node has exited
  }
  ::close(pidfd);
  const auto died = Clock::now();
  // What the node wrote just before it died is still in the pipe.
  if (reading) {
    const int flags = fcntl(config.commands, F_GETFL);
    if (flags >= 0) (void)fcntl(config.commands, F_SETFL, flags | O_NONBLOCK);
    if (!take(/*wait=*/false)) return 0;
  }
  if (lease == 0) return 0;

  log(fmt::format(
      "romulus (pid {}) has exited holding lease {}: giving the lease up at the witness, so "
      "the other node need not wait for it to expire",
      config.node, lease));
  const Status st = release_dead_lease(config.open_witness, config.key, lease, config.give_up_for,
                                       config.retry_every);
  if (st.is_ok()) {
    log(fmt::format("gave lease {} up {} ms after romulus (pid {}) exited", lease, ms_since(died),
                    config.node));
    return 0;
  }
  log(fmt::format("could not give lease {} up within {} ms ({}); it expires by itself", lease,
                  config.give_up_for.count(), st.message()));
  return 1;
}

// ---- LeaseGuardLink

Result<std::unique_ptr<LeaseGuardLink>> LeaseGuardLink::spawn(
    const std::string& program, const std::vector<std::string>& argv) {
  if (argv.empty()) return Status::invalid_argument("no program for the lease guard");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::from_errno("lease guard: pipe", errno);
  const int flags = fcntl(fds[1], F_GETFL);
  if (flags < 0 || fcntl(fds[1], F_SETFL, flags | O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::from_errno("lease guard: pipe", err);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[0], kGuardCommandFd);  // clears O_CLOEXEC
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[0]);
  if (rc != 0) {
    ::close(fds[1]);
    return Status::from_errno(fmt::format("start the lease guard ({})", program), rc);
  }
  return std::unique_ptr<LeaseGuardLink>(new LeaseGuardLink(pid, fds[1]));
}

LeaseGuardLink::~LeaseGuardLink() {
  std::lock_guard lock(mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status LeaseGuardLink::write_locked(const GuardCommand& c) {
  if (fd_ < 0 || broken_) return Status::ok();
  const std::string line = encode_guard_command(c);
  const ssize_t n = ::write(fd_, line.data(), line.size());
  if (n == static_cast<ssize_t>(line.size())) return Status::ok();
  broken_ = true;  // a line is far below PIPE_BUF: short or failed means the guard is gone
  return Status::unavailable(fmt::format(
      "the lease guard (pid {}) is not listening ({}): if this node dies, the other node waits "
      "for its lease to expire",
      pid_, n < 0 ? std::strerror(errno) : "short write"));
}

Status LeaseGuardLink::held(LeaseId lease) {
  std::lock_guard lock(mu_);
  return write_locked(GuardCommand{GuardCommand::Kind::kLease, lease});
}

void LeaseGuardLink::stop() {
  std::lock_guard lock(mu_);
  if (fd_ < 0) return;
  (void)write_locked(GuardCommand{GuardCommand::Kind::kExit, 0});
  ::close(fd_);
  fd_ = -1;
  const auto deadline = Clock::now() + kReapWithin;
  for (;;) {
    const pid_t r = waitpid(pid_, nullptr, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(pid_, SIGKILL);
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace romulus::witness
