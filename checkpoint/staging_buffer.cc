#include "checkpoint/staging_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace romulus::checkpoint {

StagingBuffer::StagingBuffer(size_t capacity_bytes)
    : capacity_pages_(std::max<size_t>(1, capacity_bytes / protocol::kPageSize)) {
  const size_t bytes = capacity_pages_ * protocol::kPageSize;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  pages_ = static_cast<uint8_t*>(p);
  pfns_.reserve(capacity_pages_);
  // The first page now: it tells whether this kernel has MADV_POPULATE_WRITE.
  if (madvise(pages_, protocol::kPageSize, MADV_POPULATE_WRITE) == 0) {
    prefault_ = std::thread([base = pages_, bytes] {
      // In 2 MiB steps: each call holds the process's mmap lock, and
      // whatever maps memory meanwhile (a new thread's stack) waits for it.
      constexpr size_t kStep = 2u << 20;
      for (size_t off = 0; off < bytes; off += kStep) {
        (void)madvise(base + off, std::min(kStep, bytes - off), MADV_POPULATE_WRITE);
      }
    });
    return;
  }
  munmap(pages_, bytes);
  p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1,
           0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  pages_ = static_cast<uint8_t*>(p);
}

StagingBuffer::~StagingBuffer() {
  if (prefault_.joinable()) prefault_.join();
  munmap(pages_, capacity_pages_ * protocol::kPageSize);
}

bool StagingBuffer::add(uint64_t pfn, const uint8_t* page) {
  if (full()) return false;
  std::memcpy(pages_ + pfns_.size() * protocol::kPageSize, page, protocol::kPageSize);
  pfns_.push_back(pfn);
  return true;
}

uint8_t* StagingBuffer::reserve(uint64_t pfn) {
  if (full()) return nullptr;
  uint8_t* slot = pages_ + pfns_.size() * protocol::kPageSize;
  pfns_.push_back(pfn);
  return slot;
}

}  // namespace romulus::checkpoint
