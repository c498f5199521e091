// The settings `romulus set` changes at run time, and their ranges, each
// written once. kRunTimeSettings names them for the primary's reply to an
// unknown name and for `romulus set --help` (from which dist/generate.py writes
// the man page's SETTINGS and the shell completion's names and values). The
// ranges: `romulus primary --interval` at start-up and `romulus set
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
// --min-gap, `set min-gap`: the shortest time from the end of a pause to the
// next while the guest is runnable (commit_trigger.h).
inline constexpr DurationRange kMinGapRange{"min-gap", std::chrono::microseconds(0),
                                            std::chrono::seconds(1)};
// --max-stopped-fraction, `set max-stopped-fraction`.
inline constexpr FractionRange kMaxStoppedFractionRange{"max-stopped-fraction", 0.01, 1.0};

// One `romulus set NAME VALUE`: what VALUE is (a placeholder, or the choices
// a|b|c, checked against the enum's names table by tests/cli) and what it
// changes; a range is printed after it.
struct RunTimeSetting {
  std::string_view name;
  std::string_view value;
  std::string_view what;
  const DurationRange* duration = nullptr;
  const FractionRange* fraction = nullptr;
  // Answered by the process (replica/takeover.cc) on either role, not by the primary.
  bool process = false;
};

inline constexpr RunTimeSetting kRunTimeSettings[] = {
    {"interval", "DURATION", "the checkpoint interval", &kIntervalRange},
    {"commit", "eager|interval", "when checkpoints start"},
    {"min-gap", "DURATION",
     "eager: shortest time from the end of a pause to the next while the guest is runnable",
     &kMinGapRange},
    {"max-stopped-fraction", "FRACTION",
     "eager: the largest fraction of time pauses may stop a runnable guest", nullptr,
     &kMaxStoppedFractionRange},
    {"cache", "SIZE", "the sender page cache"},
    {"codec", "runskip|xbzrle|none", "the page codec of the next checkpoints"},
    {"on-backup-loss", "continue|stall", "what the primary does without a backup"},
    {"backup", "ADDR:PORT",
     "protect to another backup: the current one is dropped (it does not take over)"},
    {"tls", "reload",
     "either role: re-read the TLS files (--tls-*, --witness-*) for new connections; as SIGHUP "
     "does",
     nullptr, nullptr, true},
};

// What the setting changes, with its range: "the checkpoint interval (1ms to 60s)".
inline std::string describe(const RunTimeSetting& s) {
  if (s.duration != nullptr)
    return fmt::format("{} ({} to {})", s.what, common::duration_text(s.duration->min),
                       common::duration_text(s.duration->max));
  if (s.fraction != nullptr)
    return fmt::format("{} ({} to {})", s.what, s.fraction->min, s.fraction->max);
  return std::string(s.what);
}

// "interval, commit, ...": the names a running primary answers.
inline std::string primary_setting_names() {
  std::string out;
  for (const auto& s : kRunTimeSettings) {
    if (s.process) continue;
    if (!out.empty()) out += ", ";
    out += s.name;
  }
  return out;
}

}  // namespace romulus::checkpoint
