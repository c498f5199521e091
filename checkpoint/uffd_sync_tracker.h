// UffdSyncTracker: dirty pages from userfaultfd write-protect in *synchronous*
// mode, at a cost proportional to the pages written, not to the arena.
//
// The guest armed synchronous write-protect over its arena in attach()
// (ROMULUS_TRACKER=uffd-sync) and published the fd number on the control page;
// the supervisor takes its own copy of that userfaultfd (pidfd_getfd, see
// GuestProcess::take_guest_uffd) and hands it to this tracker, which owns it.
//
// A fault-handler thread owned by the tracker reads the write-protect faults:
// the first write to a protected page in an epoch blocks the writer until the
// handler has logged the page and lifted its protection (which wakes the
// writer). collect() takes the log and re-protects exactly the logged pages:
// no page-table walk over the arena, so a pause costs O(pages written) and an
// idle guest costs nothing. The price is paid by the guest: each first write
// per page per epoch is a round trip through this process (measured by
// measure_tracker_costs(); see docs/design.md).
//
// Sticky pages: a page logged in two consecutive epochs is likely written in
// every epoch (a counter, a hash bucket, the head of a log). Faulting on it
// each epoch costs the guest a round trip and the supervisor ~5 us of CPU, so
// such a page is promoted to *sticky*: left unprotected and reported by every
// collect() for the next 16 epochs, whether written or not (the engine copies
// it; the encoder sends an unchanged page as one SKIP). Then it is demoted:
// re-protected and reported once more; if still hot it faults and is promoted
// again after two epochs. At most 16,384 pages are sticky. Reporting a page
// that was not written is always safe; an unprotected page is never left
// unreported.
//
// Correctness: the handler logs and un-protects under the same mutex that
// collect() holds while it takes the log and re-protects, so a page is either
// logged in this epoch (and re-protected here) or logged, after this collect,
// in the next one. A writer is released only after its page is logged, so no
// write reaches a page that is unprotected but unlogged. A write whose fault
// was still queued when the guest stopped is simply retried after SIGCONT.
// Pages may be over-reported (rarely: a fault read just as its writer was
// stopped), never under-reported.
//
// Re-protection while the guest is stopped (collect_stopped) is handed to the
// handler thread when there are many pages, so it overlaps the engine's copy;
// finish_rearm() waits for it, and so do collect() and the destructor.
//
// Copy-before-write (DirtyTracker::begin_copy_before_write): the pages
// collect_stopped() re-protects need not be copied in the pause. Their first
// write after resume faults anyway; the handler then copies the page to the
// engine's slot before it lifts the protection, while the engine copies the
// others after resume. Each such page has a state (not copied, being copied,
// copied) that the handler and the engine claim with a compare-and-swap, so a
// page is copied once, and always while it is still protected: nobody lifts
// the protection of a page of the set before its copy is complete. Between
// collect_stopped() and begin_copy_before_write() (or finish_rearm(), when
// the engine copies everything in the pause) a fault on a page about to be
// re-protected is held back rather than resolved: two threads faulting on
// one page queue two messages, and the second, read after the plan, would
// otherwise lift the protection of a page nobody has copied yet.
//
// Chunks (the hybrid tracker, hybrid_tracker.h): after enable_chunks(), the
// userfaultfd holds only the chunks take_range() moved to it, and
// give_range() moves chunks away to another userfaultfd, forgetting what it
// logged there (the caller has just reported it). A fault read for a chunk
// given away is stale and dropped: unregistering the range woke its writer,
// whose write then faults on the other userfaultfd.
//
// Threads: collect() and the other DirtyTracker methods on one thread (the
// epoch engine); the handler thread is internal. The destructor stops the
// handler and lifts the protection of the whole arena, so a guest that
// outlives its tracker does not block forever on its next write.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "checkpoint/dirty_tracker.h"

namespace romulus::checkpoint {

class UffdSyncTracker final : public DirtyTracker {
 public:
  // uffd: the guest's synchronous write-protect userfaultfd (taken over: closed
  // by the tracker, also on error). The handler starts at once; pages written
  // before creation may be reported by the first collect().
  static Result<std::unique_ptr<UffdSyncTracker>> create(int uffd, uint64_t guest_arena_addr,
                                                         const uint8_t* arena_mapping,
                                                         size_t arena_bytes);
  ~UffdSyncTracker() override;

  std::string_view name() const override { return "uffd-sync"; }
  Status collect(std::vector<uint64_t>& pfns) override;
  // With many pages, the re-protection runs on the handler thread (idle while
  // the guest is stopped) while the engine copies the pages.
  Status collect_stopped(std::vector<uint64_t>& pfns) override;
  Status finish_rearm() override;
  const uint8_t* page_source(uint64_t pfn) const override { return arena_ + pfn * 4096; }
  bool pages_stable_until_next_collect() const override { return false; }
  std::span<const uint64_t> protected_after_resume() const override { return reprotect_; }
  void begin_copy_before_write(std::span<const uint64_t> pfns,
                               std::span<uint8_t* const> dst) override;
  uint64_t finish_copy_before_write() override;

  // Write-protect faults resolved so far (statistics; any thread).
  uint64_t faults() const { return faults_.load(std::memory_order_relaxed); }
  uint64_t write_faults() const override { return faults(); }
  // Pages sticky after the last collect (statistics; any thread).
  uint64_t sticky_pages() const { return sticky_count_.load(std::memory_order_relaxed); }
  // The pages the last collect took from the fault log, sorted: first writes
  // that faulted (not the sticky pages it reported without a fault).
  void last_logged(std::vector<uint64_t>& out);

  // From here on this userfaultfd holds chunks of `chunk_pages` pages, none
  // at first: the caller moves them here with take_range(). Call once, before
  // the first collect.
  void enable_chunks(uint64_t chunk_pages);
  // Moves pages [first_pfn, first_pfn + pages) (whole chunks; the last may
  // end with the arena) from userfaultfd `from` to this one, write-protecting
  // them all; or from this one to `to`, dropping what was logged or sticky
  // there. With the guest stopped, after collect_stopped() and
  // finish_rearm(), with no copy-before-write begun in this pause.
  Status take_range(uint64_t first_pfn, uint64_t pages, int from);
  Status give_range(uint64_t first_pfn, uint64_t pages, int to);

 private:
  UffdSyncTracker(int uffd, int stop_fd, int rearm_fd, uint64_t addr, const uint8_t* arena,
                  size_t bytes);
  void handle_faults();
  Status serve();  // the handler's loop; returns on stop or error
  // Takes the log and plans the epoch (mu_ held): report_ (everything to
  // report), reprotect_ (pages to protect again), the new sticky_ set.
  void plan_epoch();
  // Re-protects reprotect_ (mu_ held): one ioctl per run of pages at most
  // kMaxGapPages apart. Pages in the gaps are protected already (every page is
  // protected, logged or sticky), so covering them is harmless: a sticky page
  // protected this way is still reported every epoch, and its next write just
  // faults and is logged. Walking a few page-table entries is cheaper than
  // another ioctl (~4 ns each vs ~1 us).
  Status reprotect_planned();

  struct Sticky {
    uint64_t pfn;
    uint64_t until;  // demoted at the collect of this epoch
  };
  // UFFDIO_WRITEPROTECT over pages [pfn, pfn + count): protect, or lift and wake.
  Status set_protection(uint64_t pfn, uint64_t count, bool protect);
  // A write fault on pfn (mu_ held): copied first if copy-before-write holds
  // it, then logged and released; held back while the epoch's copies are
  // being planned (held_).
  Status resolve_fault(uint64_t pfn);
  // Resolves the faults held back while planning (mu_ held).
  Status release_held();
  // Whether this userfaultfd holds page pfn (mu_ held), and every page of
  // [first, last].
  bool owns(uint64_t pfn) const { return chunk_pages_ == 0 || owned_[pfn / chunk_pages_]; }
  bool owns_all(uint64_t first, uint64_t last) const;
  // take_range()/give_range(): checks, the move, and the new owner.
  Status move_range(uint64_t first_pfn, uint64_t pages, int from, int to, bool here);

  // Copy-before-write states.
  static constexpr uint8_t kNotCopied = 0, kCopying = 1, kCopied = 2;
  // Copies page cow_pfns_[i] unless someone has; returns once it is copied.
  // The caller owns the page's protection (it stays protected meanwhile).
  bool copy_once(size_t i);

  const int uffd_;
  const int stop_fd_;   // eventfd: the handler exits when it is readable
  const int rearm_fd_;  // eventfd: the handler re-protects reprotect_ when it is readable
  const uint64_t guest_addr_;
  const uint8_t* const arena_;
  const size_t bytes_;
  std::atomic<uint64_t> faults_{0};
  std::atomic<uint64_t> sticky_count_{0};

  std::mutex mu_;
  std::vector<uint64_t> logged_;  // guarded by mu_: pages un-protected since the last collect
  Status handler_error_;          // guarded by mu_: the handler's first failure
  // The epoch plan; guarded by mu_ (the handler re-protects reprotect_).
  uint64_t epoch_ = 0;                 // collects so far
  std::vector<uint64_t> taken_;        // this epoch's log, sorted
  std::vector<uint64_t> prev_logged_;  // the previous epoch's log, sorted
  std::vector<Sticky> sticky_;         // sorted by pfn
  std::vector<Sticky> kept_, promoted_;
  std::vector<uint64_t> reprotect_;  // sorted
  std::vector<uint64_t> report_;     // sorted
  bool rearm_in_flight_ = false;     // guarded by mu_
  // Copy-before-write; the vectors and flags guarded by mu_ (the engine reads
  // cow_pfns_/cow_dst_ without it between begin and finish, when only the
  // states change).
  bool planning_ = false;           // collect_stopped() .. begin or finish_rearm
  std::vector<uint64_t> held_;      // faults held back while planning
  bool cow_active_ = false;         // begin_copy_before_write() .. finish
  std::vector<uint64_t> cow_pfns_;  // sorted
  std::vector<uint8_t*> cow_dst_;
  std::unique_ptr<std::atomic<uint8_t>[]> cow_state_;
  size_t cow_capacity_ = 0;
  uint64_t cow_on_fault_ = 0;  // pages the handler copied this time
  Status rearm_status_;        // guarded by mu_
  // enable_chunks(): the chunk size, 0 for the whole arena; which chunks are
  // held here (guarded by mu_).
  uint64_t chunk_pages_ = 0;
  std::vector<uint8_t> owned_;
  std::condition_variable rearm_done_;
  std::thread handler_;
};

// The guest must have been started with tracker "uffd-sync".
Result<std::unique_ptr<DirtyTracker>> make_uffd_sync_tracker(int uffd, uint64_t guest_arena_addr,
                                                             const uint8_t* arena_mapping,
                                                             size_t arena_bytes);

}  // namespace romulus::checkpoint
