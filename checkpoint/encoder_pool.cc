#include "checkpoint/encoder_pool.h"

#include <algorithm>

namespace romulus::checkpoint {

EncoderPool::EncoderPool(unsigned threads) : threads_(std::max(1u, threads)) {
  for (unsigned i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

EncoderPool::~EncoderPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void EncoderPool::run(size_t slices, const std::function<void(size_t)>& job) {
  if (slices == 0) return;
  if (threads_ == 1 || slices == 1) {
    for (size_t i = 0; i < slices; ++i) job(i);
    return;
  }
  {
    std::lock_guard lock(mu_);
    job_ = &job;
    slices_ = slices;
    next_slice_ = 0;
    finished_ = 0;
    ++generation_;
  }
  work_cv_.notify_all();
  // The caller works too, taking slices like any worker.
  for (;;) {
    size_t mine;
    {
      std::lock_guard lock(mu_);
      if (next_slice_ >= slices_) break;
      mine = next_slice_++;
    }
    job(mine);
    std::lock_guard lock(mu_);
    ++finished_;
  }
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return finished_ == slices_; });
  job_ = nullptr;
}

void EncoderPool::worker_loop(unsigned /*index*/) {
  uint64_t seen = 0;
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || (generation_ != seen && job_ != nullptr); });
    if (stopping_) return;
    seen = generation_;
    while (job_ != nullptr && next_slice_ < slices_) {
      const size_t mine = next_slice_++;
      const auto* job = job_;
      lock.unlock();
      (*job)(mine);
      lock.lock();
      if (++finished_ == slices_) done_cv_.notify_all();
    }
  }
}

}  // namespace romulus::checkpoint
