// HybridTracker (`--tracker uffd-hybrid`): each chunk of the arena on the
// userfaultfd that suits it, so that neither tracker's cost is paid where it
// does not pay off.
//
// uffd (asynchronous write-protect) costs a scan of every page it covers at
// every pause, and nothing more than a kernel-resolved fault per page written.
// uffd-sync costs nothing for memory that is not written, and a round trip
// through the supervisor for each first write of a page in an epoch. So hot
// chunks (written pause after pause) belong on the asynchronous userfaultfd,
// whose scan is short when only they are scanned, and cold chunks (idle, or
// written now and then) on the synchronous one, where they cost nothing.
//
// How: the guest was started "uffd-switchable" (guest/control_page.h): it
// armed asynchronous write-protect over its arena on one userfaultfd and
// created a second, synchronous one registered over nothing; the supervisor
// holds copies of both (pidfd_getfd). The hybrid starts by moving the whole arena to the
// synchronous one, then at each pause, after both trackers have collected
// (PAGEMAP_SCAN over the asynchronous chunks only, the synchronous tracker's
// log and sticky pages for the rest):
//  - a synchronous chunk with first-write faults in hot_pauses pauses in a
//    row is moved to the asynchronous userfaultfd. Sticky pages (written
//    every pause, so uffd-sync leaves them writable and reports them without
//    a fault) do not count: a page written pause after pause faults twice and
//    goes sticky, so hot_pauses is 3, and a chunk whose hot pages are a few
//    sticky ones stays synchronous, where it costs a copy per page and no
//    scan (a scan of a 2 MiB chunk per pause cost more than that: 100 hot
//    pages one per chunk of an idle 8 GiB arena paused 0.35 ms against
//    0.06 ms, bench/pause_bench). Chunks whose writes move from page to page
//    fault every pause and go asynchronous;
//  - an asynchronous chunk with nothing written for cold_pauses pauses in a
//    row is moved back;
// at most max_moved_pages pages per pause, so a pause that moves stays short.
// A move (linux_abi::move_write_protect: unregister the range from one
// userfaultfd, which lifts its protection and wakes a writer waiting on it;
// register and write-protect it on the other) is done with the guest stopped,
// after the collects: what was written before it was just reported, and every write
// after it faults on the new userfaultfd. The pause that moves copies its
// pages in the pause (copy-before-write is skipped for it).
//
// Threads: one thread (the epoch engine), like every tracker; name() and the
// statistics from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/tracker_choice.h"

namespace romulus::checkpoint {

class UffdTracker;
class UffdSyncTracker;

struct HybridTuning {
  uint64_t chunk_pages = 512;        // 2 MiB: a few thousand ranges at most for 8 GiB
  uint64_t hot_pauses = 3;           // faulted on in this many pauses in a row: asynchronous
  uint64_t cold_pauses = 64;         // clean for this many pauses in a row: synchronous
  uint64_t max_moved_pages = 16384;  // 64 MiB per pause
};

class HybridTracker final : public DirtyTracker {
 public:
  struct Guest {
    pid_t pid = -1;
    uint64_t arena_addr = 0;  // the arena's address in the guest
    int async_uffd = -1;      // taken over: closed by the tracker, also on error
    int sync_uffd = -1;       // the same
  };
  // Takes both userfaultfds of g (closed by the tracker, also on error). The
  // whole arena moves to the synchronous one at once, while the guest may be
  // running: writes made during the move are not reported, as with any
  // tracker's creation.
  static Result<std::unique_ptr<HybridTracker>> create(Guest g, const uint8_t* arena_mapping,
                                                       size_t arena_bytes,
                                                       const Measurements& m = {},
                                                       HybridTuning tuning = {});
  ~HybridTracker() override;

  std::string_view name() const override { return "uffd-hybrid"; }
  Status collect(std::vector<uint64_t>& pfns) override;
  Status collect_stopped(std::vector<uint64_t>& pfns) override;
  Status finish_rearm() override;
  const uint8_t* page_source(uint64_t pfn) const override { return arena_ + pfn * 4096; }
  bool pages_stable_until_next_collect() const override { return false; }
  uint64_t write_faults() const override;
  // A fault's cost depends on its chunk's userfaultfd: the mean over the
  // faults before the last pause, each at its own measured cost, for the
  // engine's stopped-fraction budget.
  std::optional<double> write_fault_us() const override { return fault_us_; }
  std::span<const uint64_t> protected_after_resume() const override;
  void begin_copy_before_write(std::span<const uint64_t> pfns,
                               std::span<uint8_t* const> dst) override;
  uint64_t finish_copy_before_write() override;

  // Statistics (any thread): chunks on the asynchronous userfaultfd now, and
  // chunk moves so far (either way).
  uint64_t async_chunks() const { return async_chunks_.load(std::memory_order_relaxed); }
  uint64_t chunk_moves() const { return moves_.load(std::memory_order_relaxed); }
  uint64_t chunks() const { return async_.size(); }
  // Tests: move chunk c to the other userfaultfd at the next
  // collect_stopped(), whatever its streak.
  void request_move(uint64_t c) { requested_.push_back(c); }

 private:
  HybridTracker(Guest g, const uint8_t* arena, size_t bytes, const Measurements& m,
                HybridTuning tuning);
  // PAGEMAP_SCAN over every run of asynchronous chunks.
  Status scan_async(std::vector<uint64_t>& pfns);
  // Both collects, merged into pfns in order.
  Status collect_both(std::vector<uint64_t>& pfns, bool stopped);
  // The pause's moves, from what the collects reported (async_pfns_, sync_pfns_).
  Status move_chunks();
  uint64_t chunk_end(uint64_t c) const;  // one past its last page

  Guest guest_;
  const uint8_t* arena_;
  size_t bytes_;
  Measurements m_;
  HybridTuning tuning_;
  std::unique_ptr<UffdTracker> scan_;
  std::unique_ptr<UffdSyncTracker> sync_;
  // Per chunk: on the asynchronous userfaultfd; pauses in a row with pages
  // reported (synchronous chunks) or with none (asynchronous ones).
  std::vector<uint8_t> async_;
  std::vector<uint64_t> streak_;
  std::vector<uint64_t> async_pfns_, sync_pfns_;           // this pause's reports
  std::vector<uint64_t> requested_;                        // request_move()
  std::vector<uint8_t> reported_, move_;                   // move_chunks()'s, per chunk, kept
  std::vector<uint64_t> logged_;                           // move_chunks()'s, kept for its capacity
  bool moved_ = false;                                     // in this pause: copy everything in it
  Status broken_;                                          // a failed move (see collect_stopped)
  uint64_t async_faults_seen_ = 0, sync_faults_seen_ = 0;  // at the last pause
  double fault_us_ = 0;                                    // write_fault_us()
  std::atomic<uint64_t> async_chunks_{0};
  std::atomic<uint64_t> moves_{0};
};

}  // namespace romulus::checkpoint
