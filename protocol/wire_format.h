// Wire constants of the Romulus replication stream. Each value is specified in
// docs/protocol.md; the section is named beside it. Change both together.
#pragma once

#include <cstddef>
#include <cstdint>

namespace romulus::protocol {

// ---- Handshake (docs/protocol.md, "Handshake").
inline constexpr uint8_t kHelloMagic[4] = {'R', 'M', 'L', 'S'};  // primary -> backup
inline constexpr uint8_t kReplyMagic[4] = {'R', 'M', 'L', 'B'};  // backup -> primary
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr uint32_t kMaxHandshakeBody = 4096;  // bytes after the fixed header
inline constexpr size_t kMaxRefusalReason = 1024;    // bytes of UTF-8 text

// ---- Chunk types, primary -> backup (docs/protocol.md, "Chunks").
// type > 0: a PFN array of `type` entries; type == 0: end of checkpoint body.
inline constexpr int32_t kChunkEndOfBody = 0;
inline constexpr int32_t XC_SAVE_ID_COMPRESSED_DATA = -12;     // u32 length + payload
inline constexpr int32_t XC_SAVE_ID_ENABLE_COMPRESSION = -13;  // no body; Format B from next
inline constexpr int32_t kChunkCheckpointBegin = -100;         // u64 epoch, u32 flags
inline constexpr int32_t kChunkHeartbeat = -101;               // u64 sender clock (ns)
// GOODBYE, HANDOVER and DROPPED end a stream; what the backup concludes from
// each: docs/protocol.md, "How a stream ends".
inline constexpr int32_t kChunkGoodbye = -102;   // clean end of stream, between checkpoints
inline constexpr int32_t kChunkDropped = -103;   // primary gave up on this backup; anywhere; final
inline constexpr int32_t kChunkHandover = -104;  // as GOODBYE, and the backup takes over
// A virtual machine's device state (docs/protocol.md, "Chunks"): u32 length +
// that many bytes; at most one, inside a consistent checkpoint, under its CRC.
inline constexpr int32_t kChunkDeviceState = -105;

// ---- Chunk types, backup -> primary (docs/protocol.md, "Backup messages").
inline constexpr int32_t kChunkAck = -110;    // u64 epoch committed
inline constexpr int32_t kChunkError = -111;  // u32 status code, u16 length, text

// ---- Checkpoint begin flags (docs/protocol.md, "Chunks"; the order the backup
// allows them in: "Epochs").
inline constexpr uint32_t kBeginConsistent = 1u << 0;  // a paused checkpoint, not a pre-copy round
inline constexpr uint32_t kBeginFullSync = 1u << 1;    // first round of a full sync: fresh image
inline constexpr uint32_t kBeginKnownFlags = kBeginConsistent | kBeginFullSync;

// ---- COMPRESSED_DATA payload flags.
inline constexpr uint8_t kPayloadLz4 = 1u << 0;  // records are an LZ4 block (u32 raw length first)

// ---- Limits every reader enforces (docs/protocol.md, "Limits").
inline constexpr int32_t kMaxPfnBatch = 1024;                // entries in one PFN array
inline constexpr uint32_t kMaxCompressedPayload = 8u << 20;  // bytes after the length field
inline constexpr uint32_t kMaxDecodedPayload = 8u << 20;     // bytes of records after LZ4
inline constexpr uint32_t kMaxDeviceState = 32u << 20;       // bytes of one DEVICE_STATE

}  // namespace romulus::protocol

// ---- Appended by the chunk stream (docs/protocol.md, "Limits").
namespace romulus::protocol {
// PFN entries a Format B checkpoint may have received but not yet decoded.
inline constexpr uint64_t kMaxPendingPfns = 1u << 20;
}  // namespace romulus::protocol
