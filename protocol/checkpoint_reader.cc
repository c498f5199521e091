#include "protocol/checkpoint_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "protocol/crc32c.h"
#include "protocol/lz4_stage.h"
#include "protocol/page_codec.h"
#include "protocol/wire_format.h"

namespace romulus::protocol {
namespace {

constexpr CodecId kKnownCodecs[] = {CodecId::kNone, CodecId::kRunSkip, CodecId::kXbzrle};

std::string chunk_name(int32_t type) {
  switch (type) {
    case kChunkEndOfBody:
      return "end of body";
    case XC_SAVE_ID_COMPRESSED_DATA:
      return "COMPRESSED_DATA";
    case XC_SAVE_ID_ENABLE_COMPRESSION:
      return "ENABLE_COMPRESSION";
    case kChunkCheckpointBegin:
      return "CHECKPOINT_BEGIN";
    case kChunkHeartbeat:
      return "HEARTBEAT";
    case kChunkGoodbye:
      return "GOODBYE";
    case kChunkDropped:
      return "DROPPED";
    case kChunkHandover:
      return "HANDOVER";
    case kChunkDeviceState:
      return "DEVICE_STATE";
    default:
      return type > 0 ? fmt::format("PFN array of {}", type) : fmt::format("chunk type {}", type);
  }
}

}  // namespace

CheckpointReader::CheckpointReader(uint64_t guest_page_count, CheckpointSink* sink)
    : CheckpointReader(guest_page_count, sink, kKnownCodecs) {}

CheckpointReader::CheckpointReader(uint64_t guest_page_count, CheckpointSink* sink,
                                   std::span<const CodecId> allowed_codecs)
    : guest_page_count_(guest_page_count), sink_(sink) {
  for (const CodecId c : allowed_codecs) {
    const auto wire = static_cast<uint8_t>(c);
    if (codec_from_wire(wire)) allowed_codecs_ |= 1u << wire;
  }
  expect(State::kType, 4);
}

Status CheckpointReader::corrupt(const std::string& message) const {
  if (in_checkpoint_) return Status::corrupt(fmt::format("checkpoint {}: {}", epoch_, message));
  return Status::corrupt(message);
}

void CheckpointReader::expect(State state, size_t n) {
  state_ = state;
  field_need_ = n;
  field_have_ = 0;
}

void CheckpointReader::consumed(const uint8_t* p, size_t n) {
  // Everything of a checkpoint but the tail's CRC field and heartbeats is
  // covered by the CRC. A chunk's type is added in on_type(), once it is known
  // not to be a heartbeat.
  if (in_checkpoint_ && state_ != State::kTailCrc && state_ != State::kType &&
      state_ != State::kHeartbeatField) {
    crc_ = crc32c_extend(crc_, ByteSpan(p, n));
  }
  bytes_consumed_ += n;
}

bool CheckpointReader::fill_field(ByteSpan& in) {
  const size_t n = std::min(field_need_ - field_have_, in.size());
  std::memcpy(field_.data() + field_have_, in.data(), n);
  consumed(in.data(), n);
  field_have_ += n;
  in = in.subspan(n);
  return field_have_ == field_need_;
}

Status CheckpointReader::feed(ByteSpan data) {
  if (!error_.is_ok()) return error_;
  while (!data.empty()) {
    Status s = step(data);
    if (!s.is_ok()) {
      error_ = std::move(s);
      state_ = State::kFailed;
      return error_;
    }
  }
  return Status::ok();
}

Status CheckpointReader::finish() const {
  if (!error_.is_ok()) return error_;
  if (state_ == State::kAfterGoodbye) return Status::ok();
  if (in_checkpoint_) {
    return Status::truncated(fmt::format("stream ended inside checkpoint {} ({} of its pages read)",
                                         epoch_, pages_decoded_));
  }
  if (state_ != State::kType || field_have_ != 0) {
    return Status::truncated("stream ended inside a chunk");
  }
  return Status::truncated("stream ended between checkpoints without GOODBYE");
}

Status CheckpointReader::step(ByteSpan& in) {
  switch (state_) {
    case State::kType:
      if (!fill_field(in)) return Status::ok();
      return on_type(static_cast<int32_t>(load_u32(field_.data())));

    case State::kBeginFields:
      if (!fill_field(in)) return Status::ok();
      return on_begin_fields();

    case State::kHeartbeatField:
      if (!fill_field(in)) return Status::ok();
      sink_->on_heartbeat(load_u64(field_.data()));
      expect(State::kType, 4);
      return Status::ok();

    case State::kPfn:
      if (!fill_field(in)) return Status::ok();
      return on_pfn(load_u64(field_.data()));

    case State::kRawPage: {
      const size_t n = std::min(kPageSize - raw_have_, in.size());
      std::memcpy(raw_page_ + raw_have_, in.data(), n);
      consumed(in.data(), n);
      raw_have_ += n;
      in = in.subspan(n);
      if (raw_have_ < kPageSize) return Status::ok();
      ++pages_decoded_;
      ++pending_head_;
      if (pending_pfns() > 0) return start_raw_page();
      pending_.clear();
      pending_head_ = 0;
      expect(State::kType, 4);
      return Status::ok();
    }

    case State::kCompressedLength:
      if (!fill_field(in)) return Status::ok();
      return on_compressed_length(load_u32(field_.data()));

    case State::kPayload: {
      // Grows with the bytes that actually arrive, so a length alone never
      // makes the reader allocate.
      const size_t n = std::min(payload_length_ - payload_.size(), in.size());
      payload_.insert(payload_.end(), in.begin(), in.begin() + static_cast<ptrdiff_t>(n));
      consumed(in.data(), n);
      in = in.subspan(n);
      if (payload_.size() < payload_length_) return Status::ok();
      return on_payload();
    }

    case State::kDeviceStateLength: {
      if (!fill_field(in)) return Status::ok();
      const uint32_t length = load_u32(field_.data());
      if (length > kMaxDeviceState) {
        return corrupt(
            fmt::format("DEVICE_STATE of {} bytes exceeds limit {}", length, kMaxDeviceState));
      }
      payload_.clear();
      payload_length_ = length;
      state_ = State::kDeviceState;
      if (length == 0) return on_device_state();
      return Status::ok();
    }

    case State::kDeviceState: {
      const size_t n = std::min(payload_length_ - payload_.size(), in.size());
      payload_.insert(payload_.end(), in.begin(), in.begin() + static_cast<ptrdiff_t>(n));
      consumed(in.data(), n);
      in = in.subspan(n);
      if (payload_.size() < payload_length_) return Status::ok();
      return on_device_state();
    }

    case State::kTailFields:
      if (!fill_field(in)) return Status::ok();
      tail_epoch_ = load_u64(field_.data());
      tail_pages_ = load_u32(field_.data() + 8);
      expect(State::kTailCrc, 4);
      return Status::ok();

    case State::kTailCrc:
      if (!fill_field(in)) return Status::ok();
      return on_tail();

    case State::kAfterGoodbye: {
      int32_t final_chunk = kChunkGoodbye;
      if (handover_) final_chunk = kChunkHandover;
      if (dropped_) final_chunk = kChunkDropped;
      return Status::corrupt(fmt::format("data after {} (at stream offset {})",
                                         chunk_name(final_chunk), bytes_consumed_));
    }

    case State::kFailed:
      return error_;
  }
  return Status::corrupt("reader in an impossible state");
}

Status CheckpointReader::on_type(int32_t type) {
  // DROPPED may come between any two chunks (the primary's io thread sends it
  // after whatever chunk was being written): a checkpoint in flight is void,
  // and nothing may follow.
  if (type == kChunkDropped) {
    in_checkpoint_ = false;
    dropped_ = true;
    state_ = State::kAfterGoodbye;
    sink_->on_dropped();
    return Status::ok();
  }
  if (!in_checkpoint_) {
    switch (type) {
      case kChunkCheckpointBegin:
        in_checkpoint_ = true;
        crc_ = crc32c(ByteSpan(field_.data(), 4));
        expect(State::kBeginFields, 12);
        return Status::ok();
      case kChunkHeartbeat:
        expect(State::kHeartbeatField, 8);
        return Status::ok();
      case XC_SAVE_ID_ENABLE_COMPRESSION:
        if (format_ == Format::kB) {
          return corrupt("ENABLE_COMPRESSION received twice (the stream is already in Format B)");
        }
        format_ = Format::kB;
        sink_->on_enable_compression();
        expect(State::kType, 4);
        return Status::ok();
      case kChunkGoodbye:
        state_ = State::kAfterGoodbye;
        sink_->on_goodbye();
        return Status::ok();
      case kChunkHandover:
        handover_ = true;
        state_ = State::kAfterGoodbye;
        sink_->on_handover();
        return Status::ok();
      case kChunkEndOfBody:
      case XC_SAVE_ID_COMPRESSED_DATA:
      case kChunkDeviceState:
        return corrupt(chunk_name(type) + " outside a checkpoint");
      default:
        if (type > 0) return corrupt(chunk_name(type) + " outside a checkpoint");
        return corrupt(fmt::format("unknown chunk type {}", type));
    }
  }

  // Heartbeats may come between any two chunks, inside a checkpoint too (the
  // sender's io thread sends them while the engine is busy); they are not part
  // of the checkpoint and not covered by its CRC.
  if (type == kChunkHeartbeat) {
    expect(State::kHeartbeatField, 8);
    return Status::ok();
  }
  crc_ = crc32c_extend(crc_, ByteSpan(field_.data(), 4));

  if (type > 0) {
    if (type > kMaxPfnBatch) {
      return corrupt(fmt::format("PFN array of {} entries exceeds limit {}", type, kMaxPfnBatch));
    }
    pfns_left_ = static_cast<size_t>(type);
    expect(State::kPfn, 8);
    return Status::ok();
  }
  switch (type) {
    case kChunkEndOfBody:
      if (pending_pfns() != 0) {
        return corrupt(fmt::format(
            "end of body with {} PFNs still waiting for their pages ({} PFNs, {} pages decoded)",
            pending_pfns(), pfns_received_, pages_decoded_));
      }
      expect(State::kTailFields, 12);
      return Status::ok();
    case XC_SAVE_ID_COMPRESSED_DATA:
      if (format_ == Format::kA) {
        return corrupt(
            "COMPRESSED_DATA in a Format A checkpoint (no ENABLE_COMPRESSION before it)");
      }
      expect(State::kCompressedLength, 4);
      return Status::ok();
    case kChunkDeviceState:
      if (!consistent_) return corrupt("DEVICE_STATE in a pre-copy round");
      if (device_state_seen_) return corrupt("a second DEVICE_STATE in one checkpoint");
      device_state_seen_ = true;
      expect(State::kDeviceStateLength, 4);
      return Status::ok();
    case kChunkCheckpointBegin:
    case XC_SAVE_ID_ENABLE_COMPRESSION:
    case kChunkGoodbye:
    case kChunkHandover:
      return corrupt(chunk_name(type) + " inside a checkpoint");
    default:
      return corrupt(fmt::format("unknown chunk type {}", type));
  }
}

Status CheckpointReader::on_begin_fields() {
  epoch_ = load_u64(field_.data());
  const uint32_t flags = load_u32(field_.data() + 8);
  pfns_received_ = 0;
  pages_decoded_ = 0;
  has_last_pfn_ = false;
  pending_.clear();
  pending_head_ = 0;
  consistent_ = (flags & kBeginConsistent) != 0;
  device_state_seen_ = false;
  if ((flags & ~kBeginKnownFlags) != 0) {
    return corrupt(fmt::format("unknown begin flags 0x{:x}", flags & ~kBeginKnownFlags));
  }
  Status s = sink_->on_begin(epoch_, flags);
  if (!s.is_ok()) return s.context(fmt::format("checkpoint {}: begin", epoch_));
  expect(State::kType, 4);
  return Status::ok();
}

Status CheckpointReader::on_pfn(uint64_t pfn) {
  if (pfn >= guest_page_count_) {
    return corrupt(fmt::format("PFN {} out of range (guest has {} pages)", pfn, guest_page_count_));
  }
  if (has_last_pfn_ && pfn == last_pfn_) return corrupt(fmt::format("duplicate PFN {}", pfn));
  if (has_last_pfn_ && pfn < last_pfn_) {
    return corrupt(
        fmt::format("PFN {} after PFN {} (PFNs must be strictly increasing)", pfn, last_pfn_));
  }
  if (pending_pfns() >= kMaxPendingPfns) {
    return corrupt(fmt::format("more than {} PFNs waiting for their pages", kMaxPendingPfns));
  }
  has_last_pfn_ = true;
  last_pfn_ = pfn;
  ++pfns_received_;
  // Reclaim the decoded front of the queue once it dominates.
  if (pending_head_ > 4096 && pending_head_ * 2 > pending_.size()) {
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(pending_head_));
    pending_head_ = 0;
  }
  pending_.push_back(pfn);
  if (--pfns_left_ > 0) {
    expect(State::kPfn, 8);
    return Status::ok();
  }
  if (format_ == Format::kA) return start_raw_page();
  expect(State::kType, 4);
  return Status::ok();
}

Status CheckpointReader::start_raw_page() {
  raw_page_ = sink_->page_for(pending_[pending_head_], /*needs_current=*/false).data();
  raw_have_ = 0;
  state_ = State::kRawPage;
  return Status::ok();
}

Status CheckpointReader::on_device_state() {
  Status s = sink_->on_device_state(payload_);
  payload_.clear();
  if (!s.is_ok()) return s.context(fmt::format("checkpoint {}: device state", epoch_));
  expect(State::kType, 4);
  return Status::ok();
}

Status CheckpointReader::on_compressed_length(uint32_t length) {
  if (length > kMaxCompressedPayload) {
    return corrupt(
        fmt::format("COMPRESSED_DATA length {} exceeds limit {}", length, kMaxCompressedPayload));
  }
  if (length < 2) {
    return corrupt(fmt::format("COMPRESSED_DATA length {} is shorter than its header", length));
  }
  payload_.clear();
  payload_length_ = length;
  state_ = State::kPayload;
  return Status::ok();
}

Status CheckpointReader::on_payload() {
  const uint8_t codec = payload_[0];
  const uint8_t flags = payload_[1];
  if ((flags & ~kPayloadLz4) != 0) {
    return corrupt(fmt::format("COMPRESSED_DATA: unknown payload flags 0x{:x}", flags));
  }
  ByteSpan records = ByteSpan(payload_).subspan(2);
  if (flags & kPayloadLz4) {
    if (records.size() < 4) return corrupt("COMPRESSED_DATA: LZ4 payload without its raw length");
    const uint32_t raw_length = load_u32(records.data());
    if (raw_length > kMaxDecodedPayload) {
      return corrupt(fmt::format("COMPRESSED_DATA: LZ4 raw length {} exceeds limit {}", raw_length,
                                 kMaxDecodedPayload));
    }
    // An LZ4 block expands at most 255-fold (a match of n bytes costs at
    // least one byte per 255 of them): a larger claim is rejected before a
    // buffer of that size is allocated.
    const ByteSpan block = records.subspan(4);
    if (raw_length > 255 * block.size() + 16) {
      return corrupt(
          fmt::format("COMPRESSED_DATA: LZ4 raw length {} impossible for a {}-byte block",
                      raw_length, block.size()));
    }
    Status s = lz4_decompress(block, raw_length, decoded_);
    if (!s.is_ok()) return corrupt(fmt::format("COMPRESSED_DATA: {}", s.message()));
    records = decoded_;
  }
  Status s = decode_records(codec, records);
  // Keep the buffers' capacity (bounded by the limits) for the next chunk.
  payload_.clear();
  decoded_.clear();
  if (!s.is_ok()) return s;
  expect(State::kType, 4);
  return Status::ok();
}

Status CheckpointReader::decode_records(uint8_t codec_byte, ByteSpan records) {
  const std::optional<CodecId> codec = codec_from_wire(codec_byte);
  if (!codec) return corrupt(fmt::format("COMPRESSED_DATA: unknown codec {}", codec_byte));
  if ((allowed_codecs_ & (1u << codec_byte)) == 0) {
    return corrupt(fmt::format("COMPRESSED_DATA: codec {} ({}) is not in the Hello's codec list",
                               codec_byte, codec_name(*codec)));
  }
  if (records.empty()) return corrupt("COMPRESSED_DATA carries no page records");
  while (!records.empty()) {
    if (pending_pfns() == 0) {
      return corrupt(
          fmt::format("page record with no PFN waiting ({} PFNs received, {} pages "
                      "decoded)",
                      pfns_received_, pages_decoded_));
    }
    const uint64_t pfn = pending_[pending_head_];
    const bool needs_current = record_needs_current(*codec, records);
    Result<size_t> used = decode_page_record(*codec, records, sink_->page_for(pfn, needs_current));
    if (!used.is_ok()) {
      return corrupt(fmt::format("{} record for PFN {}: {}", codec_name(*codec), pfn,
                                 used.status().message()));
    }
    if (*used == 0 || *used > records.size()) {
      return corrupt(fmt::format("{} record for PFN {}: decoder consumed {} of {} bytes",
                                 codec_name(*codec), pfn, *used, records.size()));
    }
    records = records.subspan(*used);
    ++pending_head_;
    ++pages_decoded_;
  }
  if (pending_pfns() == 0) {
    pending_.clear();
    pending_head_ = 0;
  }
  return Status::ok();
}

Status CheckpointReader::on_tail() {
  const uint32_t tail_crc = load_u32(field_.data());
  if (tail_epoch_ != epoch_) {
    return corrupt(fmt::format("tail epoch {} does not match the begin's", tail_epoch_));
  }
  if (tail_pages_ != pages_decoded_) {
    return corrupt(
        fmt::format("tail says {} pages, the body carried {}", tail_pages_, pages_decoded_));
  }
  if (tail_crc != crc_) {
    return corrupt(
        fmt::format("CRC mismatch (computed 0x{:08x}, tail says 0x{:08x})", crc_, tail_crc));
  }
  in_checkpoint_ = false;
  Status s = sink_->on_end(epoch_, tail_pages_);
  if (!s.is_ok()) return s.context(fmt::format("checkpoint {}: commit", epoch_));
  ++checkpoints_completed_;
  expect(State::kType, 4);
  return Status::ok();
}

}  // namespace romulus::protocol
