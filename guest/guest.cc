// The guest SDK: attach(), the private fallback arena, uffd arming, the Update gate.
#include "guest/guest.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "guest/control_page.h"
#include "guest/linux_abi.h"
#include "guest/romulus_guest.h"

namespace romulus::guest {

namespace bip = boost::interprocess;

namespace detail {

struct ArenaState {
  uint8_t* base = nullptr;
  size_t size = 0;
  bool supervised = false;
  bool resumed = false;
  std::optional<uint64_t> resumed_epoch;
  std::optional<uint16_t> service_port;
  std::string tracker = "none";
  int uffd = -1;       // kept open for the life of the process
  int uffd_sync = -1;  // uffd-switchable's second userfaultfd, the same
  ControlPage* control = nullptr;
  std::unique_ptr<bip::managed_external_buffer> segment;
};

}  // namespace detail

namespace {

// The process-wide SDK state. attach() runs once (std::call_once) and publishes
// the control page for Update; both live until the process exits, by design: the
// SDK is the process's link to its supervisor.
struct Process {
  std::once_flag once;
  detail::ArenaState* state = nullptr;  // set on success
  Status error;                         // set on failure
  std::atomic<ControlPage*> control{nullptr};
};

Process& process() {
  static Process* p = new Process();  // never destroyed: Updates may run during exit
  return *p;
}

thread_local uint32_t t_update_depth = 0;

template <typename T>
bool parse_uint(const char* text, T& out) {
  if (text == nullptr || *text == '\0') return false;
  const char* end = text + std::strlen(text);
  auto [p, ec] = std::from_chars(text, end, out);
  return ec == std::errc() && p == end;
}

Status parse_env_uint(const char* name, uint64_t max, std::optional<uint64_t>& out) {
  const char* text = std::getenv(name);
  out.reset();
  if (text == nullptr) return Status::ok();
  uint64_t v = 0;
  if (!parse_uint(text, v) || v > max) {
    return Status::invalid_argument(std::string(name) + "='" + text + "' is not a valid number");
  }
  out = v;
  return Status::ok();
}

// Registers [base, base+size) for write-protect and arms it: asynchronous (the
// kernel resolves faults, the supervisor scans with PAGEMAP_SCAN) or synchronous
// (every first write to a page blocks until the supervisor, which takes a copy of
// this uffd through pidfd_getfd(), logs the page and lifts its protection). Fills
// the control page's tracker fields either way.
Status arm_uffd(detail::ArenaState& s, ControlPage* cp, bool async) {
  auto fail = [&](const char* what, int err) {
    cp->tracker_errno.store(static_cast<uint32_t>(err), std::memory_order_relaxed);
    cp->tracker_state.store(static_cast<uint32_t>(TrackerState::kFailed),
                            std::memory_order_relaxed);
    return Status::from_errno(what, err);
  };
  int fd = linux_abi::userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) return fail("userfaultfd", errno);
  uint64_t features = 0;
  if (const char* step = linux_abi::arm_write_protect(
          fd, s.base, s.size,
          async ? linux_abi::kUffdWantedFeatures : linux_abi::kUffdSyncWantedFeatures, &features)) {
    int err = errno;
    close(fd);
    if (std::strcmp(step, "UFFDIO_API") == 0 && err == EINVAL) {
      return fail(
          "UFFDIO_API with WP_ASYNC|WP_UNPOPULATED|WP_HUGETLBFS_SHMEM "
          "(kernel lacks UFFD_FEATURE_WP_ASYNC? needs Linux 6.7+)",
          err);
    }
    return fail(step, err);
  }
  cp->uffd_features.store(features, std::memory_order_relaxed);
  s.uffd = fd;
  cp->uffd_fd.store(fd, std::memory_order_relaxed);
  cp->tracker_state.store(
      static_cast<uint32_t>(async ? TrackerState::kUffd : TrackerState::kUffdSync),
      std::memory_order_relaxed);
  return Status::ok();
}

// uffd-switchable: after arm_uffd(async), a second userfaultfd in synchronous
// write-protect mode, registered over nothing; the supervisor moves the arena
// to it (and back) while this process is stopped.
Status open_sync_uffd(detail::ArenaState& s, ControlPage* cp) {
  int fd = linux_abi::userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) return Status::from_errno("userfaultfd (the synchronous one)", errno);
  if (const char* step = linux_abi::uffd_api(fd, linux_abi::kUffdSyncWantedFeatures)) {
    const int err = errno;
    close(fd);
    return Status::from_errno(std::string(step) + " (the synchronous userfaultfd)", err);
  }
  s.uffd_sync = fd;
  cp->uffd_sync_fd.store(fd, std::memory_order_relaxed);
  cp->tracker_state.store(static_cast<uint32_t>(TrackerState::kUffdSwitchable),
                          std::memory_order_relaxed);
  return Status::ok();
}

// True if the arena's first bytes, where create_only places the segment
// manager (its header holds the segment's size, never 0), were never written.
bool segment_header_blank(const detail::ArenaState& s) {
  const auto* p = static_cast<const unsigned char*>(s.base);
  const size_t n = std::min<size_t>(s.size, 256);
  return std::all_of(p, p + n, [](unsigned char b) { return b == 0; });
}

Status open_segment(detail::ArenaState& s) {
  bool create = !s.resumed;
  if (s.resumed && segment_header_blank(s)) {
    // The checkpoint resumed from was taken before this program first
    // created its segment (it was still starting up): its state then was
    // "nothing built yet", so building it now is the faithful resume.
    std::fprintf(stderr,
                 "romulus: the checkpoint resumed from (epoch %llu) predates the arena's managed "
                 "segment; creating it afresh\n",
                 static_cast<unsigned long long>(s.resumed_epoch.value_or(0)));
    create = true;
  }
  try {
    if (create) {
      s.segment = std::make_unique<bip::managed_external_buffer>(bip::create_only, s.base, s.size);
    } else {
      // open_only reads nothing; check that a segment of this size is there
      // before anything walks its (otherwise arbitrary) structures.
      s.segment = std::make_unique<bip::managed_external_buffer>(bip::open_only, s.base, s.size);
      if (s.segment->get_size() != s.size) {
        const size_t found = s.segment->get_size();
        s.segment.reset();
        return Status::corrupt("the resumed arena holds no managed segment of " +
                               std::to_string(s.size) + " bytes (its header says " +
                               std::to_string(found) +
                               "): it was not written by romulus::guest::attach() with this size");
      }
    }
  } catch (const std::exception& e) {
    return Status::corrupt(std::string(create ? "creating" : "opening") +
                           " the arena's managed segment: " + e.what());
  }
  return Status::ok();
}

Status attach_private(detail::ArenaState& s) {
  std::optional<uint64_t> size;
  ROMULUS_RETURN_IF_ERROR(parse_env_uint(kEnvArenaSize, std::numeric_limits<size_t>::max(), size));
  s.size = size.value_or(kPrivateArenaDefaultSize);
  if (s.size == 0 || s.size % 4096 != 0) {
    return Status::invalid_argument("ROMULUS_ARENA_SIZE must be a positive multiple of 4096");
  }
  void* p = mmap(nullptr, s.size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Status::from_errno("mmap private arena", errno);
  s.base = static_cast<uint8_t*>(p);
  return open_segment(s);
}

// Supervised attach, up to (not including) the report: fills s; on error the
// caller reports the Status through the control page.
Status attach_supervised(detail::ArenaState& s, ControlPage* cp) {
  std::optional<uint64_t> arena_fd, arena_size, port;
  ROMULUS_RETURN_IF_ERROR(parse_env_uint(kEnvArenaFd, INT32_MAX, arena_fd));
  ROMULUS_RETURN_IF_ERROR(
      parse_env_uint(kEnvArenaSize, std::numeric_limits<size_t>::max(), arena_size));
  ROMULUS_RETURN_IF_ERROR(parse_env_uint(kEnvResumedEpoch, UINT64_MAX, s.resumed_epoch));
  ROMULUS_RETURN_IF_ERROR(parse_env_uint(kEnvServicePort, 65535, port));
  if (port) s.service_port = static_cast<uint16_t>(*port);
  s.resumed = s.resumed_epoch.has_value();
  if (!arena_size || *arena_size == 0 || *arena_size % 4096 != 0) {
    return Status::invalid_argument("ROMULUS_ARENA_SIZE missing or not a multiple of 4096");
  }
  s.size = *arena_size;
  void* p =
      mmap(nullptr, s.size, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(*arena_fd), 0);
  if (p == MAP_FAILED)
    return Status::from_errno("mmap arena fd " + std::to_string(*arena_fd), errno);
  s.base = static_cast<uint8_t*>(p);
  cp->arena_addr.store(reinterpret_cast<uintptr_t>(s.base), std::memory_order_relaxed);
  cp->arena_size.store(s.size, std::memory_order_relaxed);

  const char* tracker = std::getenv(kEnvTracker);
  std::string_view t = tracker ? std::string_view(tracker) : kTrackerCompare;
  if (t == kTrackerUffd) {
    s.tracker = kTrackerUffd;
    ROMULUS_RETURN_IF_ERROR(arm_uffd(s, cp, true));
  } else if (t == kTrackerUffdSwitchable) {
    s.tracker = kTrackerUffdSwitchable;
    ROMULUS_RETURN_IF_ERROR(arm_uffd(s, cp, true));
    ROMULUS_RETURN_IF_ERROR(open_sync_uffd(s, cp));
  } else if (t == kTrackerUffdSync) {
    // Armed after the segment is built: in synchronous mode a write blocks until
    // the supervisor resolves it, and the supervisor starts resolving only once
    // attach is reported. The initial sync covers what was written before.
    s.tracker = kTrackerUffdSync;
    ROMULUS_RETURN_IF_ERROR(open_segment(s));
    return arm_uffd(s, cp, false);
  } else if (t == kTrackerCompare || t == "none") {
    s.tracker = kTrackerCompare;
    cp->tracker_state.store(static_cast<uint32_t>(TrackerState::kCompare),
                            std::memory_order_relaxed);
  } else {
    return Status::invalid_argument("unknown ROMULUS_TRACKER '" + std::string(t) + "'");
  }
  return open_segment(s);
}

void report(ControlPage* cp, const Status& st) {
  cp->guest_pid.store(static_cast<uint32_t>(getpid()), std::memory_order_relaxed);
  publish_attach(cp, st.is_ok(), st.is_ok() ? "attached" : st.to_string().c_str());
}

void do_attach(Process& proc) {
  auto s = std::make_unique<detail::ArenaState>();
  const char* control_text = std::getenv(kEnvControlFd);
  if (std::getenv(kEnvArenaFd) == nullptr) {
    Status st = attach_private(*s);
    if (!st.is_ok()) {
      proc.error = st.context("romulus guest attach (private arena)");
      return;
    }
    proc.state = s.release();
    return;
  }
  s->supervised = true;
  int control_fd = -1;
  if (!parse_uint(control_text, control_fd) || control_fd < 0) {
    proc.error = Status::invalid_argument(
        "romulus guest attach: ROMULUS_ARENA_FD is set but ROMULUS_CONTROL_FD is missing");
    return;
  }
  void* p = mmap(nullptr, kControlPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, control_fd, 0);
  if (p == MAP_FAILED) {
    proc.error = Status::from_errno("romulus guest attach: mmap control fd", errno);
    return;
  }
  auto* cp = static_cast<ControlPage*>(p);
  if (cp->magic.load(std::memory_order_acquire) != kControlMagic ||
      cp->version.load(std::memory_order_relaxed) != kControlVersion) {
    munmap(p, kControlPageSize);
    proc.error = Status::invalid_argument(
        "romulus guest attach: control page has the wrong magic or version (supervisor "
        "and guest SDK do not match)");
    return;
  }
  // One process per arena: a child that inherited ROMULUS_ARENA_FD (fork, or an
  // exec with the environment kept) must not attach the same arena a second time.
  // The claim is the pid word; the supervisor zeroes the page for each guest.
  uint32_t unclaimed = 0;
  if (!cp->guest_pid.compare_exchange_strong(unclaimed, static_cast<uint32_t>(getpid()),
                                             std::memory_order_acq_rel)) {
    munmap(p, kControlPageSize);
    proc.error = Status::refused(
        "romulus guest attach: the arena is already attached by pid " + std::to_string(unclaimed) +
        "; only one process may attach it (unset ROMULUS_ARENA_FD in child processes)");
    return;
  }
  Status st = attach_supervised(*s, cp);
  report(cp, st);
  if (!st.is_ok()) {
    proc.error = st.context("romulus guest attach");
    return;
  }
  s->control = cp;
  proc.control.store(cp, std::memory_order_release);
  proc.state = s.release();
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

uint8_t* Arena::base() const { return state_->base; }
size_t Arena::size() const { return state_->size; }
bool Arena::supervised() const { return state_->supervised; }
bool Arena::resumed() const { return state_->resumed; }
std::optional<uint64_t> Arena::resumed_epoch() const { return state_->resumed_epoch; }
std::optional<uint16_t> Arena::service_port() const { return state_->service_port; }
std::string_view Arena::tracker() const { return state_->tracker; }
bip::managed_external_buffer& Arena::segment() const { return *state_->segment; }

Result<Arena> attach() {
  Process& proc = process();
  std::call_once(proc.once, [&] { do_attach(proc); });
  if (proc.state == nullptr) return proc.error;
  return Arena(proc.state);
}

void update_begin() {
  if (t_update_depth++ > 0) return;
  ControlPage* cp = process().control.load(std::memory_order_acquire);
  if (cp == nullptr) return;  // private arena: nothing to coordinate with
  bool waited = false;
  for (;;) {
    // Hold back while a pause is pending: spin briefly, then sleep on the futex.
    for (int spin = 0; cp->pause_pending.load(std::memory_order_seq_cst) != 0; ++spin) {
      waited = true;
      if (spin < 64) {
        cpu_relax();
      } else {
        linux_abi::futex_wait(&cp->pause_pending, 1);
      }
    }
    cp->open_updates.fetch_add(1, std::memory_order_seq_cst);
    if (cp->pause_pending.load(std::memory_order_seq_cst) == 0) break;
    // A pause was raised between our check and our increment: back off so it can
    // proceed, then wait for it like above.
    if (cp->open_updates.fetch_sub(1, std::memory_order_seq_cst) == 1) {
      linux_abi::futex_wake(&cp->open_updates);
    }
  }
  if (waited) cp->update_waits.fetch_add(1, std::memory_order_relaxed);
}

void update_end() {
  if (t_update_depth == 0) return;  // unpaired end: ignore rather than corrupt the count
  if (--t_update_depth > 0) return;
  ControlPage* cp = process().control.load(std::memory_order_acquire);
  if (cp == nullptr) return;
  if (cp->open_updates.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      cp->pause_pending.load(std::memory_order_seq_cst) != 0) {
    linux_abi::futex_wake(&cp->open_updates);
  }
}

Update::Update() { update_begin(); }
Update::~Update() { update_end(); }

}  // namespace romulus::guest

// ---- C ABI ----

extern "C" int romulus_attach(void) {
  auto arena = romulus::guest::attach();
  if (!arena.is_ok()) {
    std::fprintf(stderr, "%s\n", arena.status().to_string().c_str());
    return -1;
  }
  return 0;
}

extern "C" void* romulus_arena_base(void) {
  auto arena = romulus::guest::attach();
  return arena.is_ok() ? arena->base() : nullptr;
}

extern "C" size_t romulus_arena_size(void) {
  auto arena = romulus::guest::attach();
  return arena.is_ok() ? arena->size() : 0;
}

extern "C" int romulus_resumed(void) {
  auto arena = romulus::guest::attach();
  return arena.is_ok() && arena->resumed() ? 1 : 0;
}

extern "C" void romulus_update_begin(void) { romulus::guest::update_begin(); }
extern "C" void romulus_update_end(void) { romulus::guest::update_end(); }
