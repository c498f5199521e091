#include "protocol/lz4_stage.h"

#include <fmt/format.h>
#include <lz4.h>

#include <climits>

#include "protocol/wire_format.h"

namespace romulus::protocol {
namespace {

// Reads an LZ4 length extension (bytes added while they are 255) at block[*ip].
bool read_length_extension(ByteSpan block, size_t* ip, size_t* length) {
  uint8_t b = 0;
  do {
    if (*ip >= block.size()) return false;
    b = block[(*ip)++];
    *length += b;
  } while (b == 255);
  return true;
}

// Walks the sequences of `block` without decoding them and checks the LZ4
// block format's rules for a block that decodes to exactly `size` bytes
// (docs/protocol.md, "LZ4 stage"). liblz4 1.9.4's LZ4_decompress_safe skips
// some of them on its fast paths (a last match ending in the last 5 bytes, an
// offset of 0), so what a receiver accepts would depend on the library's
// code paths; this makes it the format, exactly.
Status check_block_structure(ByteSpan block, size_t size) {
  size_t ip = 0;  // in block
  size_t op = 0;  // in the output
  for (;;) {
    if (ip >= block.size()) {
      return Status::corrupt(fmt::format("lz4 block: ends at byte {} where a token is due", ip));
    }
    const uint8_t token = block[ip++];
    size_t literals = token >> 4;
    if (literals == 15 && !read_length_extension(block, &ip, &literals)) {
      return Status::corrupt("lz4 block: ends inside a literal length");
    }
    if (literals > block.size() - ip || literals > size - op) {
      return Status::corrupt(fmt::format(
          "lz4 block: {} literals at output byte {} pass the end of the block or of the {} bytes",
          literals, op, size));
    }
    ip += literals;
    op += literals;
    if (ip == block.size()) {  // the last sequence: literals only
      if (op != size) {
        return Status::corrupt(
            fmt::format("lz4 block: decodes to {} bytes, announced {}", op, size));
      }
      return Status::ok();
    }
    if (size - op < 12) {
      return Status::corrupt(fmt::format(
          "lz4 block: match at output byte {} starts less than 12 bytes before the end ({})", op,
          size));
    }
    if (block.size() - ip < 2) return Status::corrupt("lz4 block: ends inside a match offset");
    const size_t offset = load_u16(block.data() + ip);
    ip += 2;
    if (offset == 0 || offset > op) {
      return Status::corrupt(fmt::format(
          "lz4 block: match offset {} at output byte {} (must be 1..{})", offset, op, op));
    }
    size_t match = token & 15;
    if (match == 15 && !read_length_extension(block, &ip, &match)) {
      return Status::corrupt("lz4 block: ends inside a match length");
    }
    match += 4;
    if (match > size - op - 5) {
      return Status::corrupt(fmt::format(
          "lz4 block: match of {} bytes at output byte {} ends less than 5 bytes before the end "
          "({}); the last 5 bytes must be literals",
          match, op, size));
    }
    op += match;
  }
}

}  // namespace

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
  if (Status st = check_block_structure(block, expected_size); !st.is_ok()) {
    out.clear();
    return st;
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
