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

bool syscall_text_says_busy(std::string_view text) {
  if (text.substr(0, 7) == "running") return true;
  // "-1 0x7ffd... 0x55...": blocked, not in a system call.
  return text.size() >= 2 && text[0] == '-' && text[1] == '1' &&
         (text.size() == 2 || text[2] == ' ' || text[2] == '\n');
}

namespace {

// Reads up to `size` bytes of TID/NAME under the task directory; -1 and errno
// set on failure.
ssize_t read_task_file(int dir, const char* tid, const char* name, char* buf, size_t size) {
  const std::string path = std::string(tid) + "/" + name;
  const int fd = openat(dir, path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t n = ::read(fd, buf, size);
  const int saved = errno;
  close(fd);
  errno = saved;
  return n;
}

}  // namespace

SchedulerProbe::SchedulerProbe(pid_t pid) : pid_(pid) {}

SchedulerProbe::~SchedulerProbe() {
  if (tasks_ != nullptr) closedir(tasks_);
}

GuestActivity SchedulerProbe::read() {
  if (tasks_ == nullptr) {
    tasks_ = opendir(("/proc/" + std::to_string(pid_) + "/task").c_str());
    if (tasks_ == nullptr) return GuestActivity::kUnknown;
  } else {
    rewinddir(tasks_);  // threads come and go: list them again
  }
  const int dir = dirfd(tasks_);
  bool any_read = false;
  while (const dirent* e = readdir(tasks_)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;  // "." and ".."
    char buf[kStatPrefix];
    ssize_t n = read_task_file(dir, e->d_name, "stat", buf, sizeof buf);
    if (n <= 0) continue;  // the thread ended since the listing
    const auto state = parse_stat_state(std::string_view(buf, static_cast<size_t>(n)));
    if (!state) continue;
    if (*state == 'R') return GuestActivity::kRunnable;
    any_read = true;
    if (*state != 'S' && *state != 'D') continue;  // stopped, traced, zombie: not working
    // Blocked: in a system call (waiting), or in a page fault (working)?
    n = read_task_file(dir, e->d_name, "syscall", buf, sizeof buf);
    if (n < 0 && errno == EAGAIN) return GuestActivity::kRunnable;  // woke meanwhile
    if (n > 0 && syscall_text_says_busy(std::string_view(buf, static_cast<size_t>(n))))
      return GuestActivity::kRunnable;
    // Unreadable (no ptrace rights over the guest): as before, blocked is waiting.
  }
  if (!any_read) {
    // The guest is gone (or /proc vanished): open the directory afresh next time.
    closedir(tasks_);
    tasks_ = nullptr;
    return GuestActivity::kUnknown;
  }
  return GuestActivity::kWaiting;
}

}  // namespace romulus::checkpoint
