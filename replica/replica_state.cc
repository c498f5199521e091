#include "replica/replica_state.h"

#include <fmt/format.h>

#include <cstring>

#include "protocol/wire_format.h"

namespace romulus::replica {

using protocol::kPageSize;

ReplicaState::ReplicaState(uint64_t page_count) : page_count_(page_count) {}

std::optional<common::SharedMemory> ReplicaState::take_committed() {
  abort_stream();
  auto image = std::move(committed_);
  committed_.reset();
  return image;
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
  return Status::ok();
}

protocol::MutablePageView ReplicaState::page_for(uint64_t pfn, bool needs_current) {
  // The reader guarantees pfn < page_count and strictly increasing PFNs.
  if (!buffered_) return protocol::MutablePageView(target_page(pfn), kPageSize);
  if (slots_.size() < (slots_used_ + 1) * kPageSize) {
    slots_.resize(std::max(slots_.size() * 2, (slots_used_ + 1) * kPageSize));
  }
  uint8_t* slot = slots_.data() + slots_used_ * kPageSize;
  ++slots_used_;
  slot_pfns_.push_back(pfn);
  if (needs_current) std::memcpy(slot, target_page(pfn), kPageSize);
  return protocol::MutablePageView(slot, kPageSize);
}

Status ReplicaState::on_end(uint64_t epoch, uint32_t page_count) {
  if (!in_unit_ || epoch != unit_epoch_) return Status::corrupt("end without a matching begin");
  in_unit_ = false;
  last_verified_epoch_ = epoch;
  if (buffered_) {
    // Verified whole: now, and only now, it touches the image.
    for (size_t i = 0; i < slots_used_; ++i) {
      std::memcpy(target_page(slot_pfns_[i]), slots_.data() + i * kPageSize, kPageSize);
    }
    if (target_sync_) {
      committed_ = std::move(sync_);
      sync_.reset();
      session_id_ = pending_session_id_;
    }
    committed_epoch_ = epoch;
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
