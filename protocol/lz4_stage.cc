#include "protocol/lz4_stage.h"

#include <fmt/format.h>
#include <lz4.h>

#include <climits>

#include "protocol/wire_format.h"

namespace romulus::protocol {

bool lz4_compress(ByteSpan in, Bytes& out) {
  if (in.size() < 2 || in.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
    out.clear();
    return false;
  }
  // Room for one byte less than the input: liblz4 stops and returns 0 as soon as
  // the block would not be smaller, so incompressible input costs little.
  out.resize(in.size() - 1);  // no clear() first: reusing `out` avoids zero-filling it
  const int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()),
                                     reinterpret_cast<char*>(out.data()),
                                     static_cast<int>(in.size()), static_cast<int>(out.size()));
  if (n <= 0) {
    out.clear();
    return false;
  }
  out.resize(static_cast<size_t>(n));
  return true;
}

Status lz4_decompress(ByteSpan block, size_t expected_size, Bytes& out) {
  if (expected_size > kMaxDecodedPayload) {
    out.clear();
    return Status::invalid_argument(
        fmt::format("lz4 block: announced size {} exceeds the limit of {} bytes", expected_size,
                    kMaxDecodedPayload));
  }
  if (block.empty() || block.size() > static_cast<size_t>(INT_MAX)) {
    out.clear();
    return Status::corrupt(fmt::format("lz4 block: invalid block length {}", block.size()));
  }
  // An LZ4 sequence yields at most ~255 bytes of output per input byte (each
  // length-extension byte adds 255), so a larger announcement is a lie: refuse
  // it before allocating anything for it.
  if (expected_size > block.size() * 256 + 64) {
    out.clear();
    return Status::corrupt(
        fmt::format("lz4 block: announced size {} is more than a {}-byte block can decode to",
                    expected_size, block.size()));
  }
  out.resize(expected_size);  // every byte is overwritten on success; no clear() first
  char empty_dst = 0;
  char* dst = expected_size == 0 ? &empty_dst : reinterpret_cast<char*>(out.data());
  const int n =
      LZ4_decompress_safe(reinterpret_cast<const char*>(block.data()), dst,
                          static_cast<int>(block.size()), static_cast<int>(expected_size));
  if (n < 0) {
    out.clear();
    return Status::corrupt(fmt::format(
        "lz4 block: malformed, or decodes to more than the announced {} bytes (block of {} bytes)",
        expected_size, block.size()));
  }
  if (static_cast<size_t>(n) != expected_size) {
    out.clear();
    return Status::corrupt(
        fmt::format("lz4 block: decodes to {} bytes, announced {}", n, expected_size));
  }
  return Status::ok();
}

}  // namespace romulus::protocol
