#include "checkpoint/compare_tracker.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "checkpoint/arena.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace romulus::checkpoint {

namespace {

constexpr size_t kPage = 4096;

#if defined(__x86_64__)
#define ROMULUS_LD256(p) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
// 128 bytes per step: four 32-byte XORs ORed together, one test per step.
__attribute__((target("avx2"))) bool pages_equal_avx2(const uint8_t* a, const uint8_t* b) {
  for (size_t off = 0; off < kPage; off += 128) {
    __m256i x0 = _mm256_xor_si256(ROMULUS_LD256(a + off), ROMULUS_LD256(b + off));
    __m256i x1 = _mm256_xor_si256(ROMULUS_LD256(a + off + 32), ROMULUS_LD256(b + off + 32));
    __m256i x2 = _mm256_xor_si256(ROMULUS_LD256(a + off + 64), ROMULUS_LD256(b + off + 64));
    __m256i x3 = _mm256_xor_si256(ROMULUS_LD256(a + off + 96), ROMULUS_LD256(b + off + 96));
    __m256i any = _mm256_or_si256(_mm256_or_si256(x0, x1), _mm256_or_si256(x2, x3));
    if (!_mm256_testz_si256(any, any)) return false;
  }
  return true;
}
#undef ROMULUS_LD256
#endif

using PagesEqualFn = bool (*)(const uint8_t*, const uint8_t*);

PagesEqualFn pick_pages_equal() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return &pages_equal_avx2;
#endif
  return &pages_equal;
}

}  // namespace

Result<std::unique_ptr<CompareTracker>> CompareTracker::create(const uint8_t* arena_mapping,
                                                               size_t arena_bytes) {
  if (arena_mapping == nullptr || arena_bytes == 0 || arena_bytes % kPage != 0) {
    return Status::invalid_argument("compare tracker: arena size not a multiple of 4096");
  }
  void* p = mmap(nullptr, arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Status::from_errno("compare tracker: mmap shadow", errno);
  auto* shadow = static_cast<uint8_t*>(p);
  std::memcpy(shadow, arena_mapping, arena_bytes);
  return std::unique_ptr<CompareTracker>(new CompareTracker(arena_mapping, shadow, arena_bytes));
}

CompareTracker::~CompareTracker() { munmap(shadow_, bytes_); }

Status CompareTracker::collect(std::vector<uint64_t>& pfns) {
  static const PagesEqualFn equal = pick_pages_equal();
  const size_t pages = bytes_ / kPage;
  for (size_t pfn = 0; pfn < pages; ++pfn) {
    const uint8_t* a = arena_ + pfn * kPage;
    uint8_t* s = shadow_ + pfn * kPage;
    if (!equal(a, s)) {
      std::memcpy(s, a, kPage);
      pfns.push_back(pfn);
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<DirtyTracker>> make_compare_tracker(const uint8_t* arena_mapping,
                                                           size_t arena_bytes) {
  auto t = CompareTracker::create(arena_mapping, arena_bytes);
  if (!t.is_ok()) return t.status();
  return std::unique_ptr<DirtyTracker>(std::move(t).value());
}

}  // namespace romulus::checkpoint
