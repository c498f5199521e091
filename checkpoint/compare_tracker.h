// CompareTracker: dirty pages found by comparing the arena with a shadow copy
// (see dirty_tracker.h). Works on any kernel.
//
// The shadow is a private anonymous mapping as large as the arena, filled from the
// arena at creation. collect() compares each page (AVX2 when the CPU has it, else
// SSE2), and for each page that differs copies arena -> shadow and reports it; the
// shadow page is then what the caller sends (page_source), so a write racing with
// the copy is seen again by the next collect(). Only collect() writes the shadow,
// so a reported page stays as sent until the next collect() (the engine encodes
// from it after the guest resumes, possibly on several encoder threads, and calls
// collect() again only once that is done). Owned and called by one thread.
#pragma once

#include <memory>
#include <vector>

#include "checkpoint/dirty_tracker.h"

namespace romulus::checkpoint {

class CompareTracker final : public DirtyTracker {
 public:
  // `baseline`: the shadow starts as a copy of the arena (else zero; see
  // make_compare_tracker()).
  static Result<std::unique_ptr<CompareTracker>> create(const uint8_t* arena_mapping,
                                                        size_t arena_bytes, bool baseline = true);
  ~CompareTracker() override;

  std::string_view name() const override { return "compare"; }
  Status collect(std::vector<uint64_t>& pfns) override;
  const uint8_t* page_source(uint64_t pfn) const override { return shadow_ + pfn * 4096; }
  bool pages_stable_until_next_collect() const override { return true; }

 private:
  CompareTracker(const uint8_t* arena, uint8_t* shadow, size_t bytes)
      : arena_(arena), shadow_(shadow), bytes_(bytes) {}

  const uint8_t* arena_;
  uint8_t* shadow_;
  size_t bytes_;
};

}  // namespace romulus::checkpoint
