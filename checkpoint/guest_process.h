// GuestProcess: the protected program as a child of the supervisor.
//
// start() forks and execs the guest with the arena and control memfds inherited
// and the ROMULUS_* environment set (see guest/guest.h). The child is in its own
// process group (terminal signals go to the supervisor, which stops the guest
// itself), gets SIGKILL when the supervisor dies (PR_SET_PDEATHSIG), and shares the
// supervisor's stdout/stderr. An exec failure is reported by start() itself.
//
// Pause/resume: pause() raises the Update gate on the control page, waits (with a
// timeout) until no Update is open, then SIGSTOPs the guest and waits until the
// kernel reports it stopped (all threads stopped). resume() lowers the gate and
// SIGCONTs. Only GuestProcess reaps its child.
//
// Threading: one owner thread calls every method. PR_SET_PDEATHSIG fires when the
// *thread* that called start() exits, so call start() from a thread that lives as
// long as the supervisor (normally the main thread). Move-only; the destructor
// stops a still-running guest (stop() with kStopGrace).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/shared_memory.h"
#include "common/status.h"
#include "guest/control_page.h"

namespace romulus::checkpoint {

struct GuestSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH unless it has a '/'
  int arena_fd = -1;
  size_t arena_size = 0;
  int control_fd = -1;           // a memfd of >= 4096 bytes; start() initialises it
  std::string tracker = "uffd";  // "uffd", "uffd-sync" or "compare"
  std::optional<uint64_t> resumed_epoch;
  std::optional<uint16_t> service_port;
  // Added to (and overriding) the supervisor's environment, ROMULUS_* included.
  std::vector<std::pair<std::string, std::string>> extra_env;
  std::vector<int> inherit_fds;  // further fds the guest keeps (same numbers)
};

class GuestProcess {
 public:
  static Result<GuestProcess> start(const GuestSpec& spec);

  GuestProcess(GuestProcess&& other) noexcept;
  GuestProcess& operator=(GuestProcess&& other) noexcept;
  GuestProcess(const GuestProcess&) = delete;
  GuestProcess& operator=(const GuestProcess&) = delete;
  ~GuestProcess();

  pid_t pid() const { return pid_; }
  // A pidfd for the guest (readable once it has exited), or -1 if unavailable.
  // Owned by GuestProcess; use it only to poll.
  int pidfd() const { return pidfd_; }
  // The supervisor's mapping of the control page.
  guest::ControlPage* control() const { return control_; }

  // Waits until the guest has called romulus::guest::attach(). Errors: the guest's
  // own attach failure (e.g. uffd registration) with its message; the guest exited;
  // timeout.
  Status wait_attached(std::chrono::milliseconds timeout);
  // After wait_attached(): the arena address in the guest (for make_uffd_tracker).
  uint64_t guest_arena_addr() const;
  // After wait_attached() of a "uffd-sync" guest: a copy of the guest's userfaultfd
  // (pidfd_getfd), owned by the caller. Until someone resolves its faults, the
  // guest blocks on its first write to each page.
  Result<int> take_guest_uffd() const;
  // After wait_attached() of a "uffd-switchable" guest: copies of its two
  // userfaultfds, the asynchronous one (armed) and the synchronous one, owned
  // by the caller.
  struct SwitchableUffds {
    int async_fd = -1;
    int sync_fd = -1;
  };
  Result<SwitchableUffds> take_guest_switchable_uffds() const;

  // Gate + SIGSTOP + wait for the stop. Timeout status (guest keeps running, gate
  // lowered) if an Update stays open longer than gate_timeout; aborted if the guest
  // exited. OK at once if already paused.
  Status pause(std::chrono::milliseconds gate_timeout);
  // Lowers the gate and SIGCONTs. OK if not paused.
  Status resume();
  bool paused() const { return stopped_; }

  // Non-blocking: a description if the guest has exited ("guest exited with
  // status 3", "guest was killed by signal 11 (Segmentation fault)"), else nullopt.
  std::optional<std::string> poll_exit();
  // Raw wait status of an exited guest.
  std::optional<int> exit_status() const { return exit_status_; }

  // SIGTERM (and SIGCONT if paused), up to `grace` to exit, then SIGKILL; reaps.
  Status stop(std::chrono::milliseconds grace);
  // The grace of a supervisor's own stop (and of the destructor): time for a
  // guest to exit cleanly on SIGTERM, short enough not to hold up a shutdown.
  static constexpr std::chrono::milliseconds kStopGrace{2000};

 private:
  // A copy of the guest's fd number `target` (pidfd_getfd), owned by the caller.
  Result<int> take_guest_fd(int target) const;

  GuestProcess(pid_t pid, int pidfd, common::SharedMemory control_map)
      : pid_(pid),
        pidfd_(pidfd),
        control_map_(std::move(control_map)),
        control_(reinterpret_cast<guest::ControlPage*>(control_map_.data())) {}
  void record_exit(int wstatus);
  void release();

  pid_t pid_ = -1;
  int pidfd_ = -1;
  common::SharedMemory control_map_;
  guest::ControlPage* control_ = nullptr;
  bool stopped_ = false;
  std::optional<int> exit_status_;
};

// How a wait for attach names what it waits for in its errors.
struct AttachWords {
  const char* failed;   // "guest failed to attach": followed by the guest's message
  const char* before;   // "before calling romulus::guest::attach()": after the exit
  const char* missing;  // "guest did not call romulus::guest::attach()": "within N s"
};

// Waits until the process behind `cp` reports attach (guest/control_page.h):
// an SDK guest, or the QEMU preload (guest/qemu/preload.cc). OK once
// attached. Errors: its own failure with its message (unsupported when the
// tracker failed, refused otherwise); aborted with `exited()`'s description
// once it has exited; timeout.
Status wait_for_attach(guest::ControlPage& cp, std::chrono::milliseconds timeout,
                       const std::function<std::optional<std::string>()>& exited,
                       const AttachWords& words);

// "guest exited with status 3" / "guest was killed by signal 9 (Killed)".
std::string describe_wait_status(int wstatus);

}  // namespace romulus::checkpoint
