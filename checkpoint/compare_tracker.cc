#include "checkpoint/compare_tracker.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "protocol/page_compare.h"

namespace romulus::checkpoint {

namespace {

constexpr size_t kPage = 4096;

}  // namespace

Result<std::unique_ptr<CompareTracker>> CompareTracker::create(const uint8_t* arena_mapping,
                                                               size_t arena_bytes, bool baseline) {
  if (arena_mapping == nullptr || arena_bytes == 0 || arena_bytes % kPage != 0) {
    return Status::invalid_argument("compare tracker: arena size not a multiple of 4096");
  }
  void* p = mmap(nullptr, arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Status::from_errno("compare tracker: mmap shadow", errno);
  auto* shadow = static_cast<uint8_t*>(p);
  if (baseline) std::memcpy(shadow, arena_mapping, arena_bytes);
  return std::unique_ptr<CompareTracker>(new CompareTracker(arena_mapping, shadow, arena_bytes));
}

CompareTracker::~CompareTracker() { munmap(shadow_, bytes_); }

Status CompareTracker::collect(std::vector<uint64_t>& pfns) {
  const size_t pages = bytes_ / kPage;
  for (size_t pfn = 0; pfn < pages; ++pfn) {
    const uint8_t* a = arena_ + pfn * kPage;
    uint8_t* s = shadow_ + pfn * kPage;
    if (!protocol::pages_equal(a, s)) {
      std::memcpy(s, a, kPage);
      pfns.push_back(pfn);
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<DirtyTracker>> make_compare_tracker(const uint8_t* arena_mapping,
                                                           size_t arena_bytes, bool baseline) {
  auto t = CompareTracker::create(arena_mapping, arena_bytes, baseline);
  if (!t.is_ok()) return t.status();
  return std::unique_ptr<DirtyTracker>(std::move(t).value());
}

}  // namespace romulus::checkpoint
