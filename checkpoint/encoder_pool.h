// EncoderPool: runs the slices of one encoding job on N threads.
//
// The epoch engine splits the staged pages into contiguous PFN ranges, one per
// thread (like QEMU's multifd channels), encodes them in parallel and sends
// the results in slice order, so the stream stays in PFN order. With one
// thread the job runs inline on the caller.
//
// run() is called from one thread at a time (the engine's); the pool's own
// threads never call back into the caller except through the job.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace romulus::checkpoint {

class EncoderPool {
 public:
  explicit EncoderPool(unsigned threads);
  ~EncoderPool();
  EncoderPool(const EncoderPool&) = delete;
  EncoderPool& operator=(const EncoderPool&) = delete;

  unsigned threads() const { return threads_; }

  // Calls job(i) for i in [0, slices), spread over the pool (the caller runs
  // slice 0), and returns when all have finished.
  void run(size_t slices, const std::function<void(size_t)>& job);

 private:
  void worker_loop(unsigned index);

  unsigned threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  const std::function<void(size_t)>* job_ = nullptr;
  size_t slices_ = 0;
  size_t next_slice_ = 0;
  size_t finished_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

}  // namespace romulus::checkpoint
