#include "checkpoint/buffer_pool.h"

#include <algorithm>

namespace romulus::checkpoint {

protocol::Bytes BufferPool::take(size_t min_capacity) {
  protocol::Bytes b;
  {
    std::lock_guard lock(mu_);
    if (!free_.empty()) {
      auto it = std::max_element(free_.begin(), free_.end(), [](const auto& x, const auto& y) {
        return x.capacity() < y.capacity();
      });
      b = std::move(*it);
      free_.erase(it);
    }
    if (b.capacity() >= min_capacity) {
      ++stats_.reused;
    } else {
      ++stats_.allocated;
    }
  }
  b.clear();
  b.reserve(min_capacity);
  return b;
}

void BufferPool::give(protocol::Bytes buffer) {
  if (buffer.capacity() < min_keep_bytes_) return;
  std::lock_guard lock(mu_);
  if (free_.size() < max_buffers_) free_.push_back(std::move(buffer));
}

BufferPool::Stats BufferPool::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

size_t BufferPool::pooled() const {
  std::lock_guard lock(mu_);
  return free_.size();
}

}  // namespace romulus::checkpoint
