// Helpers shared by the storage tests: arenas and checkpoints made from a
// seed, so that a run can be repeated exactly, and a temporary directory for
// the tests that use the real file system. Header-only.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "protocol/page.h"

namespace romulus::storage::test_util {

using protocol::kPageSize;

// Fills one page: all zeros, a compressible pattern, or noise.
inline void fill_page(std::mt19937_64& rng, uint8_t* page) {
  switch (rng() % 4) {
    case 0:
      std::memset(page, 0, kPageSize);
      break;
    case 1: {
      const uint8_t v = static_cast<uint8_t>(rng());
      for (size_t i = 0; i < kPageSize; ++i) page[i] = static_cast<uint8_t>(v + i / 256);
      break;
    }
    default:
      for (size_t i = 0; i < kPageSize; i += 8) {
        const uint64_t x = rng();
        std::memcpy(page + i, &x, 8);
      }
  }
}

inline std::vector<uint8_t> random_arena(std::mt19937_64& rng, uint64_t pages) {
  std::vector<uint8_t> arena(pages * kPageSize);
  for (uint64_t p = 0; p < pages; ++p) fill_page(rng, arena.data() + p * kPageSize);
  return arena;
}

struct Checkpoint {
  uint64_t epoch = 0;
  std::vector<uint64_t> pfns;  // strictly increasing
  std::vector<uint8_t> pages;
};

// Up to max_pages distinct random pages of an arena of arena_pages.
inline Checkpoint random_checkpoint(std::mt19937_64& rng, uint64_t epoch, uint64_t arena_pages,
                                    size_t max_pages) {
  Checkpoint c;
  c.epoch = epoch;
  for (uint64_t p = 0; p < arena_pages && c.pfns.size() < max_pages; ++p) {
    if (rng() % arena_pages < max_pages) c.pfns.push_back(p);
  }
  c.pages.resize(c.pfns.size() * kPageSize);
  for (size_t i = 0; i < c.pfns.size(); ++i) fill_page(rng, c.pages.data() + i * kPageSize);
  return c;
}

inline void apply(std::vector<uint8_t>& arena, const Checkpoint& c) {
  for (size_t i = 0; i < c.pfns.size(); ++i) {
    std::memcpy(arena.data() + c.pfns[i] * kPageSize, c.pages.data() + i * kPageSize, kPageSize);
  }
}

// A fresh directory under TMPDIR, removed with its content on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "romulus-storage-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline uint64_t test_seed() {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

}  // namespace romulus::storage::test_util
