#include "protocol/page_compare.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace romulus::protocol {
namespace {

// ---- Portable: 8 bytes at a time.

bool diff_words_portable(const uint8_t* a, const uint8_t* b, WordDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    uint64_t bits = 0;
    for (size_t w = 0; w < 64; w += 2) {
      uint64_t x, y;
      std::memcpy(&x, a + (i * 64 + w) * kWordSize, 8);
      std::memcpy(&y, b + (i * 64 + w) * kWordSize, 8);
      const uint64_t d = x ^ y;
      if (d == 0) continue;
      // Word order in memory: the first word is the low half on little endian.
      uint32_t lo, hi;
      std::memcpy(&lo, &d, 4);
      std::memcpy(&hi, reinterpret_cast<const uint8_t*>(&d) + 4, 4);
      bits |= uint64_t{lo != 0} << w;
      bits |= uint64_t{hi != 0} << (w + 1);
    }
    (*map)[i] = bits;
    any |= bits;
  }
  return any != 0;
}

bool diff_bytes_portable(const uint8_t* a, const uint8_t* b, ByteDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    uint64_t bits = 0;
    for (size_t j = 0; j < 64; j += 8) {
      uint64_t x, y;
      std::memcpy(&x, a + i * 64 + j, 8);
      std::memcpy(&y, b + i * 64 + j, 8);
      if (x == y) continue;
      for (size_t k = 0; k < 8; ++k)
        bits |= uint64_t{a[i * 64 + j + k] != b[i * 64 + j + k]} << (j + k);
    }
    (*map)[i] = bits;
    any |= bits;
  }
  return any != 0;
}

#if defined(__x86_64__)

// ---- SSE2 (x86-64 baseline): 16 bytes at a time.

bool diff_words_sse2(const uint8_t* a, const uint8_t* b, WordDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    const uint8_t* pa = a + i * 256;
    const uint8_t* pb = b + i * 256;
    uint64_t eq = 0;
    for (size_t j = 0; j < 16; ++j) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 16 * j));
      const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + 16 * j));
      const int m = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(x, y)));
      eq |= static_cast<uint64_t>(m) << (4 * j);
    }
    (*map)[i] = ~eq;
    any |= ~eq;
  }
  return any != 0;
}

bool diff_bytes_sse2(const uint8_t* a, const uint8_t* b, ByteDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    const uint8_t* pa = a + i * 64;
    const uint8_t* pb = b + i * 64;
    uint64_t eq = 0;
    for (size_t j = 0; j < 4; ++j) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 16 * j));
      const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + 16 * j));
      const uint32_t m = static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(x, y)));
      eq |= static_cast<uint64_t>(m) << (16 * j);
    }
    (*map)[i] = ~eq;
    any |= ~eq;
  }
  return any != 0;
}

// ---- AVX2: 32 bytes per compare. Words: the masks are built for every
// block, without a branch (a sparse page's few differing blocks would otherwise
// cost a mispredicted branch each). Bytes: an identical 128-byte stretch costs
// one OR of XORs and one test; only differing stretches build their mask.

// Bit i set when word i of the 128 bytes at x and y is equal: the four
// compares are packed to bytes (the packs interleave 128-bit lanes, the
// permute puts the words back in order) for one movemask, instead of a
// movemask, a shift and an OR per compare.
__attribute__((target("avx2"), always_inline)) inline uint32_t equal_words_avx2(const __m256i* x,
                                                                                const __m256i* y) {
  const __m256i e0 = _mm256_cmpeq_epi32(_mm256_loadu_si256(x), _mm256_loadu_si256(y));
  const __m256i e1 = _mm256_cmpeq_epi32(_mm256_loadu_si256(x + 1), _mm256_loadu_si256(y + 1));
  const __m256i e2 = _mm256_cmpeq_epi32(_mm256_loadu_si256(x + 2), _mm256_loadu_si256(y + 2));
  const __m256i e3 = _mm256_cmpeq_epi32(_mm256_loadu_si256(x + 3), _mm256_loadu_si256(y + 3));
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(e0, e1), _mm256_packs_epi32(e2, e3));
  const __m256i ordered =
      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  return static_cast<uint32_t>(_mm256_movemask_epi8(ordered));
}

// Tried and measured slower (docs/performance.md, "Codecs"): a first pass
// that only ORs XORs per 256-byte block, then masks for the differing blocks.
// It loads a dense page twice, and was slower on sparse pages too.
__attribute__((target("avx2"))) uint32_t diff_word_blocks_avx2(const uint8_t* a, const uint8_t* b,
                                                               WordDiffMap* map) {
  uint32_t blocks = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    const __m256i* pa = reinterpret_cast<const __m256i*>(a + i * 256);
    const __m256i* pb = reinterpret_cast<const __m256i*>(b + i * 256);
    const uint64_t m =
        ~(equal_words_avx2(pa, pb) | static_cast<uint64_t>(equal_words_avx2(pa + 4, pb + 4)) << 32);
    (*map)[i] = m;
    blocks |= static_cast<uint32_t>(m != 0) << i;
  }
  return blocks;
}

__attribute__((target("avx2"))) bool diff_words_avx2(const uint8_t* a, const uint8_t* b,
                                                     WordDiffMap* map) {
  return diff_word_blocks_avx2(a, b, map) != 0;
}

__attribute__((target("avx2"))) bool diff_bytes_avx2(const uint8_t* a, const uint8_t* b,
                                                     ByteDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); i += 2) {
    const __m256i* pa = reinterpret_cast<const __m256i*>(a + i * 64);
    const __m256i* pb = reinterpret_cast<const __m256i*>(b + i * 64);
    const __m256i a0 = _mm256_loadu_si256(pa), b0 = _mm256_loadu_si256(pb);
    const __m256i a1 = _mm256_loadu_si256(pa + 1), b1 = _mm256_loadu_si256(pb + 1);
    const __m256i a2 = _mm256_loadu_si256(pa + 2), b2 = _mm256_loadu_si256(pb + 2);
    const __m256i a3 = _mm256_loadu_si256(pa + 3), b3 = _mm256_loadu_si256(pb + 3);
    const __m256i x =
        _mm256_or_si256(_mm256_or_si256(_mm256_xor_si256(a0, b0), _mm256_xor_si256(a1, b1)),
                        _mm256_or_si256(_mm256_xor_si256(a2, b2), _mm256_xor_si256(a3, b3)));
    if (_mm256_testz_si256(x, x)) {
      (*map)[i] = 0;
      (*map)[i + 1] = 0;
      continue;
    }
    const uint64_t m0 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a0, b0)));
    const uint64_t m1 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a1, b1)));
    const uint64_t m2 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a2, b2)));
    const uint64_t m3 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a3, b3)));
    (*map)[i] = ~(m0 | (m1 << 32));
    (*map)[i + 1] = ~(m2 | (m3 << 32));
    any |= (*map)[i] | (*map)[i + 1];
  }
  return any != 0;
}

// ---- AVX-512 (F + BW): compares yield bit masks directly, 16 words or 64
// bytes per 64-byte vector, so no movemask juggling and no branch.

__attribute__((target("avx512f,avx512bw"))) bool diff_words_avx512(const uint8_t* a,
                                                                   const uint8_t* b,
                                                                   WordDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    uint64_t ne = 0;
    for (int j = 0; j < 4; ++j) {
      const __m512i x = _mm512_loadu_si512(a + i * 256 + 64 * j);
      const __m512i y = _mm512_loadu_si512(b + i * 256 + 64 * j);
      ne |= static_cast<uint64_t>(_mm512_cmpneq_epi32_mask(x, y)) << (16 * j);
    }
    (*map)[i] = ne;
    any |= ne;
  }
  return any != 0;
}

// The word masks of a 256-byte block come straight out of four compares into
// mask registers, joined with two unpacks; no packs, permutes or movemasks.
__attribute__((target("avx512f,avx512bw"))) uint32_t diff_word_blocks_avx512(const uint8_t* a,
                                                                             const uint8_t* b,
                                                                             WordDiffMap* map) {
  uint32_t blocks = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    const uint8_t* pa = a + i * 256;
    const uint8_t* pb = b + i * 256;
    const __mmask16 k0 = _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(pa), _mm512_loadu_si512(pb));
    const __mmask16 k1 =
        _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(pa + 64), _mm512_loadu_si512(pb + 64));
    const __mmask16 k2 =
        _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(pa + 128), _mm512_loadu_si512(pb + 128));
    const __mmask16 k3 =
        _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(pa + 192), _mm512_loadu_si512(pb + 192));
    const __mmask64 k = _mm512_kunpackd(_mm512_kunpackw(k3, k2), _mm512_kunpackw(k1, k0));
    const uint64_t m = _cvtmask64_u64(k);
    (*map)[i] = m;
    blocks |= static_cast<uint32_t>(m != 0) << i;
  }
  return blocks;
}

__attribute__((target("avx512f,avx512bw"))) bool diff_bytes_avx512(const uint8_t* a,
                                                                   const uint8_t* b,
                                                                   ByteDiffMap* map) {
  uint64_t any = 0;
  for (size_t i = 0; i < map->size(); ++i) {
    const __m512i x = _mm512_loadu_si512(a + i * 64);
    const __m512i y = _mm512_loadu_si512(b + i * 64);
    const uint64_t ne = _mm512_cmpneq_epi8_mask(x, y);
    (*map)[i] = ne;
    any |= ne;
  }
  return any != 0;
}

bool have_avx512() {
  static const bool kHave = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return kHave;
}

bool have_avx2() {
  static const bool kHave = __builtin_cpu_supports("avx2");
  return kHave;
}

#endif  // __x86_64__

uint32_t block_summary(const WordDiffMap& map) {
  uint32_t blocks = 0;
  for (size_t i = 0; i < map.size(); ++i) blocks |= static_cast<uint32_t>(map[i] != 0) << i;
  return blocks;
}

}  // namespace

bool diff_words(const uint8_t* a, const uint8_t* b, WordDiffMap* map) {
#if defined(__x86_64__)
  return have_avx2() ? diff_words_avx2(a, b, map) : diff_words_sse2(a, b, map);
#else
  return diff_words_portable(a, b, map);
#endif
}

bool diff_bytes(const uint8_t* a, const uint8_t* b, ByteDiffMap* map) {
#if defined(__x86_64__)
  return have_avx2() ? diff_bytes_avx2(a, b, map) : diff_bytes_sse2(a, b, map);
#else
  return diff_bytes_portable(a, b, map);
#endif
}

uint32_t diff_word_blocks(const uint8_t* a, const uint8_t* b, WordDiffMap* map) {
#if defined(__x86_64__)
  if (have_avx512()) return diff_word_blocks_avx512(a, b, map);
  if (have_avx2()) return diff_word_blocks_avx2(a, b, map);
#endif
  diff_words(a, b, map);
  return block_summary(*map);
}

uint32_t diff_word_blocks_with(CompareImpl impl, const uint8_t* a, const uint8_t* b,
                               WordDiffMap* map) {
#if defined(__x86_64__)
  if (impl == CompareImpl::kAvx512) return diff_word_blocks_avx512(a, b, map);
  if (impl == CompareImpl::kAvx2) return diff_word_blocks_avx2(a, b, map);
#endif
  diff_words_with(impl, a, b, map);
  return block_summary(*map);
}

bool compare_impl_available(CompareImpl impl) {
  switch (impl) {
    case CompareImpl::kPortable:
      return true;
#if defined(__x86_64__)
    case CompareImpl::kSse2:
      return true;
    case CompareImpl::kAvx2:
      return have_avx2();
    case CompareImpl::kAvx512:
      return have_avx512();
#else
    case CompareImpl::kSse2:
    case CompareImpl::kAvx2:
    case CompareImpl::kAvx512:
      return false;
#endif
  }
  return false;
}

bool diff_words_with(CompareImpl impl, const uint8_t* a, const uint8_t* b, WordDiffMap* map) {
#if defined(__x86_64__)
  if (impl == CompareImpl::kAvx512) return diff_words_avx512(a, b, map);
  if (impl == CompareImpl::kAvx2) return diff_words_avx2(a, b, map);
  if (impl == CompareImpl::kSse2) return diff_words_sse2(a, b, map);
#endif
  (void)impl;
  return diff_words_portable(a, b, map);
}

bool diff_bytes_with(CompareImpl impl, const uint8_t* a, const uint8_t* b, ByteDiffMap* map) {
#if defined(__x86_64__)
  if (impl == CompareImpl::kAvx512) return diff_bytes_avx512(a, b, map);
  if (impl == CompareImpl::kAvx2) return diff_bytes_avx2(a, b, map);
  if (impl == CompareImpl::kSse2) return diff_bytes_sse2(a, b, map);
#endif
  (void)impl;
  return diff_bytes_portable(a, b, map);
}

namespace {

#if defined(__x86_64__)
// 128 bytes per step: four 32-byte XORs ORed together, one test per step.
#define ROMULUS_LD256(p) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
__attribute__((target("avx2"))) bool pages_equal_avx2(const uint8_t* a, const uint8_t* b) {
  for (size_t off = 0; off < kPageSize; off += 128) {
    const __m256i x0 = _mm256_xor_si256(ROMULUS_LD256(a + off), ROMULUS_LD256(b + off));
    const __m256i x1 = _mm256_xor_si256(ROMULUS_LD256(a + off + 32), ROMULUS_LD256(b + off + 32));
    const __m256i x2 = _mm256_xor_si256(ROMULUS_LD256(a + off + 64), ROMULUS_LD256(b + off + 64));
    const __m256i x3 = _mm256_xor_si256(ROMULUS_LD256(a + off + 96), ROMULUS_LD256(b + off + 96));
    const __m256i any = _mm256_or_si256(_mm256_or_si256(x0, x1), _mm256_or_si256(x2, x3));
    if (!_mm256_testz_si256(any, any)) return false;
  }
  return true;
}
#undef ROMULUS_LD256
#endif

bool pages_equal_memcmp(const uint8_t* a, const uint8_t* b) {
  return std::memcmp(a, b, kPageSize) == 0;
}

using PagesEqualFn = bool (*)(const uint8_t*, const uint8_t*);

PagesEqualFn pick_pages_equal() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return &pages_equal_avx2;
#endif
  return &pages_equal_memcmp;
}

}  // namespace

bool pages_equal(const uint8_t* a, const uint8_t* b) {
  static const PagesEqualFn equal = pick_pages_equal();
  return equal(a, b);
}

bool is_zero_page(const uint8_t* page) {
  // OR 64-byte blocks together (the compiler vectorises the word loop), checking
  // each block so a non-zero page usually exits early.
  for (size_t off = 0; off < kPageSize; off += 64) {
    uint64_t w[8];
    std::memcpy(w, page + off, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  return true;
}

}  // namespace romulus::protocol
