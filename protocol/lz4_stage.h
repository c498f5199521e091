// The LZ4 stage: an optional second pass over the page records of one
// XC_SAVE_ID_COMPRESSED_DATA chunk (docs/protocol.md, "Codecs", "LZ4 stage").
//
// The sender compresses the concatenated records as one LZ4 *block* (liblz4's
// block format, no frame header); the chunk layer records the uncompressed size
// beside it and sets kPayloadLz4. When LZ4 does not make the payload smaller the
// records travel as they are. The receiver decompresses into a buffer of exactly
// the announced size, which may be at most kMaxDecodedPayload: a hostile size
// never makes it allocate more.
//
// Pure functions; safe from any thread.
#pragma once

#include <cstddef>

#include "protocol/coding.h"
#include "common/status.h"

namespace romulus::protocol {

// Replaces `out` with the LZ4 block of `in` and returns true if that block is
// smaller than `in`; otherwise returns false ("send uncompressed") and leaves
// `out` empty. Empty input returns false.
bool lz4_compress(ByteSpan in, Bytes& out);

// Replaces `out` with the decompression of `block`, which must be a well-formed
// LZ4 block that decodes to exactly `expected_size` bytes. Errors:
// kInvalidArgument if expected_size > kMaxDecodedPayload (nothing is
// allocated), kCorrupt if the block is malformed or decodes to another size.
// On error `out` is left empty.
Status lz4_decompress(ByteSpan block, size_t expected_size, Bytes& out);

}  // namespace romulus::protocol
