#include "checkpoint/scheduler_probe.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <string>

namespace romulus::checkpoint {
namespace {

// "TID (COMM) S ...": COMM is at most 16 bytes in the kernel, so the state is
// within the first 64 bytes; more is read to be safe with any kernel.
constexpr size_t kStatPrefix = 256;

}  // namespace

std::optional<char> parse_stat_state(std::string_view stat) {
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos || stat.find('(') > close) return std::nullopt;
  // ") S": a space, then the one-letter state.
  if (close + 2 >= stat.size() || stat[close + 1] != ' ') return std::nullopt;
  const char state = stat[close + 2];
  if (!std::isalpha(static_cast<unsigned char>(state))) return std::nullopt;
  if (close + 3 < stat.size() && stat[close + 3] != ' ') return std::nullopt;
  return state;
}

std::optional<long> parse_stat_threads(std::string_view stat) {
  if (!parse_stat_state(stat)) return std::nullopt;
  // Fields 3 (the state, after ") ") to 20 (num_threads): skip 17 separators.
  size_t at = stat.rfind(')') + 2;
  for (int field = 3; field < 20; ++field) {
    at = stat.find(' ', at);
    if (at == std::string_view::npos) return std::nullopt;
    ++at;
  }
  long n = 0;
  size_t digits = 0;
  for (; at < stat.size() && std::isdigit(static_cast<unsigned char>(stat[at])); ++at, ++digits) {
    if (n > 1'000'000'000) return std::nullopt;
    n = n * 10 + (stat[at] - '0');
  }
  if (digits == 0 || (at < stat.size() && stat[at] != ' ' && stat[at] != '\n')) return std::nullopt;
  return n;
}

bool syscall_text_says_busy(std::string_view text) {
  if (text.substr(0, 7) == "running") return true;
  // "-1 0x7ffd... 0x55...": blocked, not in a system call.
  return text.size() >= 2 && text[0] == '-' && text[1] == '1' &&
         (text.size() == 2 || text[2] == ' ' || text[2] == '\n');
}

namespace {

// Rereads an open /proc file from its start; -1 and errno set on failure
// (ESRCH once its thread has ended).
ssize_t reread(int fd, char* buf, size_t size) { return ::pread(fd, buf, size, 0); }

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

SchedulerProbe::SchedulerProbe(pid_t pid) : pid_(pid) {}

SchedulerProbe::~SchedulerProbe() {
  close_all();
  close_fd(proc_stat_);
}

void SchedulerProbe::close_all() {
  for (Task& t : tasks_) {
    close_fd(t.stat);
    close_fd(t.syscall);
  }
  tasks_.clear();
}

long SchedulerProbe::thread_count() {
  if (proc_stat_ < 0) {
    proc_stat_ = ::open(("/proc/" + std::to_string(pid_) + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
    if (proc_stat_ < 0) return -1;
  }
  char buf[kStatPrefix * 2];
  const ssize_t n = reread(proc_stat_, buf, sizeof buf);
  const auto threads =
      n > 0 ? parse_stat_threads(std::string_view(buf, static_cast<size_t>(n))) : std::nullopt;
  leader_state_ =
      threads ? parse_stat_state(std::string_view(buf, static_cast<size_t>(n))).value_or(0) : 0;
  if (!threads) {
    // The process is gone (or /proc vanished): open it afresh next time.
    close_fd(proc_stat_);
    return -1;
  }
  return *threads;
}

bool SchedulerProbe::list() {
  close_all();
  ++listings_;
  const std::string dir_path = "/proc/" + std::to_string(pid_) + "/task";
  DIR* dir = opendir(dir_path.c_str());
  if (dir == nullptr) return false;
  const int dfd = dirfd(dir);
  while (const dirent* e = readdir(dir)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;  // "." and ".."
    Task t;
    t.leader = std::to_string(pid_) == e->d_name;
    t.stat = openat(dfd, (std::string(e->d_name) + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
    if (t.stat < 0) continue;  // the thread ended since the listing
    // Without ptrace rights over the guest this fails: blocked then counts as waiting.
    t.syscall = openat(dfd, (std::string(e->d_name) + "/syscall").c_str(), O_RDONLY | O_CLOEXEC);
    tasks_.push_back(t);
  }
  closedir(dir);
  return !tasks_.empty();
}

SchedulerProbe::Look SchedulerProbe::look(bool& any_read) {
  for (const Task& t : tasks_) {
    char buf[kStatPrefix];
    ssize_t n = 0;
    std::optional<char> state;
    if (t.leader) {
      state = leader_state_;
    } else {
      n = reread(t.stat, buf, sizeof buf);
      if (n <= 0) return Look::kStale;  // the thread ended: another may have begun
      state = parse_stat_state(std::string_view(buf, static_cast<size_t>(n)));
    }
    if (!state || *state == 0) continue;
    if (*state == 'R') return Look::kRunnable;
    any_read = true;
    if (*state != 'S' && *state != 'D') continue;  // stopped, traced, zombie: not working
    if (t.syscall < 0) continue;  // no ptrace rights: as before, blocked is waiting
    // Blocked: in a system call (waiting), or in a page fault (working)?
    n = reread(t.syscall, buf, sizeof buf);
    if (n < 0 && errno == EAGAIN) return Look::kRunnable;  // woke meanwhile
    if (n > 0 && syscall_text_says_busy(std::string_view(buf, static_cast<size_t>(n))))
      return Look::kRunnable;
  }
  return Look::kWaiting;
}

GuestActivity SchedulerProbe::read() {
  const long threads = thread_count();
  if (threads <= 0) {
    close_all();
    return GuestActivity::kUnknown;
  }
  // Threads come and go: a different count, or a thread whose file no longer
  // reads, lists them again (at most twice per look: a guest that starts and
  // ends threads faster than that is simply called runnable).
  if (static_cast<size_t>(threads) != tasks_.size() && !list()) return GuestActivity::kUnknown;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool any_read = false;
    switch (look(any_read)) {
      case Look::kRunnable:
        return GuestActivity::kRunnable;
      case Look::kWaiting:
        return any_read ? GuestActivity::kWaiting : GuestActivity::kUnknown;
      case Look::kStale:
        if (!list()) return GuestActivity::kUnknown;
        break;
    }
  }
  return GuestActivity::kRunnable;
}

}  // namespace romulus::checkpoint
