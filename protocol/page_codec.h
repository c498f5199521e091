// Page records by codec: one entry point for the chunk layer, dispatching on
// the CodecId negotiated for a COMPRESSED_DATA chunk (docs/protocol.md,
// "Codecs"). A record encodes one 4096-byte page; the chunk layer frames the
// records of a chunk and knows which PFN each belongs to.
//
//   kNone     record = the 4096 raw bytes
//   kRunSkip  protocol/runskip.h (default)
//   kXbzrle   protocol/xbzrle.h
//
// Every record is at most max_record_size(codec) <= kMaxPageRecord bytes.
// Pure functions; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol/coding.h"
#include "protocol/page.h"
#include "common/status.h"

namespace romulus::protocol {

// Largest record of any codec (a whole-page RUN/SKIP or XBZRLE record).
inline constexpr size_t kMaxPageRecord = 1 + kPageSize;

// 1 + 4096 for kRunSkip and kXbzrle, 4096 for kNone (kMaxPageRecord for a value
// outside the enum).
size_t max_record_size(CodecId codec);

// Encodes `cur` as one record against the receiver's copy `old` (kPageSize
// bytes). old == nullptr means the sender does not know the receiver's copy: a
// whole-page record is emitted. `out` has room for max_record_size(codec)
// bytes; returns the bytes written. A codec value outside the enum is encoded
// as kNone.
size_t encode_page_record(CodecId codec, const uint8_t* old, PageView cur, uint8_t* out);

// Applies the record at the front of `in` to `page` (the receiver's current
// copy, or anything if !record_needs_current) and returns the bytes consumed.
// On error, `page` is unchanged.
Result<size_t> decode_page_record(CodecId codec, ByteSpan in, MutablePageView page);

// False if the record at the front of `in` is complete and overwrites the whole
// page (a whole-page record, or a kNone record), so the receiver need not provide its
// current copy; true otherwise, including for empty or malformed input (the
// decoder then reports the error).
bool record_needs_current(CodecId codec, ByteSpan in);

}  // namespace romulus::protocol
