// DirtyTracker: which arena pages the guest wrote since the last look.
//
// Three implementations:
//  - uffd (make_uffd_tracker): the guest armed userfaultfd async write-protect
//    over its arena in attach(); collect() runs the PAGEMAP_SCAN ioctl on
//    /proc/PID/pagemap, which returns the written pages and write-protects them
//    again atomically. Needs Linux 6.7+. Cost ~ number of dirty pages plus a page
//    table walk; the guest pays one minor fault (~12 us) on the first write to a
//    page per epoch.
//  - uffd-sync (make_uffd_sync_tracker, uffd_sync_tracker.h): synchronous
//    write-protect; a supervisor thread logs each first write per page and lifts
//    its protection; collect() re-protects the logged pages only. Cost ~ number
//    of dirty pages, nothing per arena page; the guest pays a round trip to the
//    supervisor (~7 us) on the first write to a page per epoch, except on pages
//    written every epoch, which stay unprotected and are always reported.
//  - compare (make_compare_tracker): a shadow copy of the arena; collect()
//    compares arena and shadow page by page (SIMD), reports and refreshes the pages
//    that differ. Works on any kernel; cost ~ reading arena + shadow every collect.
//    Its pages are stable until the next collect(), so the engine sends them from
//    the shadow without a second copy.
//    Note that reading never-touched memfd pages makes the kernel allocate them.
//
// A tracker belongs to one thread at a time (the epoch engine). PFN = page index
// within the arena (offset / 4096).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace romulus::checkpoint {

class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;
  virtual std::string_view name() const = 0;  // "uffd" / "uffd-sync" / "compare"
  // Appends to pfns, in increasing order, every page written since the previous
  // collect() (the first call reports writes since the tracker was created), and
  // re-arms tracking. Works with the guest stopped (checkpoints) and running
  // (pre-copy rounds); a write racing with collect() is reported by this call or
  // the next one. A tracker may also report pages that were not written (never
  // fewer): sending an unchanged page is always correct.
  virtual Status collect(std::vector<uint64_t>& pfns) = 0;
  // The same, called only with the guest stopped; re-arming may still be under
  // way when it returns, and finish_rearm() waits for it. The engine calls
  // finish_rearm() after copying the pages and before resuming the guest, so a
  // tracker can re-arm while the pages are copied (uffd-sync does). Default:
  // collect(), and nothing to wait for.
  virtual Status collect_stopped(std::vector<uint64_t>& pfns) { return collect(pfns); }
  virtual Status finish_rearm() { return Status::ok(); }
  // Where to read the contents of a page just reported by collect(). uffd: the live
  // arena (the supervisor's mapping). compare: its shadow copy, which holds exactly
  // the bytes the comparison saw (so what is sent is what is compared next time).
  virtual const uint8_t* page_source(uint64_t pfn) const = 0;
  // Whether the page_source() bytes of the pages the last collect() reported stay
  // exactly as that collect() left them until the next collect(), whatever the
  // guest writes meanwhile. compare: yes (only collect() writes its shadow). uffd:
  // no (page_source() is the live arena, which the guest writes as soon as it
  // runs). When yes, the epoch engine encodes straight from page_source() after
  // the guest resumes, instead of copying the pages to staging while it is
  // paused; it never calls collect() again before that encoding has finished.
  // Constant for the life of a tracker.
  virtual bool pages_stable_until_next_collect() const = 0;

  // Write-protect faults the guest has taken since the tracker was created:
  // uffd, one per page a collect() reported (its first write in the epoch);
  // uffd-sync, those its handler resolved (sticky pages take none); compare,
  // none. The engine counts their cost in the stopped-fraction budget.
  virtual uint64_t write_faults() const { return 0; }
  // What one of those faults costs the guest (µs), when the tracker knows it
  // better than the engine's EngineOptions::guest_fault_us (a tracker that
  // switches between modes at run time); nullopt: use that.
  virtual std::optional<double> write_fault_us() const { return std::nullopt; }

  // Copy-before-write (docs/design.md, "Copying after resume"). A tracker that
  // resolves write faults itself (uffd-sync) can let the engine copy part of a
  // checkpoint after the guest resumes: the pages that stay write-protected
  // when it runs again, whose first write the tracker holds until the page is
  // copied. The default tracker cannot, and none of these is called for it.
  //
  // The pages of the last collect_stopped() that will be write-protected once
  // finish_rearm() returns (sorted; a subset of what it reported). Empty: copy
  // everything in the pause.
  virtual std::span<const uint64_t> protected_after_resume() const { return {}; }
  // With the guest stopped, after collect_stopped() and before finish_rearm():
  // from now on, a write to page pfns[i] (a sorted subset of
  // protected_after_resume()) is held until the page has been copied to
  // dst[i]; the tracker may copy it itself (on the guest's fault) or let
  // finish_copy_before_write() do it. The spans must stay valid until
  // finish_copy_before_write() returns.
  virtual void begin_copy_before_write(std::span<const uint64_t> pfns,
                                       std::span<uint8_t* const> dst) {
    (void)pfns;
    (void)dst;
  }
  // After resume (and after a failed pause too, so that it always ends):
  // copies every page of begin_copy_before_write() the guest has not written
  // yet, waits for copies in flight, and ends copy-before-write. Returns how
  // many pages were copied on a guest's fault, before its write.
  virtual uint64_t finish_copy_before_write() { return 0; }
};

// guest: the guest's pid; guest_arena_addr: the arena's address in the guest (from
// the control page); arena_mapping: the supervisor's own mapping of the same memfd.
// Creation re-arms tracking: writes before it are not reported.
Result<std::unique_ptr<DirtyTracker>> make_uffd_tracker(pid_t guest, uint64_t guest_arena_addr,
                                                        const uint8_t* arena_mapping,
                                                        size_t arena_bytes);

// The shadow is initialised from the arena at creation (a copy of the whole
// arena), or, with `baseline` false, left zero: creation is then instant and the
// first collect() reports every page that is not zero. That suits a caller whose
// first collect() only resets tracking, as the engine's initial_sync() does, and
// which must start fast (a VM's takeover: the copy of a large arena would delay
// the failover by seconds where page faults are dear).
Result<std::unique_ptr<DirtyTracker>> make_compare_tracker(const uint8_t* arena_mapping,
                                                           size_t arena_bytes,
                                                           bool baseline = true);

// Can this kernel track with uffd async write-protect + PAGEMAP_SCAN? Tries it in
// this process on a small memfd mapping. OK, or unsupported with the reason.
Status probe_uffd_wp_async();

}  // namespace romulus::checkpoint
