#include "replica/replica_state.h"

#include <fmt/format.h>

#include <cstring>

#include "protocol/device_state_codec.h"
#include "protocol/wire_format.h"

namespace romulus::replica {

using protocol::kPageSize;

ReplicaState::ReplicaState(uint64_t page_count, bool vm) : page_count_(page_count), vm_(vm) {}

std::optional<common::SharedMemory> ReplicaState::take_committed() {
  abort_stream();
  auto image = std::move(committed_);
  committed_.reset();
  return image;
}

void ReplicaState::adopt_committed(common::SharedMemory image, uint64_t epoch) {
  abort_stream();
  committed_.emplace(std::move(image));
  committed_epoch_ = epoch;
  last_verified_epoch_ = epoch;
}

void ReplicaState::abort_stream() {
  // Nothing of an ended stream but the committed image outlives it: the next
  // stream's epochs need only exceed the committed epoch, which is all the
  // Reply tells the primary (pre-copy rounds of an abandoned sync are gone).
  last_verified_epoch_ = committed_epoch_;
  in_unit_ = false;
  slots_used_ = 0;
  slot_pfns_.clear();
  sync_.reset();
  unit_has_devices_ = false;
  stream_has_devices_ = false;
}

uint8_t* ReplicaState::target_page(uint64_t pfn) {
  auto& image = target_sync_ ? *sync_ : *committed_;
  return image.data() + pfn * kPageSize;
}

Status ReplicaState::on_begin(uint64_t epoch, uint32_t flags) {
  if (in_unit_) return Status::corrupt("checkpoint begins inside another");
  // Nothing from an unverified checkpoint outlives it: the epoch checked
  // here is the last *verified* one, updated only in on_end().
  if (epoch <= last_verified_epoch_ || epoch <= committed_epoch_) {
    return Status::corrupt(fmt::format("epoch {} does not advance (last verified {}, committed {})",
                                       epoch, last_verified_epoch_, committed_epoch_));
  }
  const bool consistent = (flags & protocol::kBeginConsistent) != 0;
  if ((flags & protocol::kBeginFullSync) != 0) {
    stream_has_devices_ = false;  // a new stream: its first device state is raw
    // A full sync lands on a fresh, zeroed image; the committed one stays
    // until the sync's first consistent checkpoint commits.
    auto image = common::SharedMemory::create("romulus-replica", page_count_ * kPageSize);
    if (!image.is_ok()) return image.status().context("creating the sync image");
    sync_.emplace(std::move(image).value());
  }
  if (!sync_.has_value() && !committed_.has_value()) {
    return Status::corrupt(fmt::format("epoch {}: checkpoint without a full sync first", epoch));
  }
  if (!consistent && !sync_.has_value()) {
    return Status::corrupt(fmt::format("epoch {}: pre-copy round outside a full sync", epoch));
  }
  unit_epoch_ = epoch;
  in_unit_ = true;
  target_sync_ = sync_.has_value();
  buffered_ = consistent;
  slots_used_ = 0;
  slot_pfns_.clear();
  unit_has_devices_ = false;
  return Status::ok();
}

Status ReplicaState::on_device_state(protocol::ByteSpan state) {
  if (!vm_) {
    return Status::invalid_argument(
        "the primary sends a virtual machine's device state, but this backup was not started "
        "with --vm: start it with --vm and the same QEMU command");
  }
  if (!in_unit_ || !buffered_)
    return Status::corrupt("device state outside a consistent checkpoint");
  auto decoded = protocol::decode_device_state_payload(
      state,
      stream_has_devices_ ? std::optional<protocol::ByteSpan>(committed_devices_) : std::nullopt);
  if (!decoded.is_ok()) return decoded.status();
  unit_devices_ = std::move(decoded).value();
  unit_has_devices_ = true;
  return Status::ok();
}

protocol::MutablePageView ReplicaState::page_for(uint64_t pfn, bool needs_current) {
  // The reader guarantees pfn < page_count and strictly increasing PFNs.
  if (!buffered_) return protocol::MutablePageView(target_page(pfn), kPageSize);
  if (slots_used_ == slots_capacity_) {
    const size_t capacity = std::max<size_t>(2 * slots_capacity_, 64);
    protocol::PageBuffer grown = protocol::allocate_pages(capacity);
    if (slots_used_ > 0) std::memcpy(grown.get(), slots_.get(), slots_used_ * kPageSize);
    slots_ = std::move(grown);
    slots_capacity_ = capacity;
  }
  uint8_t* slot = slots_.get() + slots_used_ * kPageSize;
  ++slots_used_;
  slot_pfns_.push_back(pfn);
  if (needs_current) std::memcpy(slot, target_page(pfn), kPageSize);
  return protocol::MutablePageView(slot, kPageSize);
}

Status ReplicaState::on_end(uint64_t epoch, uint32_t page_count) {
  if (!in_unit_ || epoch != unit_epoch_) return Status::corrupt("end without a matching begin");
  if (buffered_ && vm_ && !unit_has_devices_) {
    return Status::invalid_argument(
        fmt::format("checkpoint {} carries no device state, but this backup was started with "
                    "--vm: start the primary with --vm too",
                    epoch));
  }
  in_unit_ = false;
  last_verified_epoch_ = epoch;
  if (buffered_) {
    // Verified whole: now, and only now, it touches the image.
    const bool overwrites_committed = !target_sync_ && before_overwrite;
    for (size_t i = 0; i < slots_used_; ++i) {
      if (overwrites_committed) before_overwrite(slot_pfns_[i]);
      std::memcpy(target_page(slot_pfns_[i]), slots_.get() + i * kPageSize, kPageSize);
    }
    if (target_sync_ && committed_.has_value() && before_replace) before_replace();
    if (target_sync_) {
      committed_ = std::move(sync_);
      sync_.reset();
      session_id_ = pending_session_id_;
    }
    committed_epoch_ = epoch;
    if (unit_has_devices_) {
      committed_devices_.swap(unit_devices_);
      stream_has_devices_ = true;
    }
    unit_has_devices_ = false;
    ++checkpoints_committed_;
  } else {
    ++rounds_applied_;
  }
  pages_applied_ += page_count;
  slots_used_ = 0;
  slot_pfns_.clear();
  if (on_committed) on_committed(epoch, buffered_);
  return Status::ok();
}

}  // namespace romulus::replica
