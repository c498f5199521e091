#include "checkpoint/epoch_engine.h"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <malloc.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "protocol/device_state_codec.h"
#include "protocol/page_compare.h"
#include "protocol/wire_format.h"

namespace romulus::checkpoint {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::kPageSize;

int64_t micros(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

// An initial sync that has run this long logs its rounds and its end: a short
// one (a small arena) stays quiet, a long one shows its progress.
constexpr std::chrono::seconds kLogSyncAfter{1};
// Pages per encoder slice at the least: below this, threads cost more than they save.
constexpr size_t kMinPagesPerSlice = 64;
// A checkpoint whose bytes fit in this is handed to the transport in one
// buffer (begin, body, end): one wake-up of the sender and one write, on
// each side of the link, instead of three (docs/performance.md, "CPU per
// checkpoint"). Copying this much costs less than one thread hand-off.
constexpr size_t kCoalesceBytes = 64 * 1024;

}  // namespace

EpochEngine::EpochEngine(PauseControl& guest, DirtyTracker& tracker, uint64_t page_count,
                         CheckpointTransport* transport, StatsRecorder& stats,
                         EngineOptions options)
    : guest_(guest),
      tracker_(tracker),
      page_count_(page_count),
      transport_(transport),
      stats_(stats),
      options_(std::move(options)),
      stable_pages_(tracker.pages_stable_until_next_collect()),
      batch_pages_(std::max<size_t>(1, options_.staging_bytes / kPageSize)),
      cache_(options_.cache_bytes),
      pool_(options_.encoder_threads),
      interval_us_(options_.interval.count()),
      commit_(static_cast<uint8_t>(options_.commit)),
      min_gap_us_(options_.min_gap.count()),
      max_stopped_fraction_(options_.max_stopped_fraction),
      trigger_(policy()),
      codec_(static_cast<uint8_t>(options_.encode.codec)),
      next_epoch_(options_.first_epoch),
      buffers_(std::make_shared<BufferPool>(2 * static_cast<size_t>(pool_.threads()) + 2)) {
  if (!stable_pages_) staging_.emplace(options_.staging_bytes);
  if (transport_ != nullptr) transport_->set_buffer_pool(buffers_);
}

void EpochEngine::set_transport(CheckpointTransport* transport, uint64_t min_next_epoch) {
  transport_ = transport;
  if (transport_ != nullptr) transport_->set_buffer_pool(buffers_);
  format_b_ = false;
  coalescing_ = false;
  coalesce_ = protocol::Bytes();
  if (next_epoch_.load() < min_next_epoch) next_epoch_.store(min_next_epoch);
}

Status EpochEngine::encode_and_send(std::span<const uint64_t> pfns,
                                    std::span<const uint8_t* const> pages, bool format_b,
                                    EpochRecord* rec) {
  const size_t n = pfns.size();
  if (n == 0) return Status::ok();
  const size_t slices =
      std::max<size_t>(1, std::min<size_t>(pool_.threads(), n / kMinPagesPerSlice));
  slice_out_.resize(slices);
  slice_stats_.assign(slices, protocol::EncodeStats{});
  protocol::EncodeOptions opts = options_.encode;
  opts.codec = static_cast<protocol::CodecId>(codec_.load());
  auto range = [&](size_t i) {
    return std::pair<size_t, size_t>{i * n / slices, (i + 1) * n / slices};
  };
  pool_.run(slices, [&](size_t i) {
    auto [begin, end] = range(i);
    // Room for the worst case up front: growing by doubling would copy and
    // fault the buffer several times per epoch. From the pool: a buffer freed
    // after sending would be unmapped, and mapped and faulted in again.
    slice_out_[i] = buffers_->take((end - begin) * (protocol::kPageSize + 64) + 4096);
    const auto sub = pfns.subspan(begin, end - begin);
    const auto sub_pages = pages.subspan(begin, end - begin);
    if (format_b) {
      protocol::encode_body_format_b(sub, sub_pages, cache_, opts, slice_out_[i], &slice_stats_[i]);
    } else {
      protocol::encode_body_format_a(sub, sub_pages, slice_out_[i], &slice_stats_[i]);
    }
  });
  for (size_t i = 0; i < slices; ++i) {
    auto [begin, end] = range(i);
    framer_.add_body(slice_out_[i], static_cast<uint32_t>(end - begin));
    if (rec != nullptr) rec->wire_bytes += slice_out_[i].size();
    ROMULUS_RETURN_IF_ERROR(emit(std::move(slice_out_[i])));
    slice_out_[i] = protocol::Bytes();
  }
  return Status::ok();
}

Status EpochEngine::emit(protocol::Bytes bytes) {
  if (coalescing_ && coalesce_.size() + bytes.size() <= kCoalesceBytes) {
    coalesce_.insert(coalesce_.end(), bytes.begin(), bytes.end());
    buffers_->give(std::move(bytes));
    return Status::ok();
  }
  ROMULUS_RETURN_IF_ERROR(emit_held());
  return transport_->send(std::move(bytes));
}

Status EpochEngine::emit_held() {
  if (!coalescing_) return Status::ok();
  coalescing_ = false;
  return transport_->send(std::move(coalesce_));
}

Status EpochEngine::encode_and_send_staged(bool format_b, EpochRecord* rec) {
  batch_srcs_.clear();
  for (size_t i = 0; i < staging_->size(); ++i) batch_srcs_.push_back(staging_->page(i));
  Status st = encode_and_send(staging_->pfns(), batch_srcs_, format_b, rec);
  staging_->clear();
  return st;
}

Status EpochEngine::stage(std::span<const uint64_t> pfns, bool format_b, bool skip_zero,
                          EpochRecord* rec) {
  staging_->clear();
  for (const uint64_t pfn : pfns) {
    const uint8_t* src = tracker_.page_source(pfn);
    if (skip_zero && protocol::is_zero_page(src)) continue;
    if (!staging_->add(pfn, src)) {
      // Staging is full: send what it holds, then go on.
      if (rec != nullptr) rec->sent_while_paused = true;
      ROMULUS_RETURN_IF_ERROR(encode_and_send_staged(format_b, rec));
      staging_->add(pfn, src);
    }
  }
  return Status::ok();
}

Status EpochEngine::stage_paused(EpochRecord* rec) {
  const std::span<const uint64_t> protect = tracker_.protected_after_resume();
  if (protect.size() < options_.copy_after_resume_min_pages ||
      dirty_.size() > staging_->capacity_pages()) {
    return stage(dirty_, true, false, rec);
  }
  // Every page gets its slot, in PFN order; those the tracker keeps protected
  // are filled after resume, the others (sticky pages) now.
  staging_->clear();
  later_pfns_.clear();
  later_slots_.clear();
  size_t j = 0;
  for (const uint64_t pfn : dirty_) {
    uint8_t* slot = staging_->reserve(pfn);  // the dirty set fits (checked above)
    while (j < protect.size() && protect[j] < pfn) ++j;
    if (j < protect.size() && protect[j] == pfn) {
      later_pfns_.push_back(pfn);
      later_slots_.push_back(slot);
    } else {
      std::memcpy(slot, tracker_.page_source(pfn), kPageSize);
    }
  }
  tracker_.begin_copy_before_write(later_pfns_, later_slots_);
  copying_after_resume_ = true;
  rec->copied_after_resume = later_pfns_.size();
  return Status::ok();
}

void EpochEngine::copy_after_resume(EpochRecord* rec) {
  if (!copying_after_resume_) return;
  copying_after_resume_ = false;
  if (on_resumed_before_copy) on_resumed_before_copy(rec->epoch, later_pfns_.size());
  const auto t0 = Clock::now();
  rec->copied_on_write = tracker_.finish_copy_before_write();
  rec->copy_after_resume_us = micros(Clock::now() - t0);
}

Status EpochEngine::send_from_tracker(std::span<const uint64_t> pfns, bool format_b, bool skip_zero,
                                      EpochRecord* rec) {
  // The tracker's pages stay as collect() left them until the next collect(),
  // which this thread makes only after this returns: reading them with the
  // guest running is reading the state at the collection.
  batch_pfns_.clear();
  batch_srcs_.clear();
  for (const uint64_t pfn : pfns) {
    const uint8_t* src = tracker_.page_source(pfn);
    if (skip_zero && protocol::is_zero_page(src)) continue;
    batch_pfns_.push_back(pfn);
    batch_srcs_.push_back(src);
    if (batch_pfns_.size() == batch_pages_) {
      ROMULUS_RETURN_IF_ERROR(encode_and_send(batch_pfns_, batch_srcs_, format_b, rec));
      batch_pfns_.clear();
      batch_srcs_.clear();
    }
  }
  return encode_and_send(batch_pfns_, batch_srcs_, format_b, rec);
}

Status EpochEngine::checkpoint(CheckpointTrigger why, bool guest_waiting) {
  if (!format_b_) return Status::invalid_argument("checkpoint before the initial sync");
  EpochRecord rec;
  rec.trigger = why;
  rec.guest_waiting = why == CheckpointTrigger::kOutput && guest_waiting;
  const auto t0 = Clock::now();
  rec.paused_at = t0;
  Status st = guest_.pause(options_.gate_timeout);
  if (st.code() == StatusCode::kTimeout) {
    trigger_.on_postponed(Clock::now());
    stats_.record_postponed();
    if (options_.log) options_.log(st.message());
    return Status::ok();
  }
  ROMULUS_RETURN_IF_ERROR(st.context("pausing the guest"));
  const auto t_stopped = Clock::now();

  // The guest is stopped: from here on, output it produces belongs to the
  // next epoch (output commit tags bytes with open_epoch() as it reads them).
  const uint64_t epoch = next_epoch_.load();
  next_epoch_.store(epoch + 1);
  rec.epoch = epoch;
  if (auto at = output_noted_at(epoch)) rec.output_held_at = *at;
  rec.interval_us = last_pause_start_ == Clock::time_point{} ? 0 : micros(t0 - last_pause_start_);
  last_pause_start_ = t0;

  // Everything until resume happens with the guest stopped; whatever fails,
  // the guest is resumed before the error goes up.
  Clock::time_point t_collected{}, t_copied{};
  auto paused_part = [&]() -> Status {
    dirty_.clear();
    ROMULUS_RETURN_IF_ERROR(tracker_.collect_stopped(dirty_).context("collecting dirty pages"));
    t_collected = Clock::now();
    if (on_paused) on_paused(epoch);
    protocol::Bytes begin = framer_.begin(epoch, protocol::kBeginConsistent);
    rec.wire_bytes += begin.size();
    // Held back: a small checkpoint goes out as one buffer (emit()).
    coalesce_ = buffers_->take(kCoalesceBytes);
    coalesce_.insert(coalesce_.end(), begin.begin(), begin.end());
    coalescing_ = true;
    if (auto devices = guest_.device_state()) {
      // A VM's devices, saved while it is stopped: in this checkpoint, under
      // its CRC, so that they commit with its RAM; encoded against the
      // previous checkpoint's of this stream (protocol/device_state_codec.h).
      const protocol::Bytes chunk =
          protocol::encode_device_state(protocol::encode_device_state_payload(
              *devices,
              has_last_devices_ ? std::optional<protocol::ByteSpan>(last_devices_) : std::nullopt));
      last_devices_.assign(devices->begin(), devices->end());
      has_last_devices_ = true;
      framer_.add_body(chunk, 0);
      rec.wire_bytes += chunk.size();
      device_chunks_.fetch_add(1, std::memory_order_relaxed);
      device_wire_bytes_.fetch_add(chunk.size(), std::memory_order_relaxed);
      coalesce_.insert(coalesce_.end(), chunk.begin(), chunk.end());
    }
    if (!stable_pages_) {
      // The tracker's pages are the live arena: copy them before the guest
      // runs (what does not fit is sent while still paused), or before it
      // writes them.
      ROMULUS_RETURN_IF_ERROR(stage_paused(&rec));
    }
    t_copied = Clock::now();
    return Status::ok();
  };
  Status paused_status = guest_or(paused_part());
  // Whatever happened, tracking is re-armed before the guest runs again.
  Status rearm_status = tracker_.finish_rearm();
  if (paused_status.is_ok()) paused_status = rearm_status.context("re-arming dirty tracking");
  Status resume_status = guest_.resume();
  const auto t_resumed = Clock::now();
  // Whatever happened, copy-before-write ends here (the tracker holds
  // pointers into staging until it does).
  copy_after_resume(&rec);
  ROMULUS_RETURN_IF_ERROR(paused_status);
  ROMULUS_RETURN_IF_ERROR(resume_status.context("resuming the guest"));
  // The faults the guest took since the last checkpoint cost it time too.
  const uint64_t faults = tracker_.write_faults();
  rec.write_faults = faults - std::min(faults, write_faults_);
  write_faults_ = faults;
  rec.fault_us = static_cast<int64_t>(static_cast<double>(rec.write_faults) *
                                      tracker_.write_fault_us().value_or(options_.guest_fault_us));
  trigger_.set_policy(policy());  // settings may have changed since run() last looked
  trigger_.on_checkpoint(t0, t_resumed, why, std::chrono::microseconds(rec.fault_us));

  rec.pause_us = micros(t_resumed - t0);
  rec.gate_wait_us = micros(t_stopped - t0);  // gate wait + SIGSTOP until stopped
  rec.collect_us = micros(t_collected - t_stopped);
  rec.copy_us = micros(t_copied - t_collected);
  rec.dirty_pages = dirty_.size();
  rec.raw_bytes = dirty_.size() * kPageSize;

  const auto t_encode = Clock::now();
  if (stable_pages_) {
    ROMULUS_RETURN_IF_ERROR(send_from_tracker(dirty_, true, false, &rec));
  } else {
    ROMULUS_RETURN_IF_ERROR(encode_and_send_staged(true, &rec));
  }
  protocol::Bytes end = framer_.end();
  rec.wire_bytes += end.size();
  ROMULUS_RETURN_IF_ERROR(emit(std::move(end)));
  ROMULUS_RETURN_IF_ERROR(emit_held());
  const auto t_queued = Clock::now();
  rec.encode_us = micros(t_queued - t_encode);
  transport_->end_of_checkpoint(epoch);
  rec.stretched = stretched_;
  stats_.record_epoch(rec);
  stats_.record_sent(epoch, t_queued, rec.output_held_at != Clock::time_point{});
  publish_cache_stats();
  return Status::ok();
}

void keep_checkpoint_buffers_in_heap() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest mmap threshold
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

Status EpochEngine::guest_or(Status st) {
  if (st.is_ok() || st.code() == StatusCode::kAborted) return st;
  if (auto exit = guest_.exited()) return Status::aborted(*exit);
  return st;
}

void EpochEngine::publish_cache_stats() {
  const auto c = cache_.stats();
  stats_.record_cache(c.lookups, c.hits, c.misses, c.evictions, c.overflows);
}

std::vector<uint64_t> EpochEngine::all_data_pfns() {
  std::vector<uint64_t> pfns;
  if (options_.arena_fd >= 0) {
    // Only ranges that hold data: holes read as zeros, and the backup's fresh
    // image is zeros already.
    off_t off = 0;
    const off_t size = static_cast<off_t>(page_count_ * kPageSize);
    bool ok = true;
    while (off < size) {
      const off_t data = lseek(options_.arena_fd, off, SEEK_DATA);
      if (data < 0) {
        ok = errno == ENXIO;  // no more data
        break;
      }
      off_t hole = lseek(options_.arena_fd, data, SEEK_HOLE);
      if (hole < 0) {
        ok = false;
        break;
      }
      hole = std::min(hole, size);
      for (uint64_t p = static_cast<uint64_t>(data) / kPageSize;
           p < (static_cast<uint64_t>(hole) + kPageSize - 1) / kPageSize; ++p) {
        pfns.push_back(p);
      }
      off = hole;
    }
    if (ok) return pfns;
    pfns.clear();
  }
  pfns.resize(page_count_);
  for (uint64_t p = 0; p < page_count_; ++p) pfns[p] = p;
  return pfns;
}

Status EpochEngine::send_round(uint64_t epoch, uint32_t flags, const std::vector<uint64_t>& pfns,
                               bool skip_zero) {
  protocol::Bytes begin = framer_.begin(epoch, flags);
  ROMULUS_RETURN_IF_ERROR(transport_->send(std::move(begin)));
  if (stable_pages_) {
    ROMULUS_RETURN_IF_ERROR(send_from_tracker(pfns, false, skip_zero, nullptr));
  } else {
    // The guest is running: staging takes a copy of each page before encoding.
    ROMULUS_RETURN_IF_ERROR(stage(pfns, false, skip_zero, nullptr));
    ROMULUS_RETURN_IF_ERROR(encode_and_send_staged(false, nullptr));
  }
  ROMULUS_RETURN_IF_ERROR(transport_->send(framer_.end()));
  transport_->end_of_checkpoint(epoch);
  return Status::ok();
}

Status EpochEngine::initial_sync() {
  const auto t_start = Clock::now();
  format_b_ = false;
  has_last_devices_ = false;  // a new stream: its first device state goes raw
  cache_.clear();
  // Everything written before this point is covered by round 0; collect() from
  // here on reports only what changes after it.
  dirty_.clear();
  ROMULUS_RETURN_IF_ERROR(
      guest_or(tracker_.collect(dirty_).context("resetting the dirty tracker")));

  // Round 0: every page that holds data, Format A, guest running.
  std::vector<uint64_t> pfns = all_data_pfns();
  uint64_t sent = pfns.size();
  uint64_t rounds = 1;
  uint64_t epoch = next_epoch_.fetch_add(1);
  ROMULUS_RETURN_IF_ERROR(
      send_round(epoch, protocol::kBeginFullSync, pfns, true).context("initial sync, round 0"));
  stats_.record_sync_progress(sent, page_count_, rounds, micros(Clock::now() - t_start));

  // Pre-copy rounds: resend what the guest dirtied while the last round went out.
  for (;;) {
    ROMULUS_RETURN_IF_ERROR(transport_->flush());
    dirty_.clear();
    ROMULUS_RETURN_IF_ERROR(guest_or(tracker_.collect(dirty_).context("pre-copy round")));
    const size_t dirty = dirty_.size();
    epoch = next_epoch_.fetch_add(1);
    ROMULUS_RETURN_IF_ERROR(
        send_round(epoch, 0, dirty_, false).context(fmt::format("pre-copy round {}", rounds)));
    sent += dirty;
    ++rounds;
    stats_.record_sync_progress(sent, page_count_, rounds, micros(Clock::now() - t_start));
    if (options_.log && Clock::now() - t_start > kLogSyncAfter) {
      options_.log(fmt::format("initial sync: round {} sent {} dirtied pages ({} pages in all)",
                               rounds - 1, dirty, sent));
    }
    if (dirty <= options_.precopy_stop_pages || rounds > options_.max_precopy_rounds) break;
  }

  ROMULUS_RETURN_IF_ERROR(transport_->send(protocol::encode_enable_compression()));
  format_b_ = true;
  ROMULUS_RETURN_IF_ERROR(transport_->flush());
  const auto t_synced = Clock::now();
  if (options_.log && t_synced - t_start > kLogSyncAfter) {
    options_.log(fmt::format("initial sync: {} pages in {} rounds, {:.1f} s", sent, rounds,
                             static_cast<double>(micros(t_synced - t_start)) / 1e6));
  }
  stats_.record_sync_progress(sent, page_count_, rounds, micros(t_synced - t_start));
  // The first paused checkpoint makes the backup's image a state of the guest.
  write_faults_ = tracker_.write_faults();  // the rounds' faults are the sync's, not a gap's
  return checkpoint(CheckpointTrigger::kSync);
}

CommitPolicy EpochEngine::policy() const {
  CommitPolicy p;
  p.mode = commit();
  p.interval = interval();
  p.min_gap = min_gap();
  p.max_stopped_fraction = max_stopped_fraction();
  return p;
}

void EpochEngine::note_output(uint64_t epoch) {
  uint64_t noted = output_epoch_.load(std::memory_order_relaxed);
  if (noted >= epoch) return;  // the common case: already noted in this epoch
  // Timed before it is published: a checkpoint that sees the epoch noted
  // finds its time (two threads racing here write times microseconds apart).
  OutputNoted& slot = output_noted_[epoch % kOutputNoted];
  slot.at_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  slot.epoch.store(epoch, std::memory_order_release);
  while (noted < epoch && !output_epoch_.compare_exchange_weak(noted, epoch)) {
  }
  if (commit() == CommitMode::kEager) wake();
}

std::optional<Clock::time_point> EpochEngine::output_noted_at(uint64_t epoch) const {
  if (output_epoch_.load() < epoch) return std::nullopt;
  const OutputNoted& slot = output_noted_[epoch % kOutputNoted];
  if (slot.epoch.load(std::memory_order_acquire) != epoch) return std::nullopt;
  return Clock::time_point(Clock::duration(slot.at_ns.load(std::memory_order_relaxed)));
}

void EpochEngine::wake() {
  // Under the mutex: run() checks its condition under it before sleeping, so
  // a change made before this call is never missed.
  std::lock_guard lock(wake_mu_);
  wake_cv_.notify_one();
}

Status EpochEngine::run(const std::atomic<bool>& stop) {
  // The polls below are tens of microseconds; the kernel's default timer
  // slack (50 us) would let each sleep run that much longer.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  trigger_.set_policy(policy());
  trigger_.start(last_pause_start_ == Clock::time_point{} ? Clock::now() : last_pause_start_);
  while (!stop.load()) {
    // Sleep until the trigger's time (recomputed on every wake: output may
    // have arrived, a setting changed). Heartbeats are the transport's job:
    // it sends them when its wire idles.
    CommitTrigger::Due due;
    GuestActivity guest = GuestActivity::kUnknown;
    auto activity_poll = std::chrono::microseconds(kActivityPollFirst);
    for (;;) {
      // The guest's state is read outside the lock (a few system calls), so
      // note_output() never waits for it.
      guest = commit() == CommitMode::kEager && output_held() ? guest_.activity()
                                                              : GuestActivity::kUnknown;
      std::unique_lock lock(wake_mu_);
      trigger_.set_policy(policy());
      const bool held = output_held();
      due = trigger_.next(held, guest);
      const auto now = Clock::now();
      if (stop.load() || now >= due.when) break;
      auto until = std::min<Clock::time_point>(due.when, now + kStopPoll);
      // Output waits for the gap of a guest that was runnable (or output came
      // after the look): look again soon, unless nobody can tell.
      if (guest != GuestActivity::kUnknown) activity_known_ = true;
      if (held && commit() == CommitMode::kEager && guest != GuestActivity::kWaiting &&
          activity_known_) {
        until = std::min<Clock::time_point>(until, now + activity_poll);
        activity_poll = std::min<std::chrono::microseconds>(2 * activity_poll, kActivityPollMax);
      }
      wake_cv_.wait_until(lock, until);
    }
    if (stop.load()) break;
    // The previous checkpoint must be sent (not acknowledged) first.
    ROMULUS_RETURN_IF_ERROR(guest_or(transport_->flush()));
    // Stretched: the previous checkpoint was still being written at the deadline.
    stretched_ =
        due.why == CheckpointTrigger::kTimer && Clock::now() > due.when + CommitTrigger::kLateness;
    ROMULUS_RETURN_IF_ERROR(checkpoint(due.why, guest == GuestActivity::kWaiting));
  }
  return Status::ok();
}

}  // namespace romulus::checkpoint
