// CheckpointTransport: where the epoch engine's bytes go.
//
// The engine produces the byte stream of docs/protocol.md (checkpoints,
// ENABLE_COMPRESSION, heartbeats) and hands it over in order. The transport
// owns delivery: the TCP sender to a backup, the black hole of
// `--backup null`, or an in-process receiver in tests. The engine knows no
// sockets; the transport knows no pages.
//
// Threading: send()/flush()/end_of_checkpoint() are called from the engine
// thread only. Implementations deliver on their own threads and must make
// these calls safe against that.
//
// Buffers: once a buffer's bytes are written (or dropped), an implementation
// hands it to recycle(), which gives it back to the engine's BufferPool if one
// was set (set_buffer_pool()), so the next epoch reuses its memory.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "checkpoint/buffer_pool.h"
#include "protocol/coding.h"
#include "common/status.h"

namespace romulus::checkpoint {

class CheckpointTransport {
 public:
  virtual ~CheckpointTransport() = default;

  // Queues bytes for sending, after everything queued before. May block while
  // the transport holds more than its limit (back-pressure). An error means
  // the stream is broken: nothing more can be sent on it, and a new stream
  // must start with a full sync.
  virtual Status send(protocol::Bytes bytes) = 0;

  // Blocks until every byte queued so far has been written out (or the stream
  // broke, which is returned).
  virtual Status flush() = 0;

  // Says that all bytes of checkpoint `epoch` have been queued (the tail
  // included), so the transport can note when the last of them is written.
  virtual void end_of_checkpoint(uint64_t epoch) = 0;

  // Where written buffers go back to (nullptr: they are freed). Any thread.
  void set_buffer_pool(std::shared_ptr<BufferPool> pool) {
    std::lock_guard lock(pool_mu_);
    pool_ = std::move(pool);
  }

 protected:
  // Gives a buffer whose bytes are written, or will never be, back to the pool.
  // Any thread.
  void recycle(protocol::Bytes bytes) {
    std::shared_ptr<BufferPool> pool;
    {
      std::lock_guard lock(pool_mu_);
      pool = pool_;
    }
    if (pool) pool->give(std::move(bytes));
  }

 private:
  std::mutex pool_mu_;
  std::shared_ptr<BufferPool> pool_;
};

// Drops everything: `--backup null`, for measuring the overhead of
// checkpointing without a backup (like `xl remus -b`). Counts bytes.
class NullTransport final : public CheckpointTransport {
 public:
  Status send(protocol::Bytes bytes) override {
    bytes_ += bytes.size();
    recycle(std::move(bytes));
    return Status::ok();
  }
  Status flush() override { return Status::ok(); }
  void end_of_checkpoint(uint64_t epoch) override { last_epoch_ = epoch; }
  uint64_t bytes() const { return bytes_; }
  uint64_t last_epoch() const { return last_epoch_; }

 private:
  uint64_t bytes_ = 0;
  uint64_t last_epoch_ = 0;
};

}  // namespace romulus::checkpoint
