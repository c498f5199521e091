// PageBuffer: whole pages of memory that start on a page boundary.
//
// Page data that is compared or copied with vector loads must be page-aligned:
// a std::vector or `new uint8_t[]` of a few MiB comes from glibc's mmap path
// and starts 16 bytes past a page boundary, so every other 32-byte load splits
// a cache line (docs/performance.md, "Codecs"). The page cache's slots, the
// benchmarks' working sets and the backup's checkpoint slots use this type, so
// what the benchmark measures is what production runs.
//
// A value type (owning, movable); not zero-filled.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "protocol/page.h"

namespace romulus::protocol {

struct PageBufferFree {
  void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{kPageSize}); }
};
using PageBuffer = std::unique_ptr<uint8_t[], PageBufferFree>;

// `pages` pages (pages * kPageSize bytes), aligned to kPageSize. Throws
// std::bad_alloc like new. pages == 0 gives an empty buffer.
inline PageBuffer allocate_pages(size_t pages) {
  if (pages == 0) return PageBuffer();
  return PageBuffer(
      static_cast<uint8_t*>(::operator new[](pages* kPageSize, std::align_val_t{kPageSize})));
}

}  // namespace romulus::protocol
