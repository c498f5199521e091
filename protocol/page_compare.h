// Fast comparison of two 4096-byte pages: which 4-byte words (or bytes) differ.
//
// The page encoders (protocol/runskip.h, protocol/xbzrle.h) spend almost all of
// their time finding what changed, so that search lives here, once, in SIMD:
// AVX-512BW or AVX2 (chosen at run time with __builtin_cpu_supports, never
// assumed from the build flags) or the SSE2 baseline on x86-64, and a portable
// 64-bit loop elsewhere. diff_word_blocks(), the RUN/SKIP encoder's compare,
// uses AVX-512BW where the CPU has it: compares straight into mask registers,
// measured as fast as AVX2 or faster (docs/performance.md, "Codecs");
// diff_words()/diff_bytes() use AVX2.
//
// Results are bitmaps: bit i of the map is set when unit i differs. A
// WordDiffMap has one bit per 4-byte word (1024 bits), a ByteDiffMap one bit per
// byte (4096 bits); bit i lives in element i / 64, at bit position i % 64.
//
// Pure functions over caller memory; safe from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "protocol/page.h"

namespace romulus::protocol {

using WordDiffMap = std::array<uint64_t, kWordsPerPage / 64>;
using ByteDiffMap = std::array<uint64_t, kPageSize / 64>;

// Sets bit i of *map exactly when word i of a and b differ. Returns true if
// any word differs. a and b each point at kPageSize readable bytes.
bool diff_words(const uint8_t* a, const uint8_t* b, WordDiffMap* map);

// Sets *map as diff_words does and returns a block summary: bit k is set
// exactly when (*map)[k] != 0, i.e. some word of the 256-byte block k differs
// (0: the pages are identical). Lets a caller visit only the differing blocks
// (protocol/runskip.cc).
uint32_t diff_word_blocks(const uint8_t* a, const uint8_t* b, WordDiffMap* map);

// Sets bit i of *map exactly when byte i of a and b differ. Returns true if
// any byte differs.
bool diff_bytes(const uint8_t* a, const uint8_t* b, ByteDiffMap* map);

// Index of the first bit at or after `from` whose value is `set`, or `nbits`
// if there is none. `nbits` is a multiple of 64 (the map's size in bits).
inline size_t find_next_bit(const uint64_t* map, size_t nbits, size_t from, bool set) {
  if (from >= nbits) return nbits;
  size_t i = from / 64;
  const uint64_t flip = set ? 0 : ~uint64_t{0};
  uint64_t w = (map[i] ^ flip) & (~uint64_t{0} << (from % 64));
  while (w == 0) {
    if (++i == nbits / 64) return nbits;
    w = map[i] ^ flip;
  }
  return i * 64 + static_cast<size_t>(__builtin_ctzll(w));
}

// The implementations behind diff_words/diff_bytes, exposed so tests can check
// each against the others and benchmarks can compare them. The functions above
// use the best one the CPU supports.
enum class CompareImpl { kPortable, kSse2, kAvx2, kAvx512 };
bool compare_impl_available(CompareImpl impl);
// Precondition: compare_impl_available(impl).
bool diff_words_with(CompareImpl impl, const uint8_t* a, const uint8_t* b, WordDiffMap* map);
bool diff_bytes_with(CompareImpl impl, const uint8_t* a, const uint8_t* b, ByteDiffMap* map);
// AVX2 builds the summary in its compare loop (its diff_words is this one);
// the other implementations derive it from their diff_words map.
uint32_t diff_word_blocks_with(CompareImpl impl, const uint8_t* a, const uint8_t* b,
                               WordDiffMap* map);

// True if the two pages are byte-for-byte identical (AVX2 where the CPU has
// it, early exit at the first differing 128 bytes). The one page comparison of
// the project: trackers and tests use it too. Pages need not be aligned.
bool pages_equal(const uint8_t* a, const uint8_t* b);
// True if the page is all zero bytes (early exit). Need not be aligned.
bool is_zero_page(const uint8_t* page);

}  // namespace romulus::protocol
