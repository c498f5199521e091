#include "storage/durable_writer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "protocol/page.h"

namespace romulus::storage {

ArenaView ArenaView::copy_of(const uint8_t* arena, size_t bytes) {
  std::shared_ptr<uint8_t[]> copy(new uint8_t[bytes]);
  std::memcpy(copy.get(), arena, bytes);
  return ArenaView{std::shared_ptr<const uint8_t>(copy, copy.get()), bytes};
}

DurableWriter::DurableWriter(std::unique_ptr<DurableImage> image, OnDurable on_durable,
                             OnError on_error)
    : image_(std::move(image)), on_durable_(std::move(on_durable)), on_error_(std::move(on_error)) {
  submitted_epoch_ = durable_epoch_ = image_->durable_epoch();
  stats_ = image_->stats();
  thread_ = std::thread([this] { run(); });
}

DurableWriter::~DurableWriter() { stop(); }

void DurableWriter::submit_checkpoint(uint64_t epoch, std::vector<uint64_t> pfns,
                                      std::vector<uint8_t> pages) {
  Item item;
  item.epoch = epoch;
  item.pfns = std::move(pfns);
  item.pages = std::move(pages);
  enqueue(std::move(item));
}

void DurableWriter::submit_base(uint64_t epoch, ArenaView arena) {
  Item item;
  item.epoch = epoch;
  item.is_base = true;
  item.arena = std::move(arena);
  enqueue(std::move(item));
}

void DurableWriter::enqueue(Item item) {
  const uint64_t epoch = item.epoch;
  queued_bytes_ += item.bytes();
  {
    std::lock_guard lock(mu_);
    pending_.emplace_back(epoch, std::chrono::steady_clock::now());
    queue_.push_back(std::move(item));
  }
  submitted_epoch_.store(epoch, std::memory_order_release);
  wake_.notify_one();
}

void DurableWriter::made_durable(uint64_t epoch) {
  {
    std::lock_guard lock(mu_);
    while (!pending_.empty() && pending_.front().first <= epoch) pending_.pop_front();
  }
  durable_epoch_.store(epoch, std::memory_order_release);
  if (on_durable_) on_durable_(epoch);
}

DurableWriter::Lag DurableWriter::lag(std::chrono::steady_clock::time_point now) const {
  std::lock_guard lock(mu_);
  Lag lag;
  if (pending_.empty()) return lag;
  lag.epochs = pending_.size();
  lag.age =
      std::max(std::chrono::nanoseconds(0),
               std::chrono::duration_cast<std::chrono::nanoseconds>(now - pending_.front().second));
  return lag;
}

Status DurableWriter::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

DurableImage::Stats DurableWriter::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void DurableWriter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  image_.reset();  // closes the directory (and releases its lock)
}

void DurableWriter::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || compaction_done_; });
    const bool folded = std::exchange(compaction_done_, false);
    std::deque<Item> batch;
    batch.swap(queue_);
    const bool last = stopping_ && batch.empty();
    lock.unlock();
    if (folded || last) finish_compaction();
    if (!batch.empty()) write_batch(batch);
    lock.lock();
    stats_ = image_->stats();
    if (last) return;
  }
}

void DurableWriter::fail(Status st) {
  {
    std::lock_guard lock(mu_);
    if (!error_.is_ok()) return;  // reported once
    error_ = st;
  }
  if (on_error_) on_error_(std::move(st));
}

void DurableWriter::start_compaction() {
  Result<std::unique_ptr<DurableImage::Compaction>> job = image_->begin_compaction();
  if (!job.is_ok()) return fail(job.status());
  if (*job == nullptr) return;
  compaction_ = std::move(job).value();
  compaction_thread_ = std::thread([this, job = compaction_.get()] {
    (void)job->run();  // finish_compaction() reports its error
    {
      std::lock_guard lock(mu_);
      compaction_done_ = true;
    }
    wake_.notify_one();
  });
}

void DurableWriter::finish_compaction() {
  if (compaction_ == nullptr) return;
  compaction_thread_.join();
  {
    std::lock_guard lock(mu_);
    compaction_done_ = false;
  }
  if (const Status st = image_->finish_compaction(std::move(compaction_)); !st.is_ok()) fail(st);
}

void DurableWriter::write_batch(std::deque<Item>& batch) {
  uint64_t batch_bytes = 0;
  for (const Item& item : batch) batch_bytes += item.bytes();
  // What is on disk leaves queued_bytes() before on_durable says so, so that
  // a caller that looks at the queue from its callback sees it shorter.
  uint64_t done_bytes = 0, appended_bytes = 0;
  auto written = [&](uint64_t bytes) {
    queued_bytes_ -= bytes;
    done_bytes += bytes;
  };
  const bool failed = !error().is_ok();
  bool unsynced = false;
  for (size_t i = 0; i < batch.size() && !failed; ++i) {
    Item& item = batch[i];
    Status st;
    if (item.is_base) {
      finish_compaction();  // a new base replaces what it folds
      // Appends before a base are covered by it (a newer whole image).
      const uint64_t bytes = item.bytes();
      st = image_->write_base(item.epoch, item.arena.data.get(), item.arena.bytes);
      item.arena = {};
      unsynced = false;
      if (st.is_ok()) {
        written(bytes + appended_bytes);  // the appends before it are covered by it
        appended_bytes = 0;
        made_durable(item.epoch);
      }
    } else {
      if (item.pages.size() != item.pfns.size() * protocol::kPageSize) {
        st = Status::invalid_argument(fmt::format("checkpoint {}: {} bytes for {} pages",
                                                  item.epoch, item.pages.size(), item.pfns.size()));
      } else {
        st = image_->append(item.epoch, item.pfns, item.pages.data());
        appended_bytes += item.bytes();
        unsynced = true;
      }
    }
    if (!st.is_ok()) {
      fail(st);
      break;
    }
  }
  if (unsynced && error().is_ok()) {
    if (const Status st = image_->sync(); !st.is_ok()) {
      fail(st);
    } else {
      written(appended_bytes);
      made_durable(image_->durable_epoch());
    }
  }
  if (error().is_ok() && compaction_ == nullptr && image_->wants_compaction()) {
    start_compaction();
  }
  queued_bytes_ -= batch_bytes - done_bytes;  // the rest (failed, or never written)
}

}  // namespace romulus::storage
