// The ranges of the primary's settings that `romulus set` changes at run time,
// each written once: `romulus primary --interval` at start-up and `romulus set
// interval` on a running node accept the same values and refuse the rest with
// the same words ("interval must be between 1ms and 60s"; the CLI puts "--"
// before the name of an option).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/status.h"
#include "common/units.h"

namespace romulus::checkpoint {

struct DurationRange {
  std::string_view name;
  std::chrono::microseconds min, max;

  Status check(std::chrono::microseconds value) const {
    if (value >= min && value <= max) return Status::ok();
    return Status::invalid_argument(fmt::format("{} must be between {} and {}", name,
                                                common::duration_text(min),
                                                common::duration_text(max)));
  }
};

struct FractionRange {
  std::string_view name;
  double min, max;

  Status check(double value) const {
    if (value >= min && value <= max) return Status::ok();  // false for NaN
    return Status::invalid_argument(fmt::format("{} must be between {} and {}", name, min, max));
  }
};

// --interval, `set interval`: the timer of --commit interval (and the longest
// wait under eager).
inline constexpr DurationRange kIntervalRange{"interval", std::chrono::milliseconds(1),
                                              std::chrono::seconds(60)};
// --min-gap, `set min-gap`: the shortest time from the end of a pause to the next.
inline constexpr DurationRange kMinGapRange{"min-gap", std::chrono::microseconds(0),
                                            std::chrono::seconds(1)};
// --max-stopped-fraction, `set max-stopped-fraction`.
inline constexpr FractionRange kMaxStoppedFractionRange{"max-stopped-fraction", 0.01, 1.0};

}  // namespace romulus::checkpoint
