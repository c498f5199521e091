#include "checkpoint/guest_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "guest/guest.h"
#include "guest/linux_abi.h"

extern char** environ;

namespace romulus::checkpoint {

namespace {

using Clock = std::chrono::steady_clock;
using guest::linux_abi::futex_wait;
using guest::linux_abi::futex_wake;

// How often blocking waits look up from their futex to check the guest is alive.
constexpr std::chrono::milliseconds kLivenessSlice{50};
// stop() waits on the pidfd this long at most at a time, then looks again
// (and poll()'s int argument stays small, whatever the grace).
constexpr std::chrono::milliseconds kExitPollSlice{1000};
// Without a pidfd, stop() sleeps this long between looks for the guest's
// exit: an exit is seen soon, and the wait costs little.
constexpr std::chrono::milliseconds kExitSleepSlice{10};

std::string describe_duration(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}

bool is_romulus_var(const char* entry) {
  static const char* const kOwned[] = {guest::kEnvArenaFd,      guest::kEnvArenaSize,
                                       guest::kEnvControlFd,    guest::kEnvTracker,
                                       guest::kEnvResumedEpoch, guest::kEnvServicePort};
  for (const char* name : kOwned) {
    size_t n = std::strlen(name);
    if (std::strncmp(entry, name, n) == 0 && entry[n] == '=') return true;
  }
  return false;
}

// Resolves argv[0] like execvp would, but in the parent (the child may only make
// async-signal-safe calls). Returns empty when not found.
std::string resolve_command(const std::string& cmd) {
  if (cmd.find('/') != std::string::npos) return cmd;
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    // An empty PATH entry means the current directory.
    const std::string_view dir =
        end > begin ? std::string_view(path).substr(begin, end - begin) : std::string_view(".");
    std::string candidate;
    candidate.reserve(dir.size() + 1 + cmd.size());
    candidate.append(dir).append("/").append(cmd);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return {};
}

Status not_found(const std::string& cmd, int err) {
  return Status::invalid_argument("guest command not found: '" + cmd + "' (" + strerror(err) + ")");
}

}  // namespace

std::string describe_wait_status(int wstatus) {
  if (WIFEXITED(wstatus)) return "guest exited with status " + std::to_string(WEXITSTATUS(wstatus));
  if (WIFSIGNALED(wstatus)) {
    int sig = WTERMSIG(wstatus);
    const char* name = strsignal(sig);
    std::string s = "guest was killed by signal " + std::to_string(sig) + " (" +
                    (name ? name : "unknown") + ")";
    if (WCOREDUMP(wstatus)) s += ", core dumped";
    return s;
  }
  return "guest changed state (wait status " + std::to_string(wstatus) + ")";
}

Result<GuestProcess> GuestProcess::start(const GuestSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return Status::invalid_argument("no guest command given");
  }
  if (spec.arena_fd < 0 || spec.control_fd < 0 || spec.arena_fd == spec.control_fd) {
    return Status::invalid_argument("guest needs distinct arena and control fds");
  }
  if (spec.arena_size == 0 || spec.arena_size % 4096 != 0) {
    return Status::invalid_argument("guest arena size must be a positive multiple of 4096");
  }
  if (spec.tracker != guest::kTrackerUffd && spec.tracker != guest::kTrackerUffdSync &&
      spec.tracker != guest::kTrackerUffdSwitchable && spec.tracker != guest::kTrackerCompare) {
    return Status::invalid_argument("unknown tracker '" + spec.tracker + "'");
  }

  // Map and reset the control page.
  int cfd = fcntl(spec.control_fd, F_DUPFD_CLOEXEC, 0);
  if (cfd < 0) return Status::from_errno("dup control fd", errno);
  ROMULUS_ASSIGN_OR_RETURN(common::SharedMemory control,
                           common::SharedMemory::adopt(cfd, guest::kControlPageSize));
  guest::init_control_page(reinterpret_cast<guest::ControlPage*>(control.data()));

  const std::string& cmd = spec.argv[0];
  std::string path = resolve_command(cmd);
  if (path.empty()) return not_found(cmd, ENOENT);

  // Everything the child needs, prepared before fork().
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (is_romulus_var(*e)) continue;
    bool overridden = false;
    for (const auto& [k, v] : spec.extra_env) {
      if (std::strncmp(*e, k.c_str(), k.size()) == 0 && (*e)[k.size()] == '=') overridden = true;
    }
    if (!overridden) env_strings.emplace_back(*e);
  }
  auto add_var = [&](const char* name, const std::string& value) {
    for (const auto& kv : spec.extra_env) {
      if (kv.first == name) return;  // extra_env wins
    }
    env_strings.push_back(std::string(name) + "=" + value);
  };
  add_var(guest::kEnvArenaFd, std::to_string(spec.arena_fd));
  add_var(guest::kEnvArenaSize, std::to_string(spec.arena_size));
  add_var(guest::kEnvControlFd, std::to_string(spec.control_fd));
  add_var(guest::kEnvTracker, spec.tracker);
  if (spec.resumed_epoch) add_var(guest::kEnvResumedEpoch, std::to_string(*spec.resumed_epoch));
  if (spec.service_port) add_var(guest::kEnvServicePort, std::to_string(*spec.service_port));
  for (const auto& [k, v] : spec.extra_env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = spec.argv;
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<int> keep_fds = spec.inherit_fds;
  keep_fds.push_back(spec.arena_fd);
  keep_fds.push_back(spec.control_fd);

  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return Status::from_errno("pipe2", errno);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(err_pipe[0]);
    close(err_pipe[1]);
    return Status::from_errno("fork guest", err);
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    close(err_pipe[0]);
    setpgid(0, 0);
    int err = 0;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) err = errno;
    if (err == 0 && getppid() != parent) _exit(127);  // supervisor already gone
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
    }
    // Nothing of the supervisor's but what the guest is given (its control
    // and metrics listeners are not O_CLOEXEC): every other descriptor closes
    // at exec. A kernel without close_range's CLOEXEC (before 5.11) keeps them.
    (void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    for (int fd : keep_fds) {
      int flags = fcntl(fd, F_GETFD);
      if (flags < 0 || fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) != 0) {
        if (err == 0) err = errno;
      }
    }
    if (err == 0) {
      execve(path.c_str(), argv.data(), envp.data());
      err = errno;
    }
    ssize_t ignored = write(err_pipe[1], &err, sizeof(err));
    (void)ignored;
    _exit(127);
  }

  // Parent.
  close(err_pipe[1]);
  setpgid(pid, pid);  // also from here, so the group exists before we signal it
  int child_err = 0;
  ssize_t n;
  do {
    n = read(err_pipe[0], &child_err, sizeof(child_err));
  } while (n < 0 && errno == EINTR);
  close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_err))) {
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (child_err == ENOENT) return not_found(cmd, child_err);
    return Status::from_errno("cannot start guest '" + path + "'", child_err);
  }
  int pidfd = -1;
#ifdef SYS_pidfd_open
  pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) fcntl(pidfd, F_SETFD, FD_CLOEXEC);
#endif
  return GuestProcess(pid, pidfd, std::move(control));
}

GuestProcess::GuestProcess(GuestProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      control_map_(std::move(other.control_map_)),
      control_(std::exchange(other.control_, nullptr)),
      stopped_(std::exchange(other.stopped_, false)),
      exit_status_(std::exchange(other.exit_status_, std::nullopt)) {}

GuestProcess& GuestProcess::operator=(GuestProcess&& other) noexcept {
  if (this != &other) {
    release();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    control_map_ = std::move(other.control_map_);
    control_ = std::exchange(other.control_, nullptr);
    stopped_ = std::exchange(other.stopped_, false);
    exit_status_ = std::exchange(other.exit_status_, std::nullopt);
  }
  return *this;
}

GuestProcess::~GuestProcess() { release(); }

void GuestProcess::release() {
  if (pid_ > 0 && !exit_status_) {
    Status ignored = stop(kStopGrace);
    (void)ignored;
  }
  if (pidfd_ >= 0) close(pidfd_);
  pidfd_ = -1;
  pid_ = -1;
}

void GuestProcess::record_exit(int wstatus) {
  exit_status_ = wstatus;
  stopped_ = false;
}

std::optional<std::string> GuestProcess::poll_exit() {
  if (!exit_status_ && pid_ > 0) {
    int ws = 0;
    pid_t r;
    do {
      r = waitpid(pid_, &ws, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) record_exit(ws);
  }
  if (exit_status_) return describe_wait_status(*exit_status_);
  return std::nullopt;
}

Status wait_for_attach(guest::ControlPage& cp, std::chrono::milliseconds timeout,
                       const std::function<std::optional<std::string>()>& exited,
                       const AttachWords& words) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto state = static_cast<guest::AttachState>(cp.attach_state.load(std::memory_order_acquire));
    if (state == guest::AttachState::kAttached) return Status::ok();
    if (state == guest::AttachState::kFailed) {
      std::string msg = std::string(words.failed) + ": ";
      msg.append(cp.message, strnlen(cp.message, guest::kControlMessageSize));
      if (cp.tracker_state.load() == static_cast<uint32_t>(guest::TrackerState::kFailed)) {
        return Status::unsupported(msg);
      }
      return Status::refused(msg);
    }
    if (auto exit = exited()) return Status::aborted(*exit + " " + words.before);
    auto remaining = deadline - Clock::now();
    if (remaining <= Clock::duration::zero()) {
      return Status::timeout(std::string(words.missing) + " within " + describe_duration(timeout));
    }
    futex_wait(&cp.attach_state, static_cast<uint32_t>(guest::AttachState::kWaiting),
               std::min<std::chrono::nanoseconds>(remaining, kLivenessSlice));
  }
}

Status GuestProcess::wait_attached(std::chrono::milliseconds timeout) {
  return wait_for_attach(*control_, timeout, [this] { return poll_exit(); },
                         {.failed = "guest failed to attach",
                          .before = "before calling romulus::guest::attach()",
                          .missing = "guest did not call romulus::guest::attach()"});
}

uint64_t GuestProcess::guest_arena_addr() const {
  return control_->arena_addr.load(std::memory_order_acquire);
}

Result<int> GuestProcess::take_guest_uffd() const {
  if (control_->tracker_state.load(std::memory_order_acquire) !=
      static_cast<uint32_t>(guest::TrackerState::kUffdSync)) {
    return Status::invalid_argument(
        "the guest armed no synchronous userfaultfd: start it with tracker \"uffd-sync\"");
  }
  return take_guest_fd(control_->uffd_fd.load(std::memory_order_relaxed));
}

Result<GuestProcess::SwitchableUffds> GuestProcess::take_guest_switchable_uffds() const {
  if (control_->tracker_state.load(std::memory_order_acquire) !=
      static_cast<uint32_t>(guest::TrackerState::kUffdSwitchable)) {
    return Status::invalid_argument(
        "the guest armed no switchable userfaultfds: start it with tracker \"uffd-switchable\"");
  }
  SwitchableUffds fds;
  ROMULUS_ASSIGN_OR_RETURN(fds.async_fd,
                           take_guest_fd(control_->uffd_fd.load(std::memory_order_relaxed)));
  auto sync_fd = take_guest_fd(control_->uffd_sync_fd.load(std::memory_order_relaxed));
  if (!sync_fd.is_ok()) {
    close(fds.async_fd);
    return sync_fd.status();
  }
  fds.sync_fd = *sync_fd;
  return fds;
}

Result<int> GuestProcess::take_guest_fd(int target) const {
  if (pidfd_ < 0) return Status::unsupported("no pidfd for the guest (needs Linux 5.3+)");
#ifdef SYS_pidfd_getfd
  const int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd_, target, 0));
  if (fd >= 0) return fd;
  return Status::from_errno("pidfd_getfd of the guest's userfaultfd (fd " + std::to_string(target) +
                                "): needs Linux 5.6+ and ptrace rights over the guest",
                            errno);
#else
  return Status::unsupported("pidfd_getfd unavailable in this build");
#endif
}

Status GuestProcess::pause(std::chrono::milliseconds gate_timeout) {
  if (auto exit = poll_exit()) return Status::aborted(*exit);
  if (stopped_) return Status::ok();
  guest::ControlPage* cp = control_;
  auto lower_gate = [cp] {
    cp->pause_pending.store(0, std::memory_order_seq_cst);
    futex_wake(&cp->pause_pending);
  };
  cp->pause_pending.store(1, std::memory_order_seq_cst);
  const auto start = Clock::now();
  const auto deadline = start + gate_timeout;
  bool waited = false;
  for (;;) {
    uint32_t open = cp->open_updates.load(std::memory_order_seq_cst);
    if (open == 0) break;
    waited = true;
    if (auto exit = poll_exit()) {
      lower_gate();
      return Status::aborted(*exit);
    }
    auto remaining = deadline - Clock::now();
    if (remaining <= Clock::duration::zero()) {
      lower_gate();
      return Status::timeout("guest held an Update open for more than " +
                             std::to_string(gate_timeout.count()) + " ms; checkpoint postponed");
    }
    futex_wait(&cp->open_updates, open,
               std::min<std::chrono::nanoseconds>(remaining, kLivenessSlice));
  }
  if (waited) {
    cp->pause_waits.fetch_add(1, std::memory_order_relaxed);
    auto ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    uint64_t prev = cp->max_gate_wait_ns.load(std::memory_order_relaxed);
    while (ns > prev && !cp->max_gate_wait_ns.compare_exchange_weak(prev, ns)) {
    }
  }

  if (kill(pid_, SIGSTOP) != 0) {
    int err = errno;
    lower_gate();
    if (auto exit = poll_exit()) return Status::aborted(*exit);
    return Status::from_errno("SIGSTOP guest", err);
  }
  for (;;) {
    int ws = 0;
    pid_t r = waitpid(pid_, &ws, WUNTRACED);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      lower_gate();
      return Status::from_errno("waitpid guest", err);
    }
    if (WIFSTOPPED(ws)) break;
    if (WIFEXITED(ws) || WIFSIGNALED(ws)) {
      record_exit(ws);
      lower_gate();
      return Status::aborted(describe_wait_status(ws));
    }
  }
  stopped_ = true;
  cp->pauses.fetch_add(1, std::memory_order_relaxed);
  return Status::ok();
}

Status GuestProcess::resume() {
  control_->pause_pending.store(0, std::memory_order_seq_cst);
  futex_wake(&control_->pause_pending);
  if (!stopped_) return Status::ok();
  stopped_ = false;
  if (kill(pid_, SIGCONT) != 0) {
    if (auto exit = poll_exit()) return Status::aborted(*exit);
    return Status::from_errno("SIGCONT guest", errno);
  }
  return Status::ok();
}

Status GuestProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || poll_exit()) return Status::ok();
  control_->pause_pending.store(0, std::memory_order_seq_cst);
  futex_wake(&control_->pause_pending);
  kill(pid_, SIGTERM);
  if (stopped_) kill(pid_, SIGCONT);
  stopped_ = false;
  const auto deadline = Clock::now() + grace;
  while (!poll_exit()) {
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (remaining.count() <= 0) break;
    if (pidfd_ >= 0) {
      struct pollfd p = {pidfd_, POLLIN, 0};
      poll(&p, 1, static_cast<int>(std::min<int64_t>(remaining.count(), kExitPollSlice.count())));
    } else {
      std::this_thread::sleep_for(std::min(remaining, kExitSleepSlice));
    }
  }
  if (!exit_status_) {
    kill(pid_, SIGKILL);
    int ws = 0;
    pid_t r;
    do {
      r = waitpid(pid_, &ws, 0);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) record_exit(ws);
  }
  return Status::ok();
}

}  // namespace romulus::checkpoint
