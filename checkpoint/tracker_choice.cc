#include "checkpoint/tracker_choice.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <limits>
#include <string>
#include <vector>

#include "checkpoint/hybrid_tracker.h"
#include "checkpoint/uffd_sync_tracker.h"
#include "checkpoint/uffd_tracker.h"
#include "common/shared_memory.h"
#include "guest/linux_abi.h"

namespace romulus::checkpoint {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// A memfd mapped MAP_SHARED in this process with a userfaultfd armed over it
// in write-protect mode (async or sync): the same kind of memory as an arena.
struct ProbeArena {
  common::SharedMemory mem;
  int uffd = -1;
  ~ProbeArena() {
    if (uffd >= 0) close(uffd);
  }
  Status arm(size_t bytes, bool async) {
    ROMULUS_ASSIGN_OR_RETURN(mem, common::SharedMemory::create("romulus-tracker-probe", bytes));
    uffd = guest::linux_abi::userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (uffd < 0) return Status::unsupported("userfaultfd: " + std::string(strerror(errno)));
    if (const char* step = guest::linux_abi::arm_write_protect(
            uffd, mem.data(), bytes,
            async ? guest::linux_abi::kUffdWantedFeatures
                  : guest::linux_abi::kUffdSyncWantedFeatures)) {
      return Status::unsupported(fmt::format("{} on memfd memory: {}", step, strerror(errno)));
    }
    return Status::ok();
  }
  uint64_t addr() const { return reinterpret_cast<uintptr_t>(mem.data()); }
};

void touch_pages(uint8_t* base, size_t first, size_t count, size_t step, uint64_t value) {
  for (size_t i = 0; i < count; ++i) {
    *reinterpret_cast<volatile uint64_t*>(base + (first + i * step) * kPage + 64) = value;
  }
}

constexpr size_t kRepeats = 3;

// How long the sync probe's first write may stay blocked: a resolved fault
// takes microseconds, so this long means faults are not resolved; bounded so
// that start-up reports it instead of hanging.
constexpr std::chrono::seconds kFirstFaultWithin{2};

// Async write-protect: fault cost per first write, PAGEMAP_SCAN cost per GiB.
Status measure_async(Measurements& m) {
  constexpr size_t kBytes = 32u << 20;
  constexpr size_t kPages = 256;
  ROMULUS_RETURN_IF_ERROR(probe_uffd_wp_async());
  ProbeArena a;
  ROMULUS_RETURN_IF_ERROR(a.arm(kBytes, true));
  ROMULUS_ASSIGN_OR_RETURN(auto t, make_uffd_tracker(getpid(), a.addr(), a.mem.data(), kBytes));
  std::vector<uint64_t> pfns;
  touch_pages(a.mem.data(), 0, kPages, 2, 1);  // populate: first touch costs an allocation
  ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
  double fault = 1e30, scan = 1e30;
  for (size_t r = 0; r < kRepeats; ++r) {
    auto t0 = Clock::now();
    touch_pages(a.mem.data(), 0, kPages, 2, 2 + r);
    fault = std::min(fault, us_since(t0) / kPages);
    pfns.clear();
    ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
    if (pfns.size() != kPages) return Status::unsupported("PAGEMAP_SCAN missed written pages");
    t0 = Clock::now();
    pfns.clear();
    ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
    scan = std::min(scan, us_since(t0) * (kGiB / kBytes));
  }
  m.async_fault_us = fault;
  m.scan_us_per_gib = scan;
  return Status::ok();
}

// Sync write-protect: fault round trip through the handler thread, re-protect
// cost per logged page (pages far enough apart that no two share an ioctl).
Status measure_sync(Measurements& m) {
  // The supervisor takes the guest's uffd with pidfd_getfd(), which needs
  // ptrace rights over its child: Yama scope 2 and 3 deny them.
  if (FILE* f = std::fopen("/proc/sys/kernel/yama/ptrace_scope", "r")) {
    int scope = 0;
    const bool read_ok = std::fscanf(f, "%d", &scope) == 1;
    std::fclose(f);
    if (read_ok && scope >= 2) {
      return Status::unsupported("kernel.yama.ptrace_scope is " + std::to_string(scope) +
                                 ": the supervisor may not take its guest's userfaultfd "
                                 "(pidfd_getfd); set it to 1 or less to use uffd-sync");
    }
  }
  constexpr size_t kPages = 32;
  constexpr size_t kStride = 256;
  constexpr size_t kBytes = kStride * kPages * kPage;
  ProbeArena a;
  ROMULUS_RETURN_IF_ERROR(a.arm(kBytes, false));
  auto created = UffdSyncTracker::create(std::exchange(a.uffd, -1), a.addr(), a.mem.data(), kBytes);
  ROMULUS_RETURN_IF_ERROR(created.status());
  std::unique_ptr<UffdSyncTracker> t = std::move(created).value();
  // First, one write from another thread, with a deadline: if faults were not
  // resolved, this thread must not be the one blocked.
  uint8_t* base = a.mem.data();
  auto probe = std::async(std::launch::async, [base] { touch_pages(base, 0, 1, 1, 1); });
  if (probe.wait_for(kFirstFaultWithin) != std::future_status::ready) {
    t.reset();  // lifts every protection: the writer finishes
    probe.wait();
    return Status::unsupported("synchronous write-protect faults were not resolved");
  }
  // Page set k is pages k, k + kStride, ...: all populated first, then each
  // timed round writes a set not written in the epoch before (so no page is
  // sticky, see uffd_sync_tracker.h), with an empty epoch in between.
  std::vector<uint64_t> pfns;
  for (size_t k = 0; k <= kRepeats; ++k) touch_pages(base, k, kPages, kStride, 1);
  ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
  ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
  double fault = 1e30, reprotect = 1e30;
  for (size_t r = 1; r <= kRepeats; ++r) {
    auto t0 = Clock::now();
    touch_pages(base, r, kPages, kStride, 2 + r);
    fault = std::min(fault, us_since(t0) / kPages);
    pfns.clear();
    t0 = Clock::now();
    ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
    reprotect = std::min(reprotect, us_since(t0) / kPages);
    if (pfns.size() != kPages) return Status::unsupported("synchronous write-protect lost pages");
    ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
  }
  m.sync_fault_us = fault;
  m.reprotect_us_per_page = reprotect;
  return Status::ok();
}

// Compare bandwidth (the compare tracker's own collect()) and copy cost.
Status measure_memory(Measurements& m) {
  constexpr size_t kBytes = 8u << 20;
  std::vector<uint8_t> src(kBytes, 1), dst(kBytes, 2);
  ROMULUS_ASSIGN_OR_RETURN(auto t, make_compare_tracker(src.data(), kBytes));
  double compare = 1e30, copy = 1e30;
  std::vector<uint64_t> pfns;
  for (size_t r = 0; r < kRepeats; ++r) {
    auto t0 = Clock::now();
    pfns.clear();
    ROMULUS_RETURN_IF_ERROR(t->collect(pfns));
    compare = std::min(compare, us_since(t0) * (kGiB / kBytes));
    t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), kBytes);
    copy = std::min(copy, us_since(t0) / (kBytes / kPage));
    src[r * kPage] ^= dst[kBytes - 1];  // keep the copy observable
  }
  m.compare_us_per_gib = compare;
  m.copy_us_per_page = copy;
  return Status::ok();
}

}  // namespace

UffdCosts model_uffd_costs(const Measurements& m, double scan_us, double pages) {
  // The pause's part: the faults happen while the guest runs.
  const double copy = pages * m.copy_us_per_page;
  UffdCosts c;
  c.uffd_pause_us = scan_us + copy;
  c.uffd_us = c.uffd_pause_us + pages * m.async_fault_us;
  c.uffd_sync_pause_us = pages * m.reprotect_us_per_page + copy;
  c.uffd_sync_us = c.uffd_sync_pause_us + pages * m.sync_fault_us;
  return c;
}

UffdPick pick_uffd_tracker(const UffdCosts& c) {
  UffdPick p;
  if (c.uffd_us >= 0) {
    p.kind = TrackerKind::kUffd;
    p.guest_us = c.uffd_us;
  }
  if (c.uffd_sync_us >= 0 && (p.guest_us < 0 || c.uffd_sync_us < p.guest_us)) {
    p.kind = TrackerKind::kUffdSync;
    p.guest_us = c.uffd_sync_us;
  }
  // The pause holds every reply: when uffd's would be long because of the
  // arena's size, the pause that follows the dirty set wins, as long as its
  // faults cost the guest at most kPauseTradeFactor times as much.
  if (p.kind == TrackerKind::kUffd && c.uffd_sync_us >= 0 && c.uffd_pause_us > kPauseBudgetUs &&
      c.uffd_sync_pause_us < c.uffd_pause_us && c.uffd_sync_us <= kPauseTradeFactor * c.uffd_us) {
    p.kind = TrackerKind::kUffdSync;
    p.for_the_pause = true;
  }
  return p;
}

const char* TrackerDecision::guest_tracker() const {
  // kAuto is never a decision's kind; read as compare like any non-uffd kind.
  // (The names are literals, so .data() ends in a NUL.)
  if (kind == TrackerKind::kUffdHybrid) return guest::kTrackerUffdSwitchable.data();
  return (kind == TrackerKind::kAuto ? guest::kTrackerCompare : tracker_kind_name(kind)).data();
}

Result<TrackerDecision> choose_tracker(TrackerKind requested, const ArenaFacts& arena,
                                       const Measurements& m) {
  if (arena.arena_bytes == 0) return Status::invalid_argument("tracker choice: empty arena");
  const double g = static_cast<double>(arena.arena_bytes) / kGiB;
  const double d = static_cast<double>(arena.expected_dirty_pages);
  TrackerDecision dec;
  const UffdCosts c = model_uffd_costs(m, g * m.scan_us_per_gib, d);
  if (m.uffd_ok) {
    dec.uffd_us = c.uffd_us;
    dec.uffd_pause_us = c.uffd_pause_us;
  }
  if (m.uffd_sync_ok) {
    dec.uffd_sync_us = c.uffd_sync_us;
    dec.uffd_sync_pause_us = c.uffd_sync_pause_us;
  }
  dec.compare_us = g * m.compare_us_per_gib;

  switch (requested) {
    case TrackerKind::kUffd:
      if (!m.uffd_ok) {
        return Status::unsupported("--tracker uffd: " + m.uffd_reason +
                                   "; use --tracker compare (works on any kernel) or auto");
      }
      dec.kind = TrackerKind::kUffd;
      break;
    case TrackerKind::kUffdSync:
      if (!m.uffd_sync_ok) {
        return Status::unsupported("--tracker uffd-sync: " + m.uffd_sync_reason +
                                   "; use --tracker compare (works on any kernel) or auto");
      }
      dec.kind = TrackerKind::kUffdSync;
      break;
    case TrackerKind::kCompare:
      dec.kind = TrackerKind::kCompare;
      break;
    case TrackerKind::kUffdHybrid:
      if (!m.uffd_ok || !m.uffd_sync_ok) {
        return Status::unsupported(
            "--tracker uffd-hybrid: " + (m.uffd_ok ? m.uffd_sync_reason : m.uffd_reason) +
            "; use --tracker compare (works on any kernel) or auto");
      }
      if (!arena.two_uffds) {
        return Status::unsupported(
            "--tracker uffd-hybrid needs a guest that holds two userfaultfds (the SDK's, not a "
            "VM's); use --tracker uffd, uffd-sync or auto");
      }
      dec.kind = TrackerKind::kUffdHybrid;
      break;
    case TrackerKind::kAuto: {
      dec.kind = TrackerKind::kCompare;
      double best = dec.compare_us;
      if (arena.takeover && (dec.uffd_us >= 0 || dec.uffd_sync_us >= 0)) {
        best = std::numeric_limits<double>::infinity();  // its start would delay the failover
      }
      const UffdPick pick = pick_uffd_tracker(
          UffdCosts{dec.uffd_us, dec.uffd_pause_us, dec.uffd_sync_us, dec.uffd_sync_pause_us});
      if (pick.kind != TrackerKind::kCompare && pick.guest_us < best) {
        dec.kind = pick.kind;
        dec.for_the_pause = pick.for_the_pause;
      }
      // Both, chunk by chunk, for a guest that can hold both (hybrid_tracker.h).
      if (dec.kind != TrackerKind::kCompare && arena.two_uffds && m.uffd_ok && m.uffd_sync_ok) {
        dec.kind = TrackerKind::kUffdHybrid;
        dec.for_the_pause = false;
      }
      break;
    }
  }

  auto cost = [](double us) { return us < 0 ? std::string("n/a") : fmt::format("{:.0f}", us); };
  std::string why;
  if (m.uffd_ok && m.uffd_sync_ok) {
    const double per_page_extra = m.sync_fault_us + m.reprotect_us_per_page - m.async_fault_us;
    if (per_page_extra > 0) {
      why = fmt::format("; uffd-sync is cheaper than uffd below {:.0f} dirty pages/epoch here",
                        g * m.scan_us_per_gib / per_page_extra);
    }
  }
  if (dec.for_the_pause) {
    why += fmt::format(
        "; uffd-sync for its pause: modelled pause {:.0f} us against uffd's {:.0f} us (over "
        "{:.0f} us: the arena's scan), for {:.1f}x uffd's guest time",
        dec.uffd_sync_pause_us, dec.uffd_pause_us, kPauseBudgetUs, dec.uffd_sync_us / dec.uffd_us);
  }
  if (requested == TrackerKind::kAuto && dec.kind == TrackerKind::kUffdHybrid) {
    why +=
        "; both, chunk by chunk: each 2 MiB chunk on the asynchronous userfaultfd while it is "
        "written pause after pause, on the synchronous one while it is not";
  }
  if (requested == TrackerKind::kAuto && arena.takeover && (m.uffd_ok || m.uffd_sync_ok)) {
    why +=
        "; compare left out on a takeover (its start copies the whole arena, delaying the "
        "failover)";
  }
  if (!m.uffd_ok) why += "; uffd unavailable: " + m.uffd_reason;
  if (!m.uffd_sync_ok) why += "; uffd-sync unavailable: " + m.uffd_sync_reason;
  dec.explanation = fmt::format(
      "dirty tracker {} ({}): arena {} MiB, {} dirty pages/epoch expected; modelled guest time "
      "per epoch: uffd {} us, uffd-sync {} us, compare {} us; measured: write-protect fault "
      "{:.2f} us async / {:.2f} us sync, PAGEMAP_SCAN {:.0f} us/GiB, re-protect {:.2f} us/page, "
      "compare {:.0f} us/GiB, copy {:.2f} us/page{}",
      tracker_kind_name(dec.kind), requested == TrackerKind::kAuto ? "auto" : "requested",
      arena.arena_bytes >> 20, arena.expected_dirty_pages, cost(dec.uffd_us),
      cost(dec.uffd_sync_us), cost(dec.compare_us), m.async_fault_us, m.sync_fault_us,
      m.scan_us_per_gib, m.reprotect_us_per_page, m.compare_us_per_gib, m.copy_us_per_page, why);
  return dec;
}

Measurements measure_tracker_costs() {
  Measurements m;
  Status mem = measure_memory(m);
  (void)mem;  // plain memory: cannot fail short of allocation failure
  Status a = measure_async(m);
  m.uffd_ok = a.is_ok();
  if (!a.is_ok()) m.uffd_reason = a.message();
  Status s = measure_sync(m);
  m.uffd_sync_ok = s.is_ok();
  if (!s.is_ok()) m.uffd_sync_reason = s.message();
  return m;
}

Result<std::unique_ptr<DirtyTracker>> make_tracker(const TrackerDecision& d,
                                                   const GuestProcess& guest,
                                                   const uint8_t* arena_mapping, size_t arena_bytes,
                                                   const Measurements& m) {
  if (d.kind == TrackerKind::kUffdHybrid) {
    ROMULUS_ASSIGN_OR_RETURN(GuestProcess::SwitchableUffds fds,
                             guest.take_guest_switchable_uffds());
    ROMULUS_ASSIGN_OR_RETURN(
        auto t, HybridTracker::create(HybridTracker::Guest{.pid = guest.pid(),
                                                           .arena_addr = guest.guest_arena_addr(),
                                                           .async_uffd = fds.async_fd,
                                                           .sync_uffd = fds.sync_fd},
                                      arena_mapping, arena_bytes, m));
    return std::unique_ptr<DirtyTracker>(std::move(t));
  }
  switch (d.kind) {
    case TrackerKind::kUffd:
      return make_uffd_tracker(guest.pid(), guest.guest_arena_addr(), arena_mapping, arena_bytes);
    case TrackerKind::kUffdSync: {
      ROMULUS_ASSIGN_OR_RETURN(int uffd, guest.take_guest_uffd());
      return make_uffd_sync_tracker(uffd, guest.guest_arena_addr(), arena_mapping, arena_bytes);
    }
    case TrackerKind::kCompare:
      return make_compare_tracker(arena_mapping, arena_bytes);
    case TrackerKind::kAuto:
    case TrackerKind::kUffdHybrid:  // above
      break;
  }
  return Status::invalid_argument("make_tracker: the decision names no tracker (auto)");
}

}  // namespace romulus::checkpoint
