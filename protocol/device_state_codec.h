// The payload of a DEVICE_STATE chunk (docs/protocol.md, "Chunks"): a virtual
// machine's device state, raw or encoded against the previous one of the same
// stream. Device states change little from one checkpoint to the next (timers,
// queue indices, a few registers in some 80 KB), so the delta is small.
//
//   payload := 0x00 state[...]                      raw: the rest of the chunk
//            | 0x01 u32(length) record[blocks]      against the previous state
//   blocks  := ceil(length / 4096)
//
// Encoded against the previous state, the state is cut into 4096-byte blocks
// (the last one padded with zeros, in both states) and each block is one XBZRLE
// record ("Codecs", XBZRLE: unchanged, delta, or whole block) against the same
// block of the previous state; the records follow one another and end exactly
// at the end of the payload. Only a state of the previous one's length is
// encoded this way (else it is sent raw), and only when a previous state of
// this stream exists: the first DEVICE_STATE of a stream is raw.
//
// Pure functions; the decoder treats its input as hostile (every length and
// record checked before a byte is kept; the output bounded by kMaxDeviceState).
#pragma once

#include <cstdint>
#include <optional>

#include "common/status.h"
#include "protocol/coding.h"

namespace romulus::protocol {

inline constexpr uint8_t kDeviceStateRaw = 0x00;
inline constexpr uint8_t kDeviceStateDelta = 0x01;

// The payload for `state`: against `previous` when it is given and of the same
// length and the delta is smaller, else raw.
Bytes encode_device_state_payload(ByteSpan state, std::optional<ByteSpan> previous);

// The state a payload carries. `previous`: the stream's previous state (nullopt
// before its first); a delta without one, or against one of another length, is
// corrupt.
Result<Bytes> decode_device_state_payload(ByteSpan payload, std::optional<ByteSpan> previous);

}  // namespace romulus::protocol
