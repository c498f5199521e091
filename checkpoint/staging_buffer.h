// StagingBuffer: where dirty pages are copied while the guest is paused.
//
// A fixed-capacity array of (PFN, page) slots, allocated and pre-faulted once
// (page faults cost ~12 µs each here, so a cold buffer would lengthen the
// pause). Pages are added in increasing PFN order; the epoch engine encodes
// them after the guest resumes. When a dirty set does not fit, the engine
// encodes and sends what is staged while the guest stays paused, clears the
// buffer and continues (as Xen Remus does).
//
// Not thread-safe: owned by the epoch engine; encoder threads only read it
// between add() and clear().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "protocol/page.h"

namespace romulus::checkpoint {

class StagingBuffer {
 public:
  // Capacity is rounded down to whole pages, and is at least one page.
  explicit StagingBuffer(size_t capacity_bytes);
  ~StagingBuffer();
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;

  size_t capacity_pages() const { return capacity_pages_; }
  size_t size() const { return pfns_.size(); }
  bool empty() const { return pfns_.empty(); }
  bool full() const { return pfns_.size() == capacity_pages_; }

  // Copies one page in. Returns false (and copies nothing) when full.
  bool add(uint64_t pfn, const uint8_t* page);

  std::span<const uint64_t> pfns() const { return pfns_; }
  const uint8_t* pages() const { return pages_; }
  const uint8_t* page(size_t i) const { return pages_ + i * protocol::kPageSize; }

  void clear() { pfns_.clear(); }

 private:
  size_t capacity_pages_;
  uint8_t* pages_;  // mmap'd, capacity_pages_ * kPageSize
  std::vector<uint64_t> pfns_;
};

}  // namespace romulus::checkpoint
