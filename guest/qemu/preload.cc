// libromulus_qemu_preload.so: tracks an unmodified QEMU's writes to the
// guest's RAM with Romulus's asynchronous userfaultfd tracker.
//
// `romulus primary|backup --vm` (checkpoint/vm_guest.h) starts QEMU with this
// library in LD_PRELOAD when the uffd tracker is chosen, with the variables a
// supervised guest gets (guest/guest.h): ROMULUS_ARENA_FD, ROMULUS_ARENA_SIZE,
// ROMULUS_CONTROL_FD, ROMULUS_TRACKER=uffd. QEMU maps the guest's RAM from
// the arena's memfd itself (the memory-backend-file Romulus adds, over
// /proc/self/fd/N, which opens the same file again). This library stands in
// front of mmap: when QEMU maps that file shared and writable, it arms async
// write-protect over the new mapping (guest/linux_abi.h arm_write_protect,
// the same call the SDK makes) and reports the mapping's address, its
// userfaultfd and "attached" on the control page (guest/control_page.h),
// as romulus::guest::attach() does for a program. From then on every write to
// guest RAM, by a vCPU (TCG's generated code, or KVM through the kernel), a
// device model or the kernel on QEMU's behalf, clears a page's protection,
// which the supervisor reads and re-arms with PAGEMAP_SCAN on QEMU's pagemap.
//
// The file is recognised by identity (st_dev and st_ino of ROMULUS_ARENA_FD),
// not by the fd number or path. Only one writable mapping of it is tracked: a
// second one (in QEMU or in any process that inherited this library and the
// arena) is refused with EPERM and one line on stderr, since writes through it
// would never reach the backup. Read-only mappings pass through.
//
// Without ROMULUS_ARENA_FD (or with ROMULUS_TRACKER other than uffd) the
// library does nothing. It keeps no heap, calls no C++ runtime and makes
// its own mmap system calls, so it can run in QEMU's early start-up.
// x86-64 and other 64-bit Linux only (mmap and mmap64 are the same call).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "guest/control_page.h"
#include "guest/environment.h"
#include "guest/linux_abi.h"

static_assert(sizeof(off_t) == 8, "the QEMU preload is for 64-bit Linux");

namespace {

namespace g = romulus::guest;

struct Arena {
  bool wanted = false;  // supervised, with the uffd tracker
  dev_t dev = 0;
  ino_t ino = 0;
  uint64_t size = 0;
  g::ControlPage* control = nullptr;
  std::atomic<bool> mapped{false};  // the one tracked mapping exists
};

Arena arena;

void* raw_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  long r = ::syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  if (r < 0 && r > -4096) {
    errno = static_cast<int>(-r);
    return MAP_FAILED;
  }
  return reinterpret_cast<void*>(r);
}

bool parse_env(const char* name, uint64_t& out) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') return false;
  out = v;
  return true;
}

// Reads the supervisor's variables once, before QEMU's main().
__attribute__((constructor)) void read_environment() {
  const char* tracker = std::getenv(g::kEnvTracker);
  uint64_t arena_fd = 0, size = 0, control_fd = 0;
  if (tracker == nullptr || g::kTrackerUffd != tracker || !parse_env(g::kEnvArenaFd, arena_fd) ||
      !parse_env(g::kEnvArenaSize, size) || !parse_env(g::kEnvControlFd, control_fd) ||
      arena_fd > INT32_MAX || control_fd > INT32_MAX || size == 0) {
    return;
  }
  struct stat st;
  if (::fstat(static_cast<int>(arena_fd), &st) != 0) return;
  void* page = raw_mmap(nullptr, g::kControlPageSize, PROT_READ | PROT_WRITE, MAP_SHARED,
                        static_cast<int>(control_fd), 0);
  if (page == MAP_FAILED) return;
  auto* cp = static_cast<g::ControlPage*>(page);
  if (cp->magic.load(std::memory_order_acquire) != g::kControlMagic ||
      cp->version.load(std::memory_order_relaxed) != g::kControlVersion) {
    ::munmap(page, g::kControlPageSize);
    return;
  }
  arena.dev = st.st_dev;
  arena.ino = st.st_ino;
  arena.size = size;
  arena.control = cp;
  arena.wanted = true;
}

// Tells the supervisor, which futex-waits on attach_state.
void report(bool ok, const char* message) { g::publish_attach(arena.control, ok, message); }

void fail(const char* what, int err) {
  char text[g::kControlMessageSize];
  std::snprintf(text, sizeof text, "tracking QEMU's guest RAM: %s: %s", what, std::strerror(err));
  arena.control->tracker_errno.store(static_cast<uint32_t>(err), std::memory_order_relaxed);
  arena.control->tracker_state.store(static_cast<uint32_t>(g::TrackerState::kFailed),
                                     std::memory_order_relaxed);
  report(false, text);
}

// The mapping is the arena's: arm write-protect over it and report it.
void arm(void* addr, size_t len) {
  g::ControlPage* cp = arena.control;
  if (len != arena.size) {
    fail("QEMU mapped the arena with a length other than its size", EINVAL);
    return;
  }
  int fd = g::linux_abi::userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) {
    fail("userfaultfd", errno);
    return;
  }
  uint64_t features = 0;
  if (const char* step = g::linux_abi::arm_write_protect(
          fd, addr, len, g::linux_abi::kUffdWantedFeatures, &features)) {
    const int err = errno;
    ::close(fd);
    fail(step, err);
    return;
  }
  cp->arena_addr.store(reinterpret_cast<uintptr_t>(addr), std::memory_order_relaxed);
  cp->arena_size.store(len, std::memory_order_relaxed);
  cp->uffd_features.store(features, std::memory_order_relaxed);
  cp->uffd_fd.store(fd, std::memory_order_relaxed);
  cp->tracker_state.store(static_cast<uint32_t>(g::TrackerState::kUffd), std::memory_order_relaxed);
  report(true, "attached: QEMU's guest RAM under async write-protect");
}

bool is_arena(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && st.st_dev == arena.dev && st.st_ino == arena.ino;
}

void* tracked_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  const int type = flags & MAP_TYPE;
  if (!arena.wanted || fd < 0 || (prot & PROT_WRITE) == 0 ||
      (type != MAP_SHARED && type != MAP_SHARED_VALIDATE) || !is_arena(fd)) {
    return raw_mmap(addr, len, prot, flags, fd, off);
  }
  // One writable mapping per arena, claimed like an SDK guest's attach.
  uint32_t unclaimed = 0;
  const auto me = static_cast<uint32_t>(::getpid());
  if (arena.mapped.exchange(true) ||
      !arena.control->guest_pid.compare_exchange_strong(unclaimed, me, std::memory_order_acq_rel)) {
    std::fprintf(stderr,
                 "romulus qemu preload: refusing a second writable mapping of the guest's RAM "
                 "(pid %u): writes through it would not be tracked\n",
                 static_cast<unsigned>(me));
    errno = EPERM;
    return MAP_FAILED;
  }
  void* p = raw_mmap(addr, len, prot, flags, fd, off);
  if (p == MAP_FAILED) {
    const int err = errno;
    fail("mmap of the arena", err);
    errno = err;
    return MAP_FAILED;
  }
  if (off != 0) {
    fail("QEMU mapped the arena at a non-zero offset", EINVAL);
  } else {
    arm(p, len);
  }
  return p;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* mmap(void* addr, size_t len, int prot, int flags,
                                                  int fd, off_t off) {
  return tracked_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) void* mmap64(void* addr, size_t len, int prot, int flags,
                                                    int fd, off_t off) {
  return tracked_mmap(addr, len, prot, flags, fd, off);
}

}  // extern "C"
