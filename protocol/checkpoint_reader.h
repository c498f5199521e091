// The receiving half of the checkpoint chunk stream (docs/protocol.md,
// "Chunks"): an incremental parser that validates every byte and drives a
// CheckpointSink.
//
// Bytes are fed in arbitrary pieces as they arrive (one byte at a time gives
// the same calls and the same result as the whole stream at once). The reader
// enforces every invariant of the format: chunk order, PFN ranges and order,
// pages decoded never ahead of PFNs received, limits on every length, the
// tail's epoch, page count and CRC32C. The sink's on_end() is called only for
// a checkpoint whose tail verified, so a sink that buffers the pages it hands
// out and applies them in on_end() commits checkpoints atomically.
//
// Input is hostile: no length is trusted before it is checked against the
// limits in wire_format.h; memory held is bounded by those limits (one
// COMPRESSED_DATA payload and its decoded records, and the queue of PFNs
// waiting for records), never by a length read from the stream.
//
// A stream is checkpoints, heartbeats and at most one ENABLE_COMPRESSION, and
// may end with one final chunk after which no byte is valid: GOODBYE or
// HANDOVER (between checkpoints; the primary stopped on purpose, and with
// HANDOVER handed the pair to this receiver) or DROPPED (anywhere; the primary
// goes on without this receiver).
//
// The first error sticks: the stream cannot be resumed after it (see
// docs/protocol.md, "Why a lost checkpoint ends the stream").
//
// Threading: a reader and its sink are used by one thread at a time.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/coding.h"
#include "protocol/page.h"

namespace romulus::protocol {

// Format A: PFN arrays are followed by raw pages. Format B: pages travel in
// COMPRESSED_DATA chunks. A stream starts in A; ENABLE_COMPRESSION switches it
// to B for good.
enum class Format { kA, kB };

// Implemented by the receiver (the backup). Calls arrive in stream order.
class CheckpointSink {
 public:
  virtual ~CheckpointSink() = default;
  virtual Status on_begin(uint64_t epoch, uint32_t flags) = 0;
  // Called once per page, strictly increasing PFN within a checkpoint, before
  // the page is decoded. Returns the 4096-byte buffer the page is decoded
  // into. If needs_current, the sink must fill it with the receiver's current
  // copy of the page (the decoder patches it); otherwise it is overwritten
  // whole. The buffer must stay valid until the next call into the sink.
  // A checkpoint that later fails may leave pages handed out here partly
  // written; such a checkpoint never reaches on_end().
  virtual MutablePageView page_for(uint64_t pfn, bool needs_current) = 0;
  // Called only after the tail matched: epoch, page count and CRC verified.
  // Returning an error fails the stream.
  virtual Status on_end(uint64_t epoch, uint32_t page_count) = 0;
  // A virtual machine's device state, part of the consistent checkpoint in
  // flight (before its on_end(); valid during the call only). A receiver that
  // keeps none refuses it: a VM's checkpoint without its devices is no state
  // a VM can resume from.
  virtual Status on_device_state(ByteSpan /*state*/) {
    return Status::unsupported("a virtual machine's device state, which this receiver cannot keep");
  }
  virtual void on_heartbeat(uint64_t /*ns*/) {}
  virtual void on_enable_compression() {}
  virtual void on_goodbye() {}
  // The primary stopped on purpose and handed the pair to this receiver: it
  // should take over at once (with a witness, once it wins the pair).
  virtual void on_handover() {}
  // The primary gave up on this receiver and goes on without it: its image
  // will fall behind, so the end of this stream is no reason to take over.
  virtual void on_dropped() {}
};

class CheckpointReader {
 public:
  // `sink` must outlive the reader. COMPRESSED_DATA payloads may use any
  // codec this side knows.
  CheckpointReader(uint64_t guest_page_count, CheckpointSink* sink);
  // The same, but a payload whose codec is not in `allowed_codecs` (the
  // codecs the Hello listed) is corrupt: the Hello's list binds the stream.
  CheckpointReader(uint64_t guest_page_count, CheckpointSink* sink,
                   std::span<const CodecId> allowed_codecs);

  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  // Consumes all of `data`. Returns the first error of the stream (kCorrupt,
  // or a sink's error with context); once failed, every later call returns
  // that same error and consumes nothing.
  Status feed(ByteSpan data);

  // Call when the connection ends: OK if the stream ended with GOODBYE,
  // HANDOVER or DROPPED; otherwise the sticky error, or kTruncated naming
  // where the stream stopped (inside checkpoint N, inside a chunk, or between
  // checkpoints).
  Status finish() const;

  bool in_checkpoint() const { return in_checkpoint_; }  // between a begin and its verified end
  Format format() const { return format_; }
  bool saw_goodbye() const { return state_ == State::kAfterGoodbye && !dropped_ && !handover_; }
  bool saw_handover() const { return handover_; }
  bool saw_dropped() const { return dropped_; }
  uint64_t bytes_consumed() const { return bytes_consumed_; }
  // Checkpoints whose end verified (and which the sink accepted).
  uint64_t checkpoints_completed() const { return checkpoints_completed_; }

 private:
  enum class State {
    kType,            // 4 bytes: next chunk type
    kBeginFields,     // 12 bytes: epoch, flags
    kHeartbeatField,  // 8 bytes
    kPfn,             // 8 bytes per PFN, pfns_left_ to go
    kRawPage,         // Format A: pages_left_ raw pages of 4096 bytes
    kCompressedLength,
    kPayload,  // payload_ being filled
    kDeviceStateLength,
    kDeviceState,  // payload_ being filled with a DEVICE_STATE
    kTailFields,   // 12 bytes: epoch, page count (inside the CRC)
    kTailCrc,      // 4 bytes (outside the CRC)
    kAfterGoodbye,
    kFailed,
  };

  // Starts reading a fixed field of n (<= 16) bytes.
  void expect(State state, size_t n);
  // Copies bytes of the current fixed field; true once it is complete.
  bool fill_field(ByteSpan& in);
  // Consumes n bytes (CRC and counters).
  void consumed(const uint8_t* p, size_t n);

  Status step(ByteSpan& in);
  Status on_type(int32_t type);
  Status on_begin_fields();
  Status on_pfn(uint64_t pfn);
  Status start_raw_page();
  Status on_compressed_length(uint32_t length);
  Status on_payload();
  Status on_device_state();
  Status on_tail();
  Status decode_records(uint8_t codec_byte, ByteSpan records);

  // kCorrupt, prefixed with "checkpoint N: " inside a checkpoint.
  Status corrupt(const std::string& message) const;
  size_t pending_pfns() const { return pending_.size() - pending_head_; }

  const uint64_t guest_page_count_;
  CheckpointSink* const sink_;
  uint32_t allowed_codecs_ = 0;  // bit c set: codec c may be used

  State state_ = State::kType;
  Format format_ = Format::kA;
  Status error_;
  uint64_t bytes_consumed_ = 0;
  uint64_t checkpoints_completed_ = 0;

  // Current fixed-size field.
  std::array<uint8_t, 16> field_{};
  size_t field_need_ = 0;
  size_t field_have_ = 0;

  // Current checkpoint.
  bool in_checkpoint_ = false;
  bool dropped_ = false;   // the stream ended with DROPPED (state kAfterGoodbye)
  bool handover_ = false;  // the stream ended with HANDOVER (state kAfterGoodbye)
  uint64_t epoch_ = 0;
  uint32_t crc_ = 0;
  uint64_t pfns_received_ = 0;
  uint64_t pages_decoded_ = 0;
  bool has_last_pfn_ = false;
  uint64_t last_pfn_ = 0;
  bool consistent_ = false;         // the checkpoint's begin had kBeginConsistent
  bool device_state_seen_ = false;  // it carried a DEVICE_STATE
  uint64_t tail_epoch_ = 0;
  uint32_t tail_pages_ = 0;

  // PFNs received whose page has not arrived yet (pending_[pending_head_..]).
  std::vector<uint64_t> pending_;
  size_t pending_head_ = 0;
  size_t pfns_left_ = 0;  // in the PFN array being read

  // Format A page in flight.
  uint8_t* raw_page_ = nullptr;  // the sink's buffer
  size_t raw_have_ = 0;

  // COMPRESSED_DATA payload being read, and its LZ4-decoded records.
  Bytes payload_;  // bytes received so far, up to payload_length_
  size_t payload_length_ = 0;
  Bytes decoded_;
};

}  // namespace romulus::protocol
