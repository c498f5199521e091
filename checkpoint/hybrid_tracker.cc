#include "checkpoint/hybrid_tracker.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>
#include <utility>

#include "checkpoint/uffd_sync_tracker.h"
#include "checkpoint/uffd_tracker.h"

namespace romulus::checkpoint {

namespace {
constexpr uint64_t kPage = 4096;
}  // namespace

HybridTracker::HybridTracker(Guest g, const uint8_t* arena, size_t bytes, const Measurements& m,
                             HybridTuning tuning)
    : guest_(g), arena_(arena), bytes_(bytes), m_(m), tuning_(tuning), fault_us_(m.sync_fault_us) {}

Result<std::unique_ptr<HybridTracker>> HybridTracker::create(Guest g, const uint8_t* arena_mapping,
                                                             size_t arena_bytes,
                                                             const Measurements& m,
                                                             HybridTuning tuning) {
  std::unique_ptr<HybridTracker> t(new HybridTracker(g, arena_mapping, arena_bytes, m, tuning));
  if (g.async_uffd < 0 || g.sync_uffd < 0) {
    return Status::invalid_argument("hybrid tracker: both userfaultfds are needed");
  }
  if (tuning.chunk_pages == 0 || tuning.hot_pauses == 0 || tuning.cold_pauses == 0) {
    return Status::invalid_argument("hybrid tracker: chunk size and streaks must be positive");
  }
  // The scanner first: its creation scans the whole arena, still all on the
  // asynchronous userfaultfd (the guest armed it so).
  ROMULUS_ASSIGN_OR_RETURN(t->scan_,
                           UffdTracker::create(g.pid, g.arena_addr, arena_mapping, arena_bytes));
  // The synchronous tracker's handler next, so that faults on the moved range
  // are resolved at once.
  const int fd = dup(g.sync_uffd);
  if (fd < 0) return Status::from_errno("hybrid tracker: dup of the synchronous uffd", errno);
  ROMULUS_ASSIGN_OR_RETURN(t->sync_,
                           UffdSyncTracker::create(fd, g.arena_addr, arena_mapping, arena_bytes));
  t->sync_->enable_chunks(tuning.chunk_pages);
  const uint64_t pages = arena_bytes / kPage;
  const uint64_t chunks = (pages + tuning.chunk_pages - 1) / tuning.chunk_pages;
  t->async_.assign(chunks, 0);
  t->streak_.assign(chunks, 0);
  ROMULUS_RETURN_IF_ERROR(t->sync_->take_range(0, pages, g.async_uffd)
                              .context("hybrid tracker: restart with --tracker uffd or "
                                       "uffd-sync to keep the arena on one userfaultfd"));
  return t;
}

HybridTracker::~HybridTracker() {
  sync_.reset();  // stops its handler and lifts the protections it holds
  scan_.reset();
  if (guest_.async_uffd >= 0) close(guest_.async_uffd);
  if (guest_.sync_uffd >= 0) close(guest_.sync_uffd);
}

uint64_t HybridTracker::chunk_end(uint64_t c) const {
  return std::min<uint64_t>((c + 1) * tuning_.chunk_pages, bytes_ / kPage);
}

uint64_t HybridTracker::write_faults() const {
  return (scan_ ? scan_->write_faults() : 0) + (sync_ ? sync_->write_faults() : 0);
}

std::span<const uint64_t> HybridTracker::protected_after_resume() const {
  return moved_ ? std::span<const uint64_t>() : sync_->protected_after_resume();
}

void HybridTracker::begin_copy_before_write(std::span<const uint64_t> pfns,
                                            std::span<uint8_t* const> dst) {
  if (!moved_) sync_->begin_copy_before_write(pfns, dst);
}

uint64_t HybridTracker::finish_copy_before_write() {
  return moved_ ? 0 : sync_->finish_copy_before_write();
}

Status HybridTracker::finish_rearm() { return sync_->finish_rearm(); }

Status HybridTracker::scan_async(std::vector<uint64_t>& pfns) {
  for (uint64_t c = 0; c < chunks();) {
    if (!async_[c]) {
      ++c;
      continue;
    }
    uint64_t e = c;
    while (e < chunks() && async_[e]) ++e;
    const uint64_t first = c * tuning_.chunk_pages;
    ROMULUS_RETURN_IF_ERROR(scan_->collect_range(first, chunk_end(e - 1) - first, pfns));
    c = e;
  }
  return Status::ok();
}

Status HybridTracker::collect_both(std::vector<uint64_t>& pfns, bool stopped) {
  async_pfns_.clear();
  sync_pfns_.clear();
  ROMULUS_RETURN_IF_ERROR(scan_async(async_pfns_));
  ROMULUS_RETURN_IF_ERROR(stopped ? sync_->collect_stopped(sync_pfns_)
                                  : sync_->collect(sync_pfns_));
  // Each sorted, and from disjoint chunks.
  const size_t before = pfns.size();
  std::merge(async_pfns_.begin(), async_pfns_.end(), sync_pfns_.begin(), sync_pfns_.end(),
             std::back_inserter(pfns));
  pfns.erase(std::unique(pfns.begin() + static_cast<std::ptrdiff_t>(before), pfns.end()),
             pfns.end());
  return Status::ok();
}

Status HybridTracker::collect(std::vector<uint64_t>& pfns) {
  ROMULUS_RETURN_IF_ERROR(broken_);
  return collect_both(pfns, false);
}

Status HybridTracker::collect_stopped(std::vector<uint64_t>& pfns) {
  ROMULUS_RETURN_IF_ERROR(broken_);
  moved_ = false;
  ROMULUS_RETURN_IF_ERROR(collect_both(pfns, true));
  // The faults since the last pause, each at its userfaultfd's cost.
  const uint64_t async_faults = scan_->write_faults(), sync_faults = sync_->write_faults();
  const double a = static_cast<double>(async_faults - async_faults_seen_);
  const double s = static_cast<double>(sync_faults - sync_faults_seen_);
  async_faults_seen_ = async_faults;
  sync_faults_seen_ = sync_faults;
  if (a + s > 0) fault_us_ = (a * m_.async_fault_us + s * m_.sync_fault_us) / (a + s);
  // A move that failed half-way leaves chunks whose userfaultfd is unknown:
  // every later collect fails with it, and the engine ends the protection.
  if (Status st = move_chunks(); !st.is_ok()) {
    broken_ = st;
    return st;
  }
  return Status::ok();
}

Status HybridTracker::move_chunks() {
  // Which chunks were busy in this pause: written (asynchronous chunks), or
  // faulted on (synchronous ones). Sticky pages, reported every pause
  // without a fault, cost uffd-sync nothing and do not count: a chunk whose
  // only hot pages went sticky stays where it is cheapest.
  std::vector<uint8_t>& reported = reported_;
  reported.assign(chunks(), 0);  // no allocation after the first pause
  for (uint64_t pfn : async_pfns_) reported[pfn / tuning_.chunk_pages] = 1;
  sync_->last_logged(logged_);
  for (uint64_t pfn : logged_) reported[pfn / tuning_.chunk_pages] = 1;
  // Streaks, and the chunks whose streak says move.
  std::vector<uint8_t>& move = move_;
  move.assign(chunks(), 0);
  uint64_t budget = tuning_.max_moved_pages;
  bool any = false;
  for (uint64_t c = 0; c < chunks(); ++c) {
    const bool hot = reported[c] != 0;
    // Asynchronous chunks count clean pauses, synchronous ones busy pauses.
    if (hot == (async_[c] == 0)) {
      ++streak_[c];
    } else {
      streak_[c] = 0;
    }
    const uint64_t due = async_[c] ? tuning_.cold_pauses : tuning_.hot_pauses;
    const uint64_t size = chunk_end(c) - c * tuning_.chunk_pages;
    if (streak_[c] >= due && size <= budget) {
      move[c] = 1;
      budget -= size;
      any = true;
    }
  }
  for (uint64_t c : requested_) {
    if (c < chunks()) move[c] = 1;
    any = any || c < chunks();
  }
  requested_.clear();
  if (!any) return Status::ok();
  // The pause's re-protection done, and no copy-before-write in it: the
  // pages just reported are copied in this pause, from the arena.
  ROMULUS_RETURN_IF_ERROR(sync_->finish_rearm());
  moved_ = true;
  // Runs of chunks going the same way, one move each.
  for (uint64_t c = 0; c < chunks();) {
    if (!move[c]) {
      ++c;
      continue;
    }
    const uint8_t to_async = async_[c] ? 0 : 1;
    uint64_t e = c;
    while (e < chunks() && move[e] && async_[e] != to_async) ++e;
    const uint64_t first = c * tuning_.chunk_pages;
    const uint64_t pages = chunk_end(e - 1) - first;
    ROMULUS_RETURN_IF_ERROR(to_async ? sync_->give_range(first, pages, guest_.async_uffd)
                                     : sync_->take_range(first, pages, guest_.async_uffd));
    for (uint64_t k = c; k < e; ++k) {
      async_[k] = to_async;
      streak_[k] = 0;
    }
    moves_.fetch_add(e - c, std::memory_order_relaxed);
    c = e;
  }
  async_chunks_.store(static_cast<uint64_t>(std::count(async_.begin(), async_.end(), 1)),
                      std::memory_order_relaxed);
  return Status::ok();
}

}  // namespace romulus::checkpoint
