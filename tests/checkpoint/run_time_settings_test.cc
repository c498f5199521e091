// The run-time settings' table: each entry reads what an operator types into
// its typed field (the same reader at start-up and for `romulus set`), writes
// it back, and refuses the rest with words that start with its name (the CLI
// puts "--" before them). A running primary answers `set` through the same
// entries.
#include "checkpoint/run_time_settings.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/primary.h"
#include "tests/support/status_matchers.h"

namespace romulus::checkpoint::run_time_settings_test {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RunTimeSettings, BoundsAreInclusiveAndTheErrorSaysThem) {
  EXPECT_OK(kIntervalRange.check(milliseconds(1)));
  EXPECT_OK(kIntervalRange.check(seconds(60)));
  EXPECT_EQ(kIntervalRange.check(microseconds(999)).message(),
            "interval must be between 1ms and 60s");
  EXPECT_FALSE(kIntervalRange.check(seconds(61)).is_ok());
  EXPECT_OK(kMinGapRange.check(microseconds(0)));
  EXPECT_OK(kMinGapRange.check(seconds(1)));
  EXPECT_EQ(kMinGapRange.check(seconds(60)).message(), "min-gap must be between 0 and 1s")
      << "start-up and `set` agree: at most 1 s";
  EXPECT_FALSE(kMinGapRange.check(microseconds(-1)).is_ok());
  EXPECT_OK(kMaxStoppedFractionRange.check(0.01));
  EXPECT_OK(kMaxStoppedFractionRange.check(1.0));
  EXPECT_EQ(kMaxStoppedFractionRange.check(0.0).message(),
            "max-stopped-fraction must be between 0.01 and 1");
  EXPECT_FALSE(kMaxStoppedFractionRange.check(std::nan("")).is_ok());
}

const RunTimeSetting& entry(std::string_view name) {
  const RunTimeSetting* s = find_run_time_setting(name);
  EXPECT_NE(s, nullptr) << name;
  return *s;
}

// The entry's reading of `text`, written back ("" and the error if refused).
std::pair<std::string, std::string> read(std::string_view name, std::string_view text) {
  const RunTimeSetting& s = entry(name);
  PrimaryConfig c;
  Status st = s.parse(text, c);
  if (!st.is_ok()) return {"", st.message()};
  return {s.text(c), ""};
}

// Good text, and what the entry writes back: one or more per setting the
// primary answers (a new entry must add its own here).
const std::multimap<std::string_view, std::pair<std::string, std::string>> kGood = {
    {"interval", {"25ms", "25ms"}},
    {"interval", {"1.5s", "1500ms"}},
    {"interval", {"60s", "60s"}},
    {"interval", {"2500us", "2500us"}},
    {"interval", {"40", "40ms"}},  // a bare number is milliseconds, as at start-up
    {"commit", {"eager", "eager"}},
    {"commit", {"Interval", "interval"}},
    {"min-gap", {"0", "0"}},
    {"min-gap", {"500us", "500us"}},
    {"min-gap", {"1s", "1s"}},
    {"max-stopped-fraction", {"0.5", "0.5"}},
    {"max-stopped-fraction", {"1", "1"}},
    {"max-stopped-fraction", {"5e-2", "0.05"}},
    {"cache", {"128M", "128M"}},
    {"cache", {"64MiB", "64M"}},
    {"cache", {"0", "0"}},
    {"cache", {"4096", "4K"}},  // a bare number is bytes
    {"codec", {"xbzrle", "xbzrle"}},
    {"codec", {"none", "none"}},
    {"on-backup-loss", {"stall", "stall"}},
    {"backup", {"[::1]:7000", "[::1]:7000"}},
    {"backup", {"node-b:7000", "node-b:7000"}},
};

TEST(RunTimeSettings, EachEntryReadsWhatAnOperatorTypesIntoItsField) {
  std::set<std::string_view> covered;
  for (const auto& [name, sample] : kGood) {
    SCOPED_TRACE(std::string(name) + " " + sample.first);
    EXPECT_EQ(read(name, sample.first), std::make_pair(sample.second, std::string()));
    covered.insert(name);
  }
  for (const auto& s : run_time_settings()) {
    if (!s.process) {
      EXPECT_TRUE(covered.count(s.name)) << s.name << " has no good sample";
    }
  }
}

TEST(RunTimeSettings, TheFieldsOtherSettingsLeaveAlone) {
  PrimaryConfig c;
  ASSERT_OK(entry("interval").parse("25ms", c));
  const PrimaryConfig d;
  EXPECT_EQ(c.engine.interval, milliseconds(25));
  EXPECT_EQ(c.engine.min_gap, d.engine.min_gap);
  EXPECT_EQ(c.engine.cache_bytes, d.engine.cache_bytes);
  EXPECT_EQ(c.on_backup_loss, d.on_backup_loss);
}

TEST(RunTimeSettings, ABareDurationTravelsWithItsUnitAndAnOlderCliStillMeansMicroseconds) {
  const RunTimeSetting& interval = entry("interval");
  // This CLI: `set interval 25` means 25 ms, as `--interval 25` does.
  EXPECT_EQ(value_to_send(interval, "25"), "25ms");
  EXPECT_EQ(value_to_send(interval, "25ms"), "25ms");
  EXPECT_EQ(value_to_send(interval, "banana"), "banana");  // refused by the node, in its words
  PrimaryConfig c;
  ASSERT_OK(interval.parse(value_received(interval, value_to_send(interval, "25")), c));
  EXPECT_EQ(c.engine.interval, milliseconds(25));
  // An older CLI sent whole microseconds: still 25 ms, never 25 s.
  ASSERT_OK(interval.parse(value_received(interval, "25000"), c));
  EXPECT_EQ(c.engine.interval, milliseconds(25));
  ASSERT_OK(entry("min-gap").parse(value_received(entry("min-gap"), "500"), c));
  EXPECT_EQ(c.engine.min_gap, std::chrono::microseconds(500));
  // Sizes were bytes and still are; other values travel as typed.
  EXPECT_EQ(value_to_send(entry("cache"), "1048576"), "1048576");
  EXPECT_EQ(value_received(entry("cache"), "1048576"), "1048576");
  EXPECT_EQ(value_to_send(entry("max-stopped-fraction"), "0.5"), "0.5");
  EXPECT_EQ(value_received(entry("max-stopped-fraction"), "0.5"), "0.5");
}

// Bad text, and the words of the refusal (which start with the name).
const std::multimap<std::string_view, std::pair<std::string, std::string>> kBad = {
    {"interval", {"banana", "interval 'banana' is not a duration (try 50ms)"}},
    {"interval", {"5parsecs", "interval '5parsecs': unknown unit 'parsecs' (use us, ms, s)"}},
    {"interval", {"0ms", "interval must be between 1ms and 60s"}},
    {"interval", {"61s", "interval must be between 1ms and 60s"}},
    {"interval", {"", "interval '' is not a duration (try 50ms)"}},
    {"commit", {"sometimes", "commit 'sometimes': use eager or interval"}},
    {"min-gap", {"2s", "min-gap must be between 0 and 1s"}},
    {"min-gap", {"-1ms", "min-gap '-1ms' is not a duration (try 50ms)"}},
    {"max-stopped-fraction", {"half", "max-stopped-fraction 'half' is not a number"}},
    {"max-stopped-fraction", {"0.5x", "max-stopped-fraction '0.5x' is not a number"}},
    {"max-stopped-fraction", {"0", "max-stopped-fraction must be between 0.01 and 1"}},
    {"max-stopped-fraction", {"nan", "max-stopped-fraction must be between 0.01 and 1"}},
    {"cache", {"lots", "cache 'lots' is not a size (try 256M)"}},
    {"cache", {"64parsecs", "cache '64parsecs': unknown unit 'parsecs' (use K, M, G)"}},
    {"cache", {"1234567890123456", "cache '1234567890123456' is not a size (try 256M)"}},
    {"codec", {"gzip", "codec 'gzip': use runskip, xbzrle or none"}},
    {"on-backup-loss", {"panic", "on-backup-loss 'panic': use continue or stall"}},
    {"backup", {"node-b", "backup 'node-b' is not ADDR:PORT (e.g. 127.0.0.1:7000, [::1]:7000)"}},
};

TEST(RunTimeSettings, EachEntryRefusesBadTextInWordsThatStartWithItsName) {
  std::set<std::string_view> covered;
  for (const auto& [name, sample] : kBad) {
    SCOPED_TRACE(std::string(name) + " " + sample.first);
    const auto [written, error] = read(name, sample.first);
    EXPECT_EQ(written, "");
    EXPECT_EQ(error, sample.second);
    EXPECT_EQ(error.rfind(std::string(name) + " ", 0), 0u) << error;
    covered.insert(name);
  }
  for (const auto& s : run_time_settings()) {
    if (!s.process) {
      EXPECT_TRUE(covered.count(s.name)) << s.name << " has no bad sample";
    }
  }
}

TEST(RunTimeSettings, WhatAnEntryWritesReadsBackToTheSameValue) {
  const PrimaryConfig defaults;
  for (const auto& s : run_time_settings()) {
    if (s.process || !s.startup) continue;  // `backup` has no default to write
    SCOPED_TRACE(std::string(s.name));
    const std::string text = s.text(defaults);
    EXPECT_EQ(read(s.name, text), std::make_pair(text, std::string()));
  }
}

TEST(RunTimeSettings, EachEntryIsAppliedOneWayAndNamedOnce) {
  std::set<std::string_view> names;
  std::string primary_names;
  for (const auto& s : run_time_settings()) {
    SCOPED_TRACE(std::string(s.name));
    EXPECT_TRUE(names.insert(s.name).second) << "named twice";
    EXPECT_FALSE(s.value.empty());
    EXPECT_FALSE(s.what.empty());
    if (s.process) {
      EXPECT_EQ(s.parse, nullptr);
      EXPECT_EQ(s.to_engine, nullptr);
      EXPECT_EQ(s.to_primary, nullptr);
      EXPECT_FALSE(s.startup);
      continue;
    }
    EXPECT_NE(s.parse, nullptr);
    EXPECT_NE(s.text, nullptr);
    EXPECT_NE(s.to_engine == nullptr, s.to_primary == nullptr) << "exactly one way to apply it";
    if (!primary_names.empty()) primary_names += ", ";
    primary_names += s.name;
  }
  EXPECT_EQ(primary_setting_names(), primary_names);
  EXPECT_EQ(find_run_time_setting("warp"), nullptr);
}

TEST(RunTimeSettings, DescribeAddsTheRange) {
  EXPECT_EQ(describe(entry("interval")), "the checkpoint interval (1ms to 60s)");
  EXPECT_EQ(describe(entry("max-stopped-fraction")),
            std::string(entry("max-stopped-fraction").what) + " (0.01 to 1)");
  EXPECT_EQ(describe(entry("cache")), entry("cache").what);
}

// A primary that has not started its guest: `set` answers through the table.
struct IdlePrimary {
  std::vector<std::string> lines;
  PrimaryNode node{[] {
                     PrimaryConfig c;
                     c.backup = common::Endpoint{"127.0.0.1", 7000};
                     return c;
                   }(),
                   [this](const std::string& line) { lines.push_back(line); }};

  // The reply's error, or "" if it was ok.
  std::string error_of(const std::string& request) {
    const auto reply = boost::json::parse(node.handle_control(request)).as_object();
    if (reply.at("ok").as_bool()) return "";
    return std::string(reply.at("error").as_string());
  }
};

TEST(RunTimeSettings, APrimaryRefusesWhatTheEntryRefusesWithTheSameWords) {
  IdlePrimary p;
  for (const auto& [name, sample] : kBad) {
    const RunTimeSetting& s = entry(name);
    if (s.to_engine != nullptr) continue;  // refused before the guest runs (below)
    SCOPED_TRACE(std::string(name) + " " + sample.first);
    EXPECT_EQ(p.error_of(fmt::format("set {} {}", name, sample.first)), sample.second);
  }
  EXPECT_EQ(p.error_of("set interval 25ms"), "the guest is not running yet; try again in a moment");
  EXPECT_EQ(p.error_of("set warp 9"),
            fmt::format("unknown setting 'warp' ({})", primary_setting_names()));
  EXPECT_EQ(p.error_of("set tls reload"),
            fmt::format("unknown setting 'tls' ({})", primary_setting_names()))
      << "the process answers it before the primary sees it";
  EXPECT_EQ(p.error_of("set interval"), "usage: set NAME VALUE");
}

TEST(RunTimeSettings, APrimaryAppliesALinkSettingBeforeItsGuestRunsAndLogsIt) {
  IdlePrimary p;
  EXPECT_EQ(p.error_of("set on-backup-loss Stall"), "");
  EXPECT_EQ(p.node.status().at("on_backup_loss").as_string(), "stall");
  EXPECT_EQ(p.error_of("set backup 127.0.0.1:7001"), "");
  EXPECT_EQ(p.node.status().at("peer").as_string(), "127.0.0.1:7001");
  EXPECT_EQ(p.lines, (std::vector<std::string>{"on-backup-loss set to stall",
                                               "backup set to 127.0.0.1:7001"}));
}

}  // namespace
}  // namespace romulus::checkpoint::run_time_settings_test
