// UffdTracker: dirty pages from userfaultfd async write-protect, read and re-armed
// with the PAGEMAP_SCAN ioctl on /proc/<guest>/pagemap (see dirty_tracker.h).
//
// The guest armed the tracking itself in romulus::guest::attach(); this side only
// scans. Owned and called by one thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "checkpoint/dirty_tracker.h"
#include "guest/linux_abi.h"

namespace romulus::checkpoint {

class UffdTracker final : public DirtyTracker {
 public:
  static Result<std::unique_ptr<UffdTracker>> create(pid_t guest, uint64_t guest_arena_addr,
                                                     const uint8_t* arena_mapping,
                                                     size_t arena_bytes);
  ~UffdTracker() override;

  std::string_view name() const override { return "uffd"; }
  Status collect(std::vector<uint64_t>& pfns) override;
  // collect() over pages [first_pfn, first_pfn + pages) only, which must all be
  // under the asynchronous write-protect (the hybrid tracker scans its
  // asynchronous chunks with it).
  Status collect_range(uint64_t first_pfn, uint64_t pages, std::vector<uint64_t>& pfns);
  const uint8_t* page_source(uint64_t pfn) const override { return arena_ + pfn * 4096; }
  // The live arena: the engine must copy the pages while the guest is stopped.
  bool pages_stable_until_next_collect() const override { return false; }

  // PAGEMAP_SCAN calls made so far (statistics).
  uint64_t scans() const { return scans_; }
  // One fault per page reported: the guest's first write to it in the epoch.
  uint64_t write_faults() const override { return reported_; }

 private:
  UffdTracker(int pagemap_fd, pid_t guest, uint64_t addr, const uint8_t* arena, size_t bytes);

  int pagemap_fd_;
  pid_t guest_;
  uint64_t guest_addr_;
  const uint8_t* arena_;
  size_t bytes_;
  std::vector<page_region> regions_;  // ioctl output buffer, bounded
  uint64_t scans_ = 0;
  uint64_t reported_ = 0;  // pages reported by collect() since creation
};

}  // namespace romulus::checkpoint
