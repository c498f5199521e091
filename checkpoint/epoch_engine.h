// EpochEngine: the primary's checkpoint loop.
//
// One epoch: pause the guest (Update gate, then SIGSTOP) -> collect the dirty
// PFNs -> copy those pages to the staging buffer (or, when the tracker holds
// their first write until they are copied, after resume: copy-before-write,
// docs/design.md "Copying after resume") -> resume -> encode (RUN/SKIP
// against the page cache, on N encoder threads, PFN order kept) -> hand the
// chunks to the transport. If the dirty set overflows staging, what is staged
// is encoded and sent while the guest stays paused, then staging continues.
// The next pause never starts before the previous checkpoint is fully
// written (sent, not acknowledged: checkpoints pipeline); the interval
// stretches instead, and the statistics say so.
//
// When the next checkpoint starts is a CommitTrigger's decision
// (checkpoint/commit_trigger.h): every interval, or under `eager` as soon as
// output is held for the open epoch (note_output(), from the output proxy):
// at once if the guest is waiting for input (PauseControl::activity()), else a
// gap after the previous pause. Between checkpoints run() sleeps on a
// condition variable: woken by note_output(), wake() or its deadline, never
// polling faster than kStopPoll, except while output is held and the guest is
// runnable: then it looks at the guest again after kActivityPollFirst,
// doubling up to kActivityPollMax, to start the checkpoint as soon as the
// guest blocks. run() sets its thread's timer slack to 1 ns, so that these
// sleeps of tens of microseconds are not stretched by the default 50 us.
//
// A tracker whose pages are stable until its next collect() (compare: its
// shadow; DirtyTracker::pages_stable_until_next_collect) needs no staging: the
// pause ends right after collection, and the pages are encoded straight from
// page_source() after resume, in batches of at most the staging size (so
// encoder output per batch stays as bounded as with staging), never while
// paused. No staging buffer is allocated for such a tracker. Initial-sync
// rounds read such a tracker's pages the same way.
//
// A stream starts with a live initial sync (initial_sync()): round 0 sends
// every non-zero page in Format A while the guest runs, pre-copy rounds
// resend what it dirtied meanwhile until the dirty set is small, then
// ENABLE_COMPRESSION switches the backup to Format B and the first paused
// checkpoint makes its image consistent. No pause is longer than a normal
// epoch's for the same dirty rate.
//
// Threading: one engine thread calls initial_sync()/checkpoint()/run(); the
// setters (interval, codec) and stats may be used from any thread. The engine
// owns the staging buffer, page cache and encoder pool; it borrows the guest,
// tracker, transport and stats recorder, which must outlive it. It knows no
// sockets and no Asio.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/buffer_pool.h"
#include "checkpoint/commit_trigger.h"
#include "checkpoint/dirty_tracker.h"
#include "checkpoint/encoder_pool.h"
#include "checkpoint/engine_settings.h"
#include "checkpoint/staging_buffer.h"
#include "checkpoint/stats.h"
#include "checkpoint/transport.h"
#include "common/status.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/page_cache.h"

namespace romulus::checkpoint {

// What the engine needs of the guest: a consistent stop and a restart.
// GuestProcess implements it; see PauseControl in guest_process.h.
class PauseControl {
 public:
  virtual ~PauseControl() = default;
  // Waits (up to gate_timeout) for open Update sections to close, then stops
  // every thread. kTimeout: an Update stayed open; the guest keeps running
  // and the checkpoint is postponed. kAborted: the guest is gone.
  virtual Status pause(std::chrono::milliseconds gate_timeout) = 0;
  virtual Status resume() = 0;
  // A description if the guest has exited ("guest exited with status 0").
  virtual std::optional<std::string> exited() = 0;
  // Whether the running guest could use a CPU now (scheduler_probe.h); asked
  // between checkpoints while output is held under eager. kUnknown: the gap
  // always applies.
  virtual GuestActivity activity() { return GuestActivity::kUnknown; }
  // A virtual machine's device state, saved by the last pause() (valid until
  // resume()): the engine sends it inside the checkpoint (DEVICE_STATE).
  // nullopt for a process, whose whole state is its arena.
  virtual std::optional<protocol::ByteSpan> device_state() { return std::nullopt; }
};

// Process-wide: keeps freed checkpoint buffers (megabytes each epoch) in the
// heap instead of returning them to the kernel, which would make every epoch
// fault them in again (~15 µs a page on this machine; docs/performance.md).
// Call once at start-up from a program that runs an engine.
void keep_checkpoint_buffers_in_heap();

// The settings and what the node that runs the engine knows of this run.
struct EngineOptions : EngineSettings {
  // Live initial sync: stop pre-copy when a round dirtied at most this many
  // pages (what a normal checkpoint can carry), or after this many rounds.
  size_t precopy_stop_pages = 1024;
  unsigned max_precopy_rounds = 8;
  uint64_t first_epoch = 1;
  // Fd of the arena memfd, or -1. When given, round 0 of a full sync skips
  // holes (never-written ranges) with SEEK_DATA instead of reading them.
  int arena_fd = -1;
  // Progress lines during initial sync that takes longer than a second.
  std::function<void(const std::string&)> log;
  // Copy-before-write (DirtyTracker::begin_copy_before_write): when the
  // tracker can, and at least this many of a checkpoint's pages stay
  // write-protected after resume, those are copied after the guest resumes.
  // Below it, copying in the pause costs less than the hand-over (a page
  // copies in ~0.3-1 us). SIZE_MAX: always in the pause (benchmarks, tests).
  size_t copy_after_resume_min_pages = 64;
  // What one write-protect fault costs the guest, in µs (measured at start:
  // Measurements::async_fault_us or sync_fault_us for the tracker in use).
  // The faults taken between two pauses (DirtyTracker::write_faults()) times
  // this count against the stopped-fraction budget with the pause
  // (commit_trigger.h). 0: faults are not counted.
  double guest_fault_us = 0;
};

class EpochEngine {
 public:
  // transport may be null until set_transport(); it is borrowed.
  EpochEngine(PauseControl& guest, DirtyTracker& tracker, uint64_t page_count,
              CheckpointTransport* transport, StatsRecorder& stats, EngineOptions options);

  // Switches to a new stream (a new connection); the next call must be
  // initial_sync(). Epochs keep increasing across streams, and never fall
  // below min_next_epoch (the backup's committed epoch + 1).
  void set_transport(CheckpointTransport* transport, uint64_t min_next_epoch = 0);

  // Live full sync onto a fresh image at the backup; ends with the first
  // consistent (paused) checkpoint queued. Call at the start of each stream.
  Status initial_sync();

  // One epoch; `why` is recorded in its statistics. The caller has made
  // sure the previous checkpoint was written (run() flushes first). A
  // postponed pause (Update held open) is not an error: nothing is sent.
  // guest_waiting: it starts with no gap because the guest was waiting (stats only).
  Status checkpoint(CheckpointTrigger why = CheckpointTrigger::kTimer, bool guest_waiting = false);

  // Checkpoints when the CommitTrigger says so until stop is set or an error
  // occurs. A stop is seen within kStopPoll, at once after wake().
  Status run(const std::atomic<bool>& stop);
  static constexpr std::chrono::milliseconds kStopPoll{100};
  // While output is held and the guest runs: how soon to look again whether it
  // has blocked. A guest that has just written its reply is usually blocked
  // in its next read within tens of microseconds.
  static constexpr std::chrono::microseconds kActivityPollFirst{25};
  static constexpr std::chrono::microseconds kActivityPollMax{400};

  // Output is held for `epoch` (any thread; cheap: one atomic load when
  // already noted for that epoch). Under eager, wakes run() when that is the
  // open epoch. The first note of an epoch is timed: the checkpoint that
  // carries that epoch records it (EpochRecord::output_held_at), the start of
  // the output's path through the checkpoint.
  void note_output(uint64_t epoch);
  // Wakes run() to look at its stop flag and settings again (any thread).
  void wake();

  void set_interval(std::chrono::microseconds interval) {
    interval_us_ = interval.count();
    wake();
  }
  std::chrono::microseconds interval() const {
    return std::chrono::microseconds(interval_us_.load());
  }
  void set_commit(CommitMode mode) {
    commit_ = static_cast<uint8_t>(mode);
    wake();
  }
  CommitMode commit() const { return static_cast<CommitMode>(commit_.load()); }
  void set_min_gap(std::chrono::microseconds gap) {
    min_gap_us_ = gap.count();
    wake();
  }
  std::chrono::microseconds min_gap() const {
    return std::chrono::microseconds(min_gap_us_.load());
  }
  void set_max_stopped_fraction(double f) {
    max_stopped_fraction_ = f;
    wake();
  }
  double max_stopped_fraction() const { return max_stopped_fraction_.load(); }
  void set_codec(protocol::CodecId codec) { codec_ = static_cast<uint8_t>(codec); }
  protocol::CodecId codec() const { return static_cast<protocol::CodecId>(codec_.load()); }
  void set_cache_bytes(size_t bytes) { cache_.set_capacity(bytes); }

  // The epoch the next checkpoint will carry: output the guest produces now
  // belongs to it, and output commit releases it when this epoch is acked.
  // It advances while the guest is stopped, so bytes read after a pause are
  // never tagged with the epoch that pause captured.
  uint64_t open_epoch() const { return next_epoch_.load(); }
  // A VM's DEVICE_STATE chunks sent so far, and their bytes on the wire
  // (framing included, after the delta encoding). Any thread.
  struct DeviceStateSent {
    uint64_t chunks = 0, wire_bytes = 0;
  };
  DeviceStateSent device_state_sent() const {
    return {device_chunks_.load(std::memory_order_relaxed),
            device_wire_bytes_.load(std::memory_order_relaxed)};
  }
  // The epoch of the last checkpoint started.
  uint64_t last_epoch() const { return next_epoch_.load() - 1; }

  // Test hook: called with the guest stopped, after collection, with the epoch.
  std::function<void(uint64_t epoch)> on_paused;
  // Test hook: called with the guest running again, before the pages left
  // for after resume are copied (copy-before-write), with their count.
  std::function<void(uint64_t epoch, size_t pages)> on_resumed_before_copy;

 private:
  // Encodes pfns[i] with contents pages[i] (Format A or B) on the pool and
  // queues the result in PFN order.
  Status encode_and_send(std::span<const uint64_t> pfns, std::span<const uint8_t* const> pages,
                         bool format_b, EpochRecord* rec);
  // Queues bytes of the checkpoint being made: appended to the held buffer
  // while the checkpoint still fits in one (coalescing_), else the held
  // buffer and then these are sent.
  Status emit(protocol::Bytes bytes);
  // Sends the held buffer, if any, and stops coalescing this checkpoint.
  Status emit_held();
  // Encodes and queues the staged pages, then empties staging.
  Status encode_and_send_staged(bool format_b, EpochRecord* rec);
  // Live trackers only: copies the pages of pfns (skip_zero: all-zero pages
  // left out) into staging; whenever it fills, encodes and queues what it
  // holds first (counted in rec as sent while paused). The last batch stays
  // staged for encode_and_send_staged().
  Status stage(std::span<const uint64_t> pfns, bool format_b, bool skip_zero, EpochRecord* rec);
  // With the guest stopped, live trackers: stages dirty_, copying now only
  // the pages that stay writable after resume when the tracker can copy the
  // others before they are written (copy-before-write; the slots of those
  // are filled by copy_after_resume()). Else stage().
  Status stage_paused(EpochRecord* rec);
  // After resume: the pages stage_paused() left, copied (by the tracker on
  // the guest's first write to each, or here); recorded in rec.
  void copy_after_resume(EpochRecord* rec);
  // Stable trackers only: encodes and queues pfns (increasing) straight from
  // the tracker's page_source(), batch_pages_ at a time; skip_zero leaves out
  // all-zero pages.
  Status send_from_tracker(std::span<const uint64_t> pfns, bool format_b, bool skip_zero,
                           EpochRecord* rec);
  Status send_round(uint64_t epoch, uint32_t flags, const std::vector<uint64_t>& pfns,
                    bool skip_zero);
  void publish_cache_stats();
  // An error seen while the guest is gone is reported as the guest's exit.
  Status guest_or(Status st);
  std::vector<uint64_t> all_data_pfns();
  CommitPolicy policy() const;
  // Output is held for the epoch the next checkpoint will carry.
  bool output_held() const { return output_epoch_.load() >= next_epoch_.load(); }

  PauseControl& guest_;
  DirtyTracker& tracker_;
  uint64_t page_count_;
  CheckpointTransport* transport_;
  StatsRecorder& stats_;
  EngineOptions options_;
  const bool stable_pages_;               // tracker_.pages_stable_until_next_collect()
  const size_t batch_pages_;              // pages per encoding job: the staging capacity
  std::optional<StagingBuffer> staging_;  // only when !stable_pages_
  // stage_paused() -> copy_after_resume(): the pages left to copy and their slots.
  std::vector<uint64_t> later_pfns_;
  std::vector<uint8_t*> later_slots_;
  bool copying_after_resume_ = false;
  uint64_t write_faults_ = 0;  // tracker_.write_faults() at the last checkpoint
  protocol::PageCache cache_;
  EncoderPool pool_;
  protocol::CheckpointFramer framer_;
  std::atomic<int64_t> interval_us_;
  std::atomic<uint8_t> commit_;
  std::atomic<int64_t> min_gap_us_;
  std::atomic<double> max_stopped_fraction_;
  std::atomic<uint64_t> output_epoch_{0};  // highest epoch output was held for
  // When output was first held for an epoch, for the last few epochs (slot
  // epoch % kOutputNoted; the epoch is stored beside its time, so a slot
  // left from an older epoch is never read as this one's).
  struct OutputNoted {
    std::atomic<uint64_t> epoch{0};
    std::atomic<int64_t> at_ns{0};  // steady_clock, nanoseconds since its epoch
  };
  static constexpr size_t kOutputNoted = 4;
  OutputNoted output_noted_[kOutputNoted];
  // When output was first held for `epoch`, if it was (engine thread).
  std::optional<std::chrono::steady_clock::time_point> output_noted_at(uint64_t epoch) const;
  std::mutex wake_mu_;  // with wake_cv_: run()'s sleep
  std::condition_variable wake_cv_;
  CommitTrigger trigger_;  // engine thread only
  std::atomic<uint8_t> codec_;
  std::atomic<uint64_t> next_epoch_;
  bool format_b_ = false;
  bool stretched_ = false;
  // run(): the guest has told its activity at least once (PauseControl::activity()).
  bool activity_known_ = false;
  std::vector<uint64_t> dirty_;
  std::vector<uint64_t> batch_pfns_;        // send_from_tracker()'s current batch
  std::vector<const uint8_t*> batch_srcs_;  // where the pages being encoded are
  std::vector<protocol::Bytes> slice_out_;
  // Encoder output buffers, given back by the transport once written.
  std::shared_ptr<BufferPool> buffers_;
  std::vector<protocol::EncodeStats> slice_stats_;
  protocol::Bytes coalesce_;  // the checkpoint so far, while it is small (emit())
  bool coalescing_ = false;
  std::chrono::steady_clock::time_point last_pause_start_{};
  // A VM's device state sent last in this stream: the next is encoded against it.
  std::vector<uint8_t> last_devices_;
  bool has_last_devices_ = false;
  // DEVICE_STATE chunks sent, and their bytes on the wire (device_state_sent()).
  std::atomic<uint64_t> device_chunks_{0}, device_wire_bytes_{0};
};

}  // namespace romulus::checkpoint
