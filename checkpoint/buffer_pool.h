// BufferPool: checkpoint byte buffers kept, with their capacity, from one epoch
// to the next.
//
// The engine's encoder output for one slice is reserved for the worst case
// (every page whole): 10,000 pages are ~42 MB, above glibc's largest mmap
// threshold (32 MiB), so a buffer freed after sending would be unmapped and the
// next epoch's mapped afresh, each written page costing a page fault
// (docs/performance.md, "Engine buffers"). The engine takes its buffers from
// a pool; the transport gives each back once its bytes are written.
//
// Thread-safe: take() on the engine's threads, give() on the transport's.
// Shared ownership (std::shared_ptr) lets a transport outlive the engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "protocol/coding.h"

namespace romulus::checkpoint {

class BufferPool {
 public:
  // Keeps at most max_buffers buffers, each with at least min_keep_bytes of
  // capacity (smaller ones, e.g. a begin chunk, are simply freed).
  explicit BufferPool(size_t max_buffers = 8, size_t min_keep_bytes = 64 << 10)
      : max_buffers_(max_buffers), min_keep_bytes_(min_keep_bytes) {}

  // An empty buffer with capacity >= min_capacity: the pooled buffer with the
  // most capacity (grown if it is short), or a new one.
  protocol::Bytes take(size_t min_capacity);

  // Returns a buffer whose bytes are no longer needed.
  void give(protocol::Bytes buffer);

  struct Stats {
    uint64_t reused = 0;     // take() served from the pool with enough capacity
    uint64_t allocated = 0;  // take() that allocated (or grew a pooled buffer)
  };
  Stats stats() const;
  size_t pooled() const;

 private:
  const size_t max_buffers_;
  const size_t min_keep_bytes_;
  mutable std::mutex mu_;
  std::vector<protocol::Bytes> free_;
  Stats stats_;
};

}  // namespace romulus::checkpoint
