// The settings `romulus set NAME VALUE` changes on a running primary, one
// entry each in one table (kRunTimeSettings): its name, what its value looks
// like, what it is, how the operator's text is read into its typed field of a
// PrimaryConfig (with its range), how that field is written back, and how it
// is applied to a running primary. Everything that names these settings reads
// the table:
//
//   `romulus primary --NAME VALUE`  cli/options.cc: the option, its help
//                                   ("what (default X)") and its parse
//   `romulus set NAME VALUE`        the CLI sends the operator's text; the
//                                   primary (PrimaryNode::set) parses it with
//                                   the same entry, applies it, logs
//                                   "NAME set to VALUE"
//   `romulus set --help`            "NAME VALUE   what (range)", from which
//                                   dist/generate.py writes the man page's
//                                   SETTINGS and the shell completion
//   an unknown name                 the primary's reply lists the names
//
// So start-up and `set` accept the same values and refuse the rest with the
// same words ("interval must be between 1ms and 60s"; the CLI puts "--"
// before the name of an option). A new run-time setting is one entry here
// (with its field in EngineSettings or PrimaryConfig and, for the engine, its
// setter). Constant tables and pure functions; any thread.
#pragma once

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/status.h"
#include "common/units.h"

namespace romulus::checkpoint {

class EpochEngine;
class PrimaryNode;
struct EngineSettings;
struct PrimaryConfig;

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

struct RunTimeSetting {
  std::string_view name;
  // What VALUE is: a placeholder (DURATION, SIZE, FRACTION, ADDR:PORT) or the
  // choices a|b|c (its enum's names table, checked by tests/cli).
  std::string_view value;
  // What it is: the start-up option's help adds "(default X)" (and puts the
  // choices before it), `set --help` the range.
  std::string_view what;
  // The operator's text into the setting's field of `into`, range checked;
  // every error starts with the name. Null for `tls`.
  Status (*parse)(std::string_view text, PrimaryConfig& into) = nullptr;
  // That field as an operator types it (the start-up help's default, the log
  // line of a change).
  std::string (*text)(const PrimaryConfig& from) = nullptr;
  // The log line's value when it is not `text` ("25.0 ms" for a duration).
  std::string (*logged)(const PrimaryConfig& from) = nullptr;
  // How a running primary takes the parsed field: a setting of the engine
  // (refused until the guest runs), or one the primary keeps (its link: any
  // time). At most one of the two; neither for a `process` setting.
  void (*to_engine)(EpochEngine& engine, const EngineSettings& from) = nullptr;
  void (*to_primary)(PrimaryNode& primary, const PrimaryConfig& from) = nullptr;
  // Its range, printed by `set --help` (the parse checks the same one).
  const DurationRange* duration = nullptr;
  const FractionRange* fraction = nullptr;
  // Read by cook() as the start-up option --NAME. False for `backup`, whose
  // start-up option also takes `null` and is required (cli/options.cc).
  bool startup = true;
  // Answered by the process (replica/link_security.cc) on either role, not by the primary.
  bool process = false;

  // "eager|interval" and the like: a list of choices rather than a placeholder.
  bool choices() const { return !value.empty() && value[0] >= 'a' && value[0] <= 'z'; }
};

// The table, in the order `set --help` and `primary --help` list it.
std::span<const RunTimeSetting> run_time_settings();
// The entry named `name`, or nullptr.
const RunTimeSetting* find_run_time_setting(std::string_view name);

// The control socket's `set NAME VALUE` carries the operator's text, except
// a duration typed as a bare number ("25", milliseconds as at start-up): the
// CLI sends it with its unit ("25ms"), because romulus before this table sent
// durations as bare whole microseconds, and a node reads a bare number for a
// duration as such (so an older CLI's `set interval 25000` still means 25 ms
// and never 25 s). Sizes were and are bare bytes or with a unit: unchanged.
std::string value_to_send(const RunTimeSetting& s, std::string_view typed);
std::string value_received(const RunTimeSetting& s, std::string_view sent);

// What the setting changes, with its range: "the checkpoint interval (1ms to 60s)".
std::string describe(const RunTimeSetting& s);

// "interval, commit, ...": the names a running primary answers.
std::string primary_setting_names();

}  // namespace romulus::checkpoint
