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
// One thread uses a probe (the engine's), and it asks while a reply waits,
// so a look must be cheap: the probe keeps a descriptor open on each thread's
// stat and syscall files and rereads them (pread), and lists the threads
// again only when the process's thread count (/proc/PID/stat) differs from
// its list or a thread's file can no longer be read (it ended). A look costs
// one pread of the process's stat (which also gives the main thread's
// state) and one or two per other thread (blocked: its syscall file too),
// where opening the files each time cost about twice as much. A guest that
// has exited, or a /proc that cannot be read, gives kUnknown (treated as
// runnable: today's behaviour).
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "checkpoint/commit_trigger.h"

namespace romulus::checkpoint {

// The state letter of one /proc/PID/task/TID/stat text ("R", "S", "D", "T", ...),
// or nullopt if the text is not one. The command name between the parentheses
// is the guest's choice (prctl(PR_SET_NAME)) and may hold ')', spaces and
// letters: the state is the field after the *last* ')'.
std::optional<char> parse_stat_state(std::string_view stat);

// The thread count (field 20, num_threads) of one /proc/PID/stat text, or
// nullopt if the text is not one. Like the state, counted from the last ')'.
std::optional<long> parse_stat_threads(std::string_view stat);

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
  // could be read.
  GuestActivity read();

  // How many times the thread list was read (a test's window into the cache).
  uint64_t listings() const { return listings_; }

 private:
  struct Task {
    bool leader = false;  // TID == PID: its state is /proc/PID/stat's, already read
    int stat = -1;        // /proc/PID/task/TID/stat
    int syscall = -1;     // .../syscall; -1 if it cannot be opened (no ptrace rights)
  };
  enum class Look { kRunnable, kWaiting, kStale };
  // One pass over the listed threads; kStale if the list is out of date.
  Look look(bool& any_read);
  // Lists the threads again; false if the process cannot be read.
  bool list();
  // The process's thread count from /proc/PID/stat, or -1; keeps the
  // leader's state from the same text.
  long thread_count();
  void close_all();

  pid_t pid_;
  int proc_stat_ = -1;  // /proc/PID/stat, opened on first use
  char leader_state_ = 0;
  std::vector<Task> tasks_;
  uint64_t listings_ = 0;
};

}  // namespace romulus::checkpoint
