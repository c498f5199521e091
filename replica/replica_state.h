// ReplicaState: the backup's images and its atomic commit.
//
// The backup holds at most two images of the guest's arena, each a memfd the
// size of the arena:
//   - the *committed* image: exactly the state of some consistent checkpoint
//     the primary completed (epoch committed_epoch()), or none before the
//     first full sync completes;
//   - the *sync* image: a fresh, zeroed image that a full sync is filling.
//     Pre-copy rounds are applied to it directly (it is not a state of the
//     guest yet, so nothing is lost if they tear); the first consistent
//     checkpoint of the sync is buffered, applied, and then the sync image
//     replaces the committed one.
// Every consistent checkpoint is buffered whole while the reader decodes and
// verifies it (structure, page count, CRC32C); only after on_end() does it
// touch the image, so a checkpoint cut off at any byte, or corrupt, leaves the
// committed image untouched. abort_stream() discards what is in flight.
//
// Pure: no sockets, no clocks. Driven by one thread (the backup's event loop);
// not thread-safe. Activation must happen on that thread between calls, so an
// apply is never torn by it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "common/shared_memory.h"
#include "common/status.h"
#include "protocol/checkpoint_reader.h"
#include "protocol/page_buffer.h"

namespace romulus::replica {

class ReplicaState final : public protocol::CheckpointSink {
 public:
  // `vm`: the guest is a virtual machine, so every consistent checkpoint
  // must carry its device state (DEVICE_STATE), committed with its pages; a
  // process guest's checkpoints must carry none.
  explicit ReplicaState(uint64_t page_count, bool vm = false);

  uint64_t page_count() const { return page_count_; }
  // True once a full sync has completed with a consistent checkpoint.
  bool has_committed() const { return committed_.has_value(); }
  uint64_t committed_epoch() const { return committed_epoch_; }
  uint64_t session_id() const { return session_id_; }
  void set_session_id(uint64_t id) { pending_session_id_ = id; }
  // The committed image (requires has_committed()).
  common::SharedMemory& committed_image() { return *committed_; }
  // Gives the committed image away (activation); the state is empty after.
  std::optional<common::SharedMemory> take_committed();
  // A VM's device state committed with the image (empty for a process).
  const std::vector<uint8_t>& committed_device_state() const { return committed_devices_; }
  // Starts from an image read back from disk (--data-dir), committed at
  // `epoch` (> 0): as if a full sync had ended there. Only before any stream.
  void adopt_committed(common::SharedMemory image, uint64_t epoch);

  // Throws away a checkpoint in flight and an unfinished sync image: the
  // stream that carried them has ended or was rejected.
  void abort_stream();

  // Called after every verified unit (pre-copy round or checkpoint) has been
  // applied, with its epoch and whether it was a consistent checkpoint.
  std::function<void(uint64_t epoch, bool consistent)> on_committed;
  // Called before a checkpoint overwrites page `pfn` of the committed image,
  // and before a new full sync's image replaces the committed one whole: a
  // copy of the committed image in progress (replica/image_copy.h) keeps
  // what it needs. Empty: nobody copies.
  std::function<void(uint64_t pfn)> before_overwrite;
  std::function<void()> before_replace;

  // True between on_begin() and on_end() of a consistent checkpoint.
  bool in_consistent_unit() const { return in_unit_ && buffered_; }
  // True if on_end(epoch, ...) now ends the unit in flight (and so succeeds):
  // the caller may acknowledge a verified checkpoint before it is applied.
  bool ends_unit(uint64_t epoch) const { return in_unit_ && epoch == unit_epoch_; }
  // The consistent checkpoint in flight, verified but not yet applied (valid
  // until on_end()): its pages, in PFN order, and whether it is the one that
  // ends a full sync (it then replaces the whole image, not some pages).
  std::span<const uint64_t> unit_pfns() const { return slot_pfns_; }
  const uint8_t* unit_pages() const { return slots_.get(); }
  bool unit_ends_sync() const { return in_unit_ && buffered_ && target_sync_; }

  // Counters.
  uint64_t checkpoints_committed() const { return checkpoints_committed_; }
  uint64_t rounds_applied() const { return rounds_applied_; }
  uint64_t pages_applied() const { return pages_applied_; }

  // protocol::CheckpointSink
  Status on_begin(uint64_t epoch, uint32_t flags) override;
  protocol::MutablePageView page_for(uint64_t pfn, bool needs_current) override;
  Status on_device_state(protocol::ByteSpan state) override;
  Status on_end(uint64_t epoch, uint32_t page_count) override;

 private:
  uint8_t* target_page(uint64_t pfn);

  uint64_t page_count_;
  bool vm_ = false;
  std::optional<common::SharedMemory> committed_;
  std::vector<uint8_t> committed_devices_;  // a VM's, with committed_
  std::vector<uint8_t> unit_devices_;       // the consistent unit in flight's
  bool unit_has_devices_ = false;
  // committed_devices_ came in this stream: the next DEVICE_STATE may be a
  // delta against it (protocol/device_state_codec.h).
  bool stream_has_devices_ = false;
  std::optional<common::SharedMemory> sync_;
  uint64_t committed_epoch_ = 0;
  uint64_t session_id_ = 0, pending_session_id_ = 0;
  uint64_t last_verified_epoch_ = 0;

  // The unit in flight.
  bool in_unit_ = false;
  bool buffered_ = false;     // consistent checkpoint: pages go to slots first
  bool target_sync_ = false;  // applies to the sync image (else the committed)
  uint64_t unit_epoch_ = 0;
  std::vector<uint64_t> slot_pfns_;
  protocol::PageBuffer slots_;  // page-aligned: records decode into them
  size_t slots_capacity_ = 0;   // pages
  size_t slots_used_ = 0;

  uint64_t checkpoints_committed_ = 0, rounds_applied_ = 0, pages_applied_ = 0;
};

}  // namespace romulus::replica
