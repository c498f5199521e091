// DurableWriter: a thread that owns a DurableImage and writes checkpoints
// behind the caller, with group commit.
//
// Any thread submits checkpoints (and, after a full sync, whole bases); the
// call copies nothing more and returns at once. The writer thread takes
// everything queued, appends it, and covers the whole batch with one
// fdatasync: while one sync runs, the next batch gathers, so the syncs per
// second stay bounded by the disk however fast checkpoints come. After each
// durable batch it calls on_durable(epoch) with the newest durable epoch
// (callbacks come from the writer thread, in increasing epoch order). When the
// log wants compaction, the writer begins one and runs its fold on a thread of
// its own, so batches go on being appended and synced meanwhile; a base waits
// for a running fold to finish.
//
// The first error is final: on_error(status) is called once, and nothing
// submitted after it becomes durable (what was durable stays so; reopen the
// directory to go on). stop() (or the destructor) writes and syncs what is
// queued, then joins.
//
// submit_*() and the accessors are thread-safe; stop() is called by the owner,
// once, and no submit may follow it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "storage/durable_image.h"

namespace romulus::storage {

// A whole arena that stays unchanged as long as `data` is held: a copy
// (copy_of), or the caller's own memory with a deleter that tells it when the
// writer is done. It must be exactly the image at the base's epoch.
struct ArenaView {
  std::shared_ptr<const uint8_t> data;
  size_t bytes = 0;

  static ArenaView copy_of(const uint8_t* arena, size_t bytes);
};

class DurableWriter {
 public:
  using OnDurable = std::function<void(uint64_t durable_epoch)>;
  using OnError = std::function<void(Status)>;

  // Starts the thread. `image` must be open (and read, if the caller needs its
  // content: the writer only writes).
  DurableWriter(std::unique_ptr<DurableImage> image, OnDurable on_durable, OnError on_error);
  ~DurableWriter();
  DurableWriter(const DurableWriter&) = delete;
  DurableWriter& operator=(const DurableWriter&) = delete;

  // One checkpoint: pfns strictly increasing, pages.size() == pfns.size() * 4096.
  void submit_checkpoint(uint64_t epoch, std::vector<uint64_t> pfns, std::vector<uint8_t> pages);
  // A whole new image at `epoch` (after a full sync).
  void submit_base(uint64_t epoch, ArenaView arena);

  // Newest epoch submitted / made durable: for the lag in status and metrics.
  uint64_t submitted_epoch() const { return submitted_epoch_.load(std::memory_order_acquire); }
  uint64_t durable_epoch() const { return durable_epoch_.load(std::memory_order_acquire); }
  // Bytes of pages waiting for the writer (bases included).
  uint64_t queued_bytes() const { return queued_bytes_.load(std::memory_order_relaxed); }
  // How far the disk is behind (`--durable async`): epochs submitted and not
  // yet durable, and how long ago the oldest of them was submitted (zero when
  // none is waiting).
  struct Lag {
    uint64_t epochs = 0;
    std::chrono::nanoseconds age{0};
  };
  Lag lag(std::chrono::steady_clock::time_point now) const;
  // The first error, or OK.
  Status error() const;
  // The image's counters as of the end of the last batch.
  DurableImage::Stats stats() const;

  // Writes and syncs everything queued, waits for a running fold, joins the
  // threads and closes the image (the directory may be opened again).
  // Idempotent.
  void stop();

 private:
  struct Item {
    uint64_t epoch = 0;
    bool is_base = false;
    std::vector<uint64_t> pfns;
    std::vector<uint8_t> pages;
    ArenaView arena;
    uint64_t bytes() const { return is_base ? arena.bytes : pages.size(); }
  };

  void run();
  void write_batch(std::deque<Item>& batch);
  void enqueue(Item item);
  void start_compaction();
  // Waits for the running fold (if any) and makes it the base.
  void finish_compaction();
  // Publishes `epoch` as durable and calls on_durable.
  void made_durable(uint64_t epoch);
  void fail(Status st);

  std::unique_ptr<DurableImage> image_;  // the writer thread's only
  const OnDurable on_durable_;
  const OnError on_error_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Item> queue_;     // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  Status error_;               // guarded by mu_
  DurableImage::Stats stats_;  // guarded by mu_
  // Submitted and not yet durable, oldest first: (epoch, when submitted). mu_.
  std::deque<std::pair<uint64_t, std::chrono::steady_clock::time_point>> pending_;
  std::atomic<uint64_t> submitted_epoch_{0};
  std::atomic<uint64_t> durable_epoch_{0};
  std::atomic<uint64_t> queued_bytes_{0};
  std::unique_ptr<DurableImage::Compaction> compaction_;  // the writer thread's
  std::thread compaction_thread_;                         // runs compaction_->run()
  bool compaction_done_ = false;                          // guarded by mu_
  std::thread thread_;
};

}  // namespace romulus::storage
