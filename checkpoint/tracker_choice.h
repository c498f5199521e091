// Tracker choice: which dirty tracker protects a guest, decided once at start
// from the arena size and costs measured on this machine (not constants: the
// write-protect fault cost moved 15x between two days on the same VM class).
//
//   Measurements m = measure_tracker_costs();                  // a few ms, this process
//   ROMULUS_ASSIGN_OR_RETURN(TrackerDecision d,
//       choose_tracker(requested, ArenaFacts{arena_bytes}, m)); // pure
//   log(d.explanation);  spec.tracker = d.guest_tracker();      // before starting the guest
//   ...guest attached...
//   ROMULUS_ASSIGN_OR_RETURN(tracker, make_tracker(d, guest, arena, bytes));
//
// The rule (docs/operations.md, "How --tracker auto decides"): for the expected
// dirty pages per epoch D and an arena of G GiB, the guest time each tracker
// costs per epoch is modelled as
//   uffd       G * scan_us_per_gib + D * (async_fault_us + copy_us_per_page)
//   uffd-sync  D * (sync_fault_us + reprotect_us_per_page + copy_us_per_page)
//   compare    G * compare_us_per_gib
// and auto takes the cheapest available one, with one exception for the
// pause, which holds every reply and stops the whole guest. Of those costs,
// the pause's part is
//   uffd       G * scan_us_per_gib + D * copy_us_per_page
//   uffd-sync  D * (reprotect_us_per_page + copy_us_per_page)
// and when uffd is the cheapest but its pause exceeds kPauseBudgetUs (the
// arena's scan: a large arena) while uffd-sync's is shorter, auto takes
// uffd-sync if its guest time is at most kPauseTradeFactor times uffd's: a
// pause that follows the dirty set, for a bounded cost in faults. A guest
// that can hold both userfaultfds (ArenaFacts::two_uffds) on a kernel that
// runs both gets neither alone but uffd-hybrid, which puts each chunk of the
// arena on the one that suits it as the guest runs (hybrid_tracker.h); the
// model still decides for a guest that cannot (a VM). An explicit request
// is honoured if the kernel can do it, else refused with the reason.
//
// Threads: choose_tracker() is pure; measure_tracker_costs() runs on the
// calling thread (and starts one short-lived fault-handler thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "checkpoint/commit_trigger.h"
#include "checkpoint/dirty_tracker.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/tracker_kind.h"
#include "common/status.h"

namespace romulus::checkpoint {

// Pages a guest is expected to dirty per epoch, unknown at start, so taken
// from what an epoch is. Under --commit interval it is an interval (50 ms) of
// the mostly idle services Romulus is built for: 100. Under eager it is what
// the guest wrote while one group of replies waited: romulus-kvstore wrote
// 2-36 pages per checkpoint from 1 to 128 clients (docs/performance.md, "A
// large arena's pause").
inline constexpr uint64_t kExpectedDirtyPagesInterval = 100;
inline constexpr uint64_t kExpectedDirtyPagesEager = 25;
inline constexpr uint64_t expected_dirty_pages(CommitMode mode) {
  return mode == CommitMode::kEager ? kExpectedDirtyPagesEager : kExpectedDirtyPagesInterval;
}

struct ArenaFacts {
  uint64_t arena_bytes = 0;
  // Pages the guest is expected to dirty per epoch (expected_dirty_pages()).
  uint64_t expected_dirty_pages = kExpectedDirtyPagesInterval;
  // The guest resumes on a takeover: the tracker's start is on the failover's
  // critical path. `auto` then leaves compare out whenever a userfaultfd
  // tracker works: compare starts by copying the whole arena into a fresh
  // shadow, which on some hosts costs hundreds of milliseconds at tens of MiB
  // (first touch of every page), where a userfaultfd tracker starts in one
  // write-protect of the range.
  bool takeover = false;
  // The guest can arm both userfaultfd modes (an SDK guest; QEMU's preload
  // arms only the asynchronous one): `auto` then takes uffd-hybrid.
  bool two_uffds = false;
};

// What measure_tracker_costs() found. Times in microseconds; an unavailable
// tracker has *_ok == false and its reason set (its costs are then 0).
struct Measurements {
  bool uffd_ok = false;       // async write-protect + PAGEMAP_SCAN
  std::string uffd_reason;    // why not, when !uffd_ok
  bool uffd_sync_ok = false;  // synchronous write-protect resolved by a handler thread
  std::string uffd_sync_reason;
  double async_fault_us = 0;         // guest's first write to a page, async mode
  double sync_fault_us = 0;          // the same in sync mode (round trip through the handler)
  double scan_us_per_gib = 0;        // PAGEMAP_SCAN of an idle arena, per GiB
  double reprotect_us_per_page = 0;  // uffd-sync collect(), per logged page
  double compare_us_per_gib = 0;     // compare tracker collect() of an idle arena, per GiB
  double copy_us_per_page = 0;       // staging copy of one page
};

// The longest modelled pause auto accepts from uffd before it prefers the
// pause of uffd-sync (µs): a few times the reply latency Romulus aims at.
inline constexpr double kPauseBudgetUs = 500;
// How much more guest time (faults) auto pays for that shorter pause.
inline constexpr double kPauseTradeFactor = 2;

// Modelled costs of the two userfaultfd trackers, µs per epoch (-1 if
// unavailable): the guest time, and the pause's part of it.
struct UffdCosts {
  double uffd_us = -1, uffd_pause_us = -1;
  double uffd_sync_us = -1, uffd_sync_pause_us = -1;
};
// The formulas above for one epoch: `pages` dirty pages (each a fault and a
// re-protection under uffd-sync) and a scan of `scan_us`. Both trackers are
// modelled; the caller marks an unavailable one -1.
UffdCosts model_uffd_costs(const Measurements& m, double scan_us, double pages);
struct UffdPick {
  TrackerKind kind = TrackerKind::kCompare;  // kCompare: neither is available
  double guest_us = -1;  // the guest time of the cheaper one, before the pause rule
  bool for_the_pause = false;
};
// The rule above between uffd and uffd-sync: the cheaper guest time (uffd on
// a tie), or uffd-sync for its pause. Pure; choose_tracker() decides with it.
UffdPick pick_uffd_tracker(const UffdCosts& c);

struct TrackerDecision {
  TrackerKind kind = TrackerKind::kCompare;  // any but kAuto
  // Modelled guest time per epoch (µs) of each tracker, -1 if unavailable.
  double uffd_us = -1, uffd_sync_us = -1, compare_us = -1;
  // Of that, the pause's part (µs), -1 if unavailable.
  double uffd_pause_us = -1, uffd_sync_pause_us = -1;
  // auto took uffd-sync for its shorter pause, though uffd was cheaper.
  bool for_the_pause = false;
  // One log line: the choice, the numbers and why.
  std::string explanation;

  // The ROMULUS_TRACKER value the guest must be started with (GuestSpec::tracker).
  const char* guest_tracker() const;
};

// The decision rule above. Errors: an explicit request the kernel cannot do
// (unsupported, with the reason and what to use instead); a zero arena.
Result<TrackerDecision> choose_tracker(TrackerKind requested, const ArenaFacts& arena,
                                       const Measurements& m);

// Measures in this process, on small memfd mappings of its own: the fault
// costs, the scan and compare costs (scaled per GiB) and the copy cost. Takes
// a few milliseconds; never fails (what cannot be done is marked unavailable).
Measurements measure_tracker_costs();

// The tracker of the decision, for a guest started with d.guest_tracker() that
// has attached. uffd-sync takes over a copy of the guest's userfaultfd,
// uffd-hybrid both of them (and the measurements it was decided on, m, for
// its fault cost).
Result<std::unique_ptr<DirtyTracker>> make_tracker(const TrackerDecision& d,
                                                   const GuestProcess& guest,
                                                   const uint8_t* arena_mapping, size_t arena_bytes,
                                                   const Measurements& m = {});

}  // namespace romulus::checkpoint
