// Fuzz target for the RUN/SKIP decoder (protocol/runskip.h).
//
// 1. Hostile input: decodes records one after another from the whole input into
//    a page that starts as zeros with the input's first 64 bytes at offset 0.
//    Every decode must consume 1..remaining bytes or fail leaving the page as it
//    was; ASan/UBSan catch any out-of-bounds access. Every decode must agree
//    with the plain one-pass decoder of bench/reference_decoder.h (success,
//    length and page; or failure).
// 2. Round trip: builds two pages from the input (old: the input repeated; cur:
//    old with edits read from the input), encodes, decodes, and traps on any
//    mismatch or an oversized record, or if any compare implementation
//    (runskip_encode_with) encodes differently.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bench/reference_decoder.h"
#include "protocol/runskip.h"

using namespace romulus::protocol;

namespace {

void decode_all(const uint8_t* data, size_t size) {
  uint8_t page[kPageSize] = {};
  std::memcpy(page, data, size < 64 ? size : 64);
  ByteSpan in(data, size);
  while (!in.empty()) {
    uint8_t before[kPageSize];
    std::memcpy(before, page, kPageSize);
    uint8_t ref_page[kPageSize];
    std::memcpy(ref_page, page, kPageSize);
    auto r = runskip_decode(in, MutablePageView(page, kPageSize));
    auto ref = romulus::bench::reference_runskip_decode(in, MutablePageView(ref_page, kPageSize));
    if (r.is_ok() != ref.is_ok()) __builtin_trap();
    if (r.is_ok() && (*r != *ref || std::memcmp(page, ref_page, kPageSize) != 0)) __builtin_trap();
    if (!r.is_ok()) {
      if (std::memcmp(before, page, kPageSize) != 0) __builtin_trap();
      return;
    }
    if (*r == 0 || *r > in.size()) __builtin_trap();
    in = in.subspan(*r);
  }
}

void round_trip(const uint8_t* data, size_t size) {
  if (size == 0) return;
  uint8_t old_page[kPageSize], cur[kPageSize];
  for (size_t i = 0; i < kPageSize; ++i) old_page[i] = data[i % size];
  if (data[0] & 1) std::memset(old_page, 0, kPageSize);
  std::memcpy(cur, old_page, kPageSize);
  // Edits: (offset u16, value) triples.
  for (size_t i = 1; i + 3 <= size; i += 3) {
    const size_t off = (data[i] | (data[i + 1] << 8)) % kPageSize;
    cur[off] = data[i + 2];
  }
  uint8_t out[kRunSkipMaxRecord];
  const size_t n = runskip_encode(old_page, PageView(cur, kPageSize), out);
  if (n == 0 || n > kRunSkipMaxRecord) __builtin_trap();
  // Every compare implementation (AVX-512, AVX2, SSE2, portable) gives the same record.
  for (auto impl :
       {CompareImpl::kPortable, CompareImpl::kSse2, CompareImpl::kAvx2, CompareImpl::kAvx512}) {
    if (!compare_impl_available(impl)) continue;
    uint8_t other[kRunSkipMaxRecord];
    const size_t m = runskip_encode_with(impl, old_page, PageView(cur, kPageSize), other);
    if (m != n || std::memcmp(other, out, n) != 0) __builtin_trap();
  }
  auto r = runskip_decode(ByteSpan(out, n), MutablePageView(old_page, kPageSize));
  if (!r.is_ok() || *r != n) __builtin_trap();
  if (std::memcmp(old_page, cur, kPageSize) != 0) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  decode_all(data, size);
  round_trip(data, size);
  return 0;
}
