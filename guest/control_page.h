// The control page: one 4096-byte MAP_SHARED memfd page shared by the
// supervisor and its guest, for attach handshake and the Update gate.
//
// It is not replicated and never leaves the host, so it is a plain struct of
// lock-free atomics (not a wire format). The supervisor creates and zeroes it and
// calls init_control_page() before starting the guest; the guest maps the fd named
// by ROMULUS_CONTROL_FD.
//
// Protocol:
//  - attach: the guest fills arena_addr, guest_pid, tracker_*, uffd_fd(s) and message, then
//    stores attach_state = kAttached or kFailed (release) and futex-wakes it. The
//    supervisor futex-waits on attach_state.
//  - Update gate (a Dekker handshake, every access seq_cst):
//      supervisor: pause_pending = 1; wait until open_updates == 0; SIGSTOP.
//      guest:      open_updates++; if pause_pending, undo (waking the supervisor
//                  when it reaches 0), futex-wait on pause_pending, retry.
//      guest exit: open_updates--; if it reached 0 and pause_pending, wake.
//      resume:     pause_pending = 0; futex-wake pause_pending; SIGCONT.
//    Both futex words are shared futexes (no FUTEX_PRIVATE_FLAG).
//  - Counters are statistics only: the supervisor writes pauses, pause_waits and
//    max_gate_wait_ns; the guest writes update_waits.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "guest/linux_abi.h"

namespace romulus::guest {

inline constexpr uint32_t kControlMagic = 0x434c4d52;  // "RMLC" little-endian
inline constexpr uint32_t kControlVersion = 1;
inline constexpr size_t kControlPageSize = 4096;
inline constexpr size_t kControlMessageSize = 256;

enum class AttachState : uint32_t {
  kWaiting = 0,   // guest has not called attach() yet
  kAttached = 1,  // arena mapped, tracking armed (if requested)
  kFailed = 2,    // attach failed; tracker_errno and message say why
};

enum class TrackerState : uint32_t {
  kNone = 0,      // not reported yet
  kUffd = 1,      // userfaultfd async write-protect armed over the arena
  kCompare = 2,   // no in-guest tracking (the supervisor compares pages)
  kFailed = 3,    // uffd requested but could not be armed
  kUffdSync = 4,  // userfaultfd write-protect in synchronous mode; uffd_fd says which fd
  // Switchable: asynchronous write-protect armed over the arena on uffd_fd (as
  // kUffd), and a second userfaultfd, uffd_sync_fd, ready for synchronous
  // write-protect but registered over nothing. The supervisor moves chunks
  // of the arena between the two while the guest is stopped
  // (checkpoint/hybrid_tracker.h).
  kUffdSwitchable = 5,
};

struct ControlPage {
  std::atomic<uint32_t> magic;
  std::atomic<uint32_t> version;
  std::atomic<uint32_t> attach_state;   // AttachState; futex word
  std::atomic<uint32_t> tracker_state;  // TrackerState
  std::atomic<uint32_t> tracker_errno;  // errno of the failing call, 0 if none
  std::atomic<uint32_t> guest_pid;
  std::atomic<uint64_t> arena_addr;  // arena start in the guest's address space
  std::atomic<uint64_t> arena_size;
  std::atomic<uint64_t> uffd_features;  // features UFFDIO_API returned (diagnostics)

  std::atomic<uint32_t> pause_pending;  // 1 while the supervisor pauses; futex word
  std::atomic<uint32_t> open_updates;   // outermost Updates open in the guest; futex word

  std::atomic<uint64_t> pauses;            // supervisor: completed pauses
  std::atomic<uint64_t> pause_waits;       // supervisor: pauses that found Updates open
  std::atomic<uint64_t> max_gate_wait_ns;  // supervisor: longest wait for Updates to close
  std::atomic<uint64_t> update_waits;      // guest: Update constructors held back by a pause

  // NUL-terminated, written before attach_state is released.
  char message[kControlMessageSize];

  // kUffdSync and kUffdSwitchable: the guest's userfaultfd, by its fd number in
  // the guest. The supervisor takes its own copy with pidfd_getfd() and
  // resolves the faults (kUffdSync) or moves the arena off it (kUffdSwitchable).
  std::atomic<int32_t> uffd_fd;
  // kUffdSwitchable only: the second, synchronous userfaultfd's fd number.
  // (Added after version 1 shipped: a supervisor that does not ask for a
  // switchable tracker never reads it, so the version is unchanged.)
  std::atomic<int32_t> uffd_sync_fd;
};

static_assert(sizeof(ControlPage) <= kControlPageSize);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Resets a freshly mapped page (supervisor side, before starting the guest).
inline void init_control_page(ControlPage* cp) {
  std::memset(static_cast<void*>(cp), 0, sizeof(ControlPage));
  cp->version.store(kControlVersion, std::memory_order_relaxed);
  cp->magic.store(kControlMagic, std::memory_order_release);
}

// Copies text into message, truncating, always NUL-terminated.
inline void set_control_message(ControlPage* cp, const char* text) {
  size_t n = std::strlen(text);
  if (n >= kControlMessageSize) n = kControlMessageSize - 1;
  std::memcpy(cp->message, text, n);
  cp->message[n] = '\0';
}

// The end of attach, on the guest's side (the SDK and QEMU's preload): the
// message, then attach_state (release), then a wake for the supervisor's
// futex wait on it.
inline void publish_attach(ControlPage* cp, bool ok, const char* message) {
  set_control_message(cp, message);
  cp->attach_state.store(static_cast<uint32_t>(ok ? AttachState::kAttached : AttachState::kFailed),
                         std::memory_order_seq_cst);
  linux_abi::futex_wake(&cp->attach_state);
}

}  // namespace romulus::guest
