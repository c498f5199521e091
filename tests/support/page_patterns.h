// Pages that look like real memory, and the ways tests and benchmarks change
// them between two checkpoints. Header-only; used by tests/protocol/*_test.cc
// and bench/codec_bench.cc.
//
// A realistic page is one of: all zeros (untouched heap), ASCII text (strings,
// logs), pointer-rich structs (8-byte values sharing their high bits, plus small
// fields), small integers (counters, lengths). A Change mutates a page the way
// one epoch of a guest does: sparse (one byte in every KiB), clustered (one
// 256-byte region), dense (half the bytes, at random), or not at all. Every
// changed byte really changes (it is XORed with a non-zero value).
//
// Randomness is an explicit std::mt19937_64, seeded by the caller; test_seed()
// gives a fresh seed unless ROMULUS_TEST_SEED pins one, and tests print it.
// Thread-compatible: no shared state.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string_view>
#include <vector>

namespace romulus::testing {

inline constexpr size_t kTestPageSize = 4096;
using PageBytes = std::array<uint8_t, kTestPageSize>;

// ROMULUS_TEST_SEED if set, else a random seed. Print it (SCOPED_TRACE) so a
// failure can be replayed.
inline uint64_t test_seed() {
  if (const char* s = std::getenv("ROMULUS_TEST_SEED"); s != nullptr && *s != '\0') {
    return std::strtoull(s, nullptr, 0);
  }
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

enum class PageKind { kZero, kText, kPointers, kSmallInts };
enum class Change { kUnchanged, kSparse, kClustered, kDense };

inline std::string_view change_name(Change c) {
  switch (c) {
    case Change::kUnchanged:
      return "unchanged";
    case Change::kSparse:
      return "sparse";
    case Change::kClustered:
      return "clustered";
    case Change::kDense:
      return "dense";
  }
  return "?";
}

// The kind of the i-th page of a working set: a quarter each, interleaved the
// way a heap mixes them.
inline PageKind kind_for_index(size_t i) {
  static constexpr PageKind kMix[8] = {
      PageKind::kPointers, PageKind::kText,      PageKind::kZero, PageKind::kSmallInts,
      PageKind::kPointers, PageKind::kSmallInts, PageKind::kText, PageKind::kZero};
  return kMix[i % 8];
}

inline void fill_page(uint8_t* page, PageKind kind, std::mt19937_64& rng) {
  switch (kind) {
    case PageKind::kZero:
      std::memset(page, 0, kTestPageSize);
      return;
    case PageKind::kText: {
      static constexpr std::string_view kWords[] = {
          "the ",  "checkpoint ", "epoch ",   "replica ", "GET /index.html ",
          "key=",  "value ",      "200 OK\n", "session ", "user42 ",
          "INFO ", "commit ",     "primary ", "backup "};
      size_t pos = 0;
      while (pos < kTestPageSize) {
        const std::string_view w = kWords[rng() % std::size(kWords)];
        const size_t n = std::min(w.size(), kTestPageSize - pos);
        std::memcpy(page + pos, w.data(), n);
        pos += n;
      }
      return;
    }
    case PageKind::kPointers: {
      // 32-byte structs: two pointers into one heap region, a length, a flag word.
      const uint64_t heap = 0x00007f3a00000000ull + ((rng() & 0xffff) << 12);
      for (size_t off = 0; off < kTestPageSize; off += 32) {
        const uint64_t fields[4] = {heap + (rng() & 0xfffff) * 16, heap + (rng() & 0xfffff) * 16,
                                    rng() % 1500, (rng() & 1) ? 0x1ull : 0x0ull};
        std::memcpy(page + off, fields, 32);
      }
      return;
    }
    case PageKind::kSmallInts:
      for (size_t off = 0; off < kTestPageSize; off += 4) {
        const uint32_t v = static_cast<uint32_t>(rng() % 1000);
        std::memcpy(page + off, &v, 4);
      }
      return;
  }
}

inline uint8_t nonzero_byte(std::mt19937_64& rng) { return static_cast<uint8_t>(1 + rng() % 255); }

// Changes `page` in place as one epoch of a guest would.
inline void apply_change(uint8_t* page, Change change, std::mt19937_64& rng) {
  switch (change) {
    case Change::kUnchanged:
      return;
    case Change::kSparse:
      for (size_t kib = 0; kib < kTestPageSize; kib += 1024)
        page[kib + rng() % 1024] ^= nonzero_byte(rng);
      return;
    case Change::kClustered: {
      const size_t start = rng() % (kTestPageSize - 256 + 1);
      for (size_t i = 0; i < 256; ++i) page[start + i] ^= nonzero_byte(rng);
      return;
    }
    case Change::kDense:
      for (size_t i = 0; i < kTestPageSize; ++i) {
        if (rng() & 1) page[i] ^= nonzero_byte(rng);
      }
      return;
  }
}

// A working set of `pages` realistic pages (kind_for_index), contiguous.
inline std::vector<uint8_t> make_working_set(size_t pages, std::mt19937_64& rng) {
  std::vector<uint8_t> v(pages * kTestPageSize);
  for (size_t i = 0; i < pages; ++i)
    fill_page(v.data() + i * kTestPageSize, kind_for_index(i), rng);
  return v;
}

}  // namespace romulus::testing
