// Fuzz target for the LZ4 stage (protocol/lz4_stage.h).
//
// Input: 3 bytes of expected size (little-endian, below 2^20; if the top bit of
// the third byte is set, kMaxDecodedPayload + 1, which must be refused without
// allocating), then the block. The block is decompressed as hostile input; on
// success the output must have exactly the expected size. Then the block bytes
// are compressed and, if smaller, must decompress to themselves.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "protocol/lz4_stage.h"
#include "protocol/wire_format.h"

using namespace romulus::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  size_t expected = data[0] | (data[1] << 8) | ((data[2] & 0x0f) << 16);
  const bool over_limit = (data[2] & 0x80) != 0;
  if (over_limit) expected = size_t{kMaxDecodedPayload} + 1;
  const ByteSpan block(data + 3, size - 3);

  Bytes out;
  const romulus::Status s = lz4_decompress(block, expected, out);
  if (over_limit && (s.is_ok() || out.capacity() != 0)) __builtin_trap();
  if (s.is_ok() && out.size() != expected) __builtin_trap();
  if (!s.is_ok() && !out.empty()) __builtin_trap();

  Bytes packed, back;
  if (lz4_compress(block, packed)) {
    if (packed.size() >= block.size()) __builtin_trap();
    if (!lz4_decompress(packed, block.size(), back).is_ok()) __builtin_trap();
    if (back.size() != block.size() || !std::equal(back.begin(), back.end(), block.begin())) {
      __builtin_trap();
    }
  }
  return 0;
}
