// StagingBuffer: where dirty pages are copied while the guest is paused.
//
// A fixed-capacity array of (PFN, page) slots, allocated and pre-faulted once
// (page faults cost ~12 µs each here, so a cold buffer would lengthen the
// pause). The pre-faulting runs on a thread of its own
// (MADV_POPULATE_WRITE, in 2 MiB steps so that threads being created do not
// wait on the mmap lock), so that constructing a buffer costs nothing on the
// way to a running, serving guest (a takeover waited ~20 ms for 64 MiB);
// the first pauses may fault in what it has not reached yet. Kernels before
// 5.14 pre-fault in the constructor (MAP_POPULATE).
//
// Pages are added in increasing PFN order; the epoch engine encodes them
// after the guest resumes. When a dirty set does not fit, the engine encodes
// and sends what is staged while the guest stays paused, clears the buffer
// and continues (as Xen Remus does).
//
// Not thread-safe: owned by the epoch engine; encoder threads only read it
// between add() and clear(). (The pre-fault thread changes no byte; the
// destructor waits for it.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <thread>
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
  // Takes the next slot for pfn without filling it (the caller copies the
  // page in before anyone reads it). nullptr when full.
  uint8_t* reserve(uint64_t pfn);

  std::span<const uint64_t> pfns() const { return pfns_; }
  const uint8_t* pages() const { return pages_; }
  const uint8_t* page(size_t i) const { return pages_ + i * protocol::kPageSize; }

  void clear() { pfns_.clear(); }

 private:
  size_t capacity_pages_;
  uint8_t* pages_;  // mmap'd, capacity_pages_ * kPageSize
  std::vector<uint64_t> pfns_;
  std::thread prefault_;
};

}  // namespace romulus::checkpoint
