// SchedulerProbe: whether a guest could use a CPU right now, from the kernel's
// scheduler state of each of its threads (/proc/PID/task/TID/stat).
//
// The eager commit trigger (commit_trigger.h) asks it while output is held: a
// guest whose every thread is blocked (waiting for input, a lock, a sleep) loses
// nothing if it is stopped now, so its checkpoint need not wait for the gap; a
// guest with a runnable thread (state R: running or queued for a CPU) would lose
// the pause's time, so the gap and the stopped-fraction budget apply.
//
// Blocked is not always waiting: a thread blocked in a page fault (the first
// write to a page under --tracker uffd-sync blocks until the supervisor's
// handler resolves it; a fault on swapped-out memory waits for the disk) is in
// the middle of its work, not waiting for input. The kernel tells them apart
// in /proc/PID/task/TID/syscall: a thread blocked outside any system call
// reads "-1 SP PC". Such a thread counts as runnable, as does one that has
// woken between the two reads ("running", or EAGAIN).
//
// A snapshot, not a promise: the guest may wake a microsecond later. Both errors
// are safe. Reported waiting but woken: it is stopped for one pause it could
// have used (what a fixed gap also allows once per gap). Reported runnable but
// blocked: the checkpoint waits for the gap, as before.
//
// One thread uses a probe (the engine's). The probe keeps the task directory
// open; a thread that ends between listing and reading is skipped. A guest that
// has exited, or a /proc that cannot be read, gives kUnknown (treated as
// runnable: today's behaviour).
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <optional>
#include <string_view>

#include "checkpoint/commit_trigger.h"

namespace romulus::checkpoint {

// The state letter of one /proc/PID/task/TID/stat text ("R", "S", "D", "T", ...),
// or nullopt if the text is not one. The command name between the parentheses
// is the guest's choice (prctl(PR_SET_NAME)) and may hold ')', spaces and
// letters: the state is the field after the *last* ')'.
std::optional<char> parse_stat_state(std::string_view stat);

// What one /proc/PID/task/TID/syscall text says of a blocked thread: true if
// it is busy rather than waiting ("-1 SP PC": blocked outside a system call,
// i.e. in a page fault; "running": it has woken), false for a system call
// number (waiting in that call) or any other text.
bool syscall_text_says_busy(std::string_view text);

class SchedulerProbe {
 public:
  explicit SchedulerProbe(pid_t pid);
  ~SchedulerProbe();
  SchedulerProbe(const SchedulerProbe&) = delete;
  SchedulerProbe& operator=(const SchedulerProbe&) = delete;

  // kRunnable if any thread is in state R or blocked in a page fault,
  // kWaiting if every thread could be read and none is, kUnknown if none
  // could be read. Costs one getdents and two open/read/close per thread
  // (until the first runnable one).
  GuestActivity read();

 private:
  pid_t pid_;
  DIR* tasks_ = nullptr;  // /proc/PID/task, opened on first use
};

}  // namespace romulus::checkpoint
