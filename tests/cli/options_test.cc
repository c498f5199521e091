// The `romulus` command line, parsed as operators type it: the values each
// option lands as, the defaults, and a one-line error naming the option for
// each kind of mistake. Nothing here starts a node.
#include "cli/options.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "checkpoint/run_time_settings.h"
#include "tests/support/status_matchers.h"

namespace romulus::cli::options_test {
namespace {

Result<Command> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "romulus");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

// The error of a command line that must not parse ("" if it parsed).
std::string error_of(std::vector<std::string> args) {
  auto c = parse(std::move(args));
  return c.is_ok() ? "" : c.status().message();
}

NodeOptions primary(std::vector<std::string> options) {
  std::vector<std::string> args{"primary"};
  args.insert(args.end(), options.begin(), options.end());
  args.insert(args.end(), {"--", "romulus-kvstore"});
  auto c = parse(args);
  EXPECT_OK(c);
  if (!c.is_ok() || !std::holds_alternative<NodeOptions>(*c)) return {};
  return std::get<NodeOptions>(*c);
}

TEST(CliOptions, APrimaryGetsEveryOptionItWasGiven) {
  const NodeOptions o = primary({"--backup",   "[::1]:7000",
                                 "--service",  "127.0.0.1:6379",
                                 "--interval", "25ms",
                                 "--commit",   "Interval",
                                 "--min-gap",  "2ms",
                                 "--tracker",  "compare",
                                 "--codec",    "xbzrle",
                                 "--memory",   "64M",
                                 "--witness",  "etcd://10.0.0.5:2379,node-w:2379",
                                 "--pair",     "orders",
                                 "--metrics",  "127.0.0.1:9100"});
  ASSERT_TRUE(o.primary.backup);
  EXPECT_EQ(*o.primary.backup, (Endpoint{"::1", 7000}));
  EXPECT_EQ(*o.primary.service, (Endpoint{"127.0.0.1", 6379}));
  EXPECT_EQ(o.primary.engine.interval, std::chrono::milliseconds(25));
  EXPECT_EQ(o.primary.engine.commit, checkpoint::CommitMode::kInterval);
  EXPECT_EQ(o.primary.engine.min_gap, std::chrono::milliseconds(2));
  EXPECT_EQ(o.primary.tracker, checkpoint::TrackerKind::kCompare);
  EXPECT_EQ(o.primary.engine.encode.codec, protocol::CodecId::kXbzrle);
  EXPECT_EQ(o.primary.memory_bytes, 64ull << 20);
  EXPECT_FALSE(o.witness.url.tls);
  EXPECT_EQ(o.witness.url.to_string(), "etcd://10.0.0.5:2379,node-w:2379");
  EXPECT_EQ(o.witness.pair, "orders");
  EXPECT_EQ(*o.metrics, (Endpoint{"127.0.0.1", 9100}));
  EXPECT_EQ(o.primary.guest_command, std::vector<std::string>{"romulus-kvstore"});
}

TEST(CliOptions, DefaultsAreTheDocumentedOnes) {
  const NodeOptions o = primary({"--backup", "null"});
  EXPECT_TRUE(o.primary.backup_null);
  EXPECT_FALSE(o.primary.backup);
  EXPECT_FALSE(o.primary.output_buffering) << "--backup null has nothing to wait for";
  EXPECT_EQ(o.primary.engine.interval, std::chrono::milliseconds(50));
  EXPECT_EQ(o.primary.engine.commit, checkpoint::CommitMode::kEager);
  EXPECT_EQ(o.primary.tracker, checkpoint::TrackerKind::kAuto);
  EXPECT_EQ(o.primary.proxy_threads, 0u) << "sessions on the io thread that reads the acks";
  EXPECT_FALSE(o.witness.enabled());
  EXPECT_EQ(primary({"--backup", "null", "--proxy-threads", "3"}).primary.proxy_threads, 3u);
}

// Every field cook() sets, written out, to compare two parses.
std::string summary(const NodeOptions& n) {
  const auto& p = n.primary;
  const auto& e = p.engine;
  return fmt::format(
      "interval {} commit {} min_gap {} msf {} staging {} threads {} codec {} lz4 {} cache {} "
      "gate {} memory {} tracker {} heartbeat {} failover {} stats {} loss {} buffering {} "
      "proxy {} lease {}",
      e.interval.count(), static_cast<int>(e.commit), e.min_gap.count(), e.max_stopped_fraction,
      e.staging_bytes, e.encoder_threads, static_cast<int>(e.encode.codec),
      static_cast<int>(e.encode.lz4), e.cache_bytes, e.gate_timeout.count(), p.memory_bytes,
      static_cast<int>(p.tracker), p.heartbeat.count(), p.failover_timeout.count(),
      p.stats_period.count(), static_cast<int>(p.on_backup_loss), p.output_buffering,
      p.proxy_threads, n.witness.lease_ttl.count());
}

// `romulus ROLE --help`'s options, each one's wrapped lines joined into one.
std::vector<std::string> help_entries(const std::string& role) {
  auto h = parse({role, "--help"});
  EXPECT_OK(h);
  std::vector<std::string> entries;
  if (!h.is_ok()) return entries;
  std::istringstream lines(std::get<HelpCommand>(*h).text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  --", 0) == 0) {
      entries.push_back(line);
    } else if (!entries.empty() && line.rfind("    ", 0) == 0) {
      std::string& entry = entries.back();
      entry.erase(entry.find_last_not_of(' ') + 1);
      entry.append(1, ' ');
      entry.append(line, line.find_first_not_of(' '));
    }
  }
  return entries;
}

TEST(CliOptions, EachDefaultTheHelpPrintsIsTheDefaultItRunsWith) {
  // --help prints "(default X)" for each option with a default. Given back as
  // `--option X`, X must change nothing: the help and the typed defaults
  // cannot drift apart (they are one value, printed).
  // Boost wraps descriptions onto indented lines: help_entries() joins them.
  const std::vector<std::string> entries = help_entries("primary");
  const std::string base = summary(primary({"--backup", "[::1]:7000"}));
  const std::regex option(R"(^  --([a-z0-9-]+) arg\b.*\(default ([^ ():]+)[):])");
  int checked = 0;
  for (const std::string& entry : entries) {
    std::smatch m;
    if (!std::regex_search(entry, m, option)) continue;
    const std::string name = m[1], value = m[2];
    if (name == "node-id" || name == "tls-peer-name" || name == "metrics") continue;
    if (name == "durable" || name == "disk-backlog") continue;  // need --data-dir (below)
    SCOPED_TRACE("--" + name + " " + value);
    EXPECT_EQ(summary(primary({"--backup", "[::1]:7000", "--" + name, value})), base);
    ++checked;
  }
  EXPECT_GE(checked, 18) << "fewer defaults found in --help than the options that have one";
}

TEST(CliOptions, DurableOptionsNeedADataDirAndReachBothRoles) {
  EXPECT_EQ(error_of({"primary", "--backup", "[::1]:7000", "--durable", "async", "--",
                      "romulus-kvstore"}),
            "--durable needs --data-dir DIR");
  EXPECT_EQ(
      error_of({"backup", "--listen", "[::1]:7000", "--force-data-dir", "--", "romulus-kvstore"}),
      "--force-data-dir needs --data-dir DIR");
  EXPECT_EQ(error_of({"backup", "--listen", "[::1]:7000", "--data-dir", "/d", "--durable",
                      "eventually", "--", "romulus-kvstore"}),
            "--durable 'eventually': use sync or async");
  auto c = parse({"backup", "--listen", "[::1]:7000", "--data-dir", "/var/lib/romulus/kv",
                  "--durable", "async", "--force-data-dir", "--", "romulus-kvstore"});
  ASSERT_OK(c);
  const auto& d = std::get<BackupOptions>(*c).node.primary.durable;
  EXPECT_EQ(d.data_dir, "/var/lib/romulus/kv");
  EXPECT_EQ(d.mode, storage::DurableMode::kAsync);
  EXPECT_TRUE(d.force);
  EXPECT_EQ(d.max_backlog_bytes, uint64_t{256} << 20) << "the default";
  EXPECT_EQ(primary({"--backup", "[::1]:7000", "--data-dir", "d", "--disk-backlog", "64M"})
                .primary.durable.max_backlog_bytes,
            uint64_t{64} << 20);
  EXPECT_EQ(error_of({"backup", "--listen", "[::1]:7000", "--disk-backlog", "1M", "--",
                      "romulus-kvstore"}),
            "--disk-backlog needs --data-dir DIR");
  EXPECT_FALSE(primary({"--backup", "[::1]:7000"}).primary.durable.enabled())
      << "memory only by default";
  EXPECT_EQ(primary({"--backup", "[::1]:7000", "--data-dir", "d"}).primary.durable.mode,
            storage::DurableMode::kSync);
  EXPECT_EQ(primary({"--backup", "[::1]:7000", "--from-snapshot", "/b/s"}).primary.from_snapshot,
            std::optional<std::string>("/b/s"));
}

TEST(CliOptions, SnapshotAndSqliteExportTakeTheirWords) {
  auto s = parse({"snapshot", "rel/file.rmls", "--control", "/run/b.sock"});
  ASSERT_OK(s);
  const auto& snap = std::get<SnapshotCommand>(*s);
  EXPECT_EQ(snap.control_path, "/run/b.sock");
  EXPECT_EQ(snap.file.front(), '/') << "made absolute: the node runs elsewhere";
  EXPECT_EQ(error_of({"snapshot"}),
            "usage: romulus snapshot FILE [--control PATH] (ask the backup: its committed image)");
  auto e = parse({"sqlite-export", "app.db", "out.db", "--snapshot", "s.rmls"});
  ASSERT_OK(e);
  const auto& x = std::get<SqliteExportCommand>(*e);
  EXPECT_EQ(x.database, "app.db");
  EXPECT_EQ(x.snapshot, "s.rmls");
  EXPECT_EQ(x.out.front(), '/');
  EXPECT_EQ(error_of({"sqlite-export", "app.db", "out.db"}),
            "sqlite-export needs one source: --snapshot FILE or --control PATH (a backup's)");
  EXPECT_OK(parse({"sqlite-export", "--list", "--control", "/run/b.sock"}));
}

TEST(CliOptions, ABackupNeedsItsListenAddress) {
  EXPECT_EQ(error_of({"backup", "--", "romulus-kvstore"}),
            "--listen ADDR:PORT is required for a backup");
  auto c = parse({"backup", "--listen", "0.0.0.0:7000", "--reprotect", "node-a:7000", "--",
                  "romulus-kvstore"});
  ASSERT_OK(c);
  const auto& b = std::get<BackupOptions>(*c);
  EXPECT_EQ(b.listen, (Endpoint{"0.0.0.0", 7000}));
  EXPECT_EQ(b.node.listen, b.listen) << "the node rejoins where it listens";
  EXPECT_EQ(*b.reprotect, (Endpoint{"node-a", 7000}));
}

TEST(CliOptions, EachMistakeIsOneLineNamingTheOption) {
  struct Case {
    std::vector<std::string> options;
    std::string says;
  } cases[] = {
      {{"--backup", "node-b"}, "--backup 'node-b' is not ADDR:PORT"},
      {{"--backup", "[::1]:7000x"}, "--backup '[::1]:7000x': port must be 1..65535"},
      {{"--backup", "null", "--service", "6379"}, "--service '6379' is not ADDR:PORT"},
      {{"--backup", "null", "--metrics", "host:0"}, "--metrics 'host:0': port must be"},
      {{"--backup", "null", "--listen", "::1:7000"}, "--listen '::1:7000' is not ADDR:PORT"},
      {{"--backup", "null", "--witness", "10.0.0.5:2379", "--pair", "p"},
       "--witness '10.0.0.5:2379': use etcd://HOST:PORT"},
      {{"--backup", "null", "--witness", "etcd://a:1,"}, "--witness 'etcd://a:1,'"},
      {{"--backup", "null", "--witness", "etcd://a:1"}, "--witness needs --pair NAME"},
      {{"--backup", "null", "--witness", "etcds://a:1", "--pair", "p"},
       "an etcds:// witness needs a client certificate"},
      {{"--backup", "null", "--commit", "sometimes"},
       "--commit 'sometimes': use eager or interval"},
      {{"--backup", "null", "--tracker", "dirty"}, "--tracker 'dirty': use "},
      {{"--backup", "null", "--interval", "0ms"}, "--interval must be between 1ms and 60s"},
      {{"--backup", "null", "--min-gap", "2s"}, "--min-gap must be between 0 and 1s"},
      {{"--backup", "null", "--memory", "1000"}, "--memory must be at least 1M"},
      {{"--backup", "null", "--proxy-threads", "65"}, "--proxy-threads must be 0..64"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"primary"};
    args.insert(args.end(), c.options.begin(), c.options.end());
    args.insert(args.end(), {"--", "romulus-kvstore"});
    const std::string error = error_of(args);
    EXPECT_NE(error.find(c.says), std::string::npos)
        << "wanted '" << c.says << "', got '" << error << "'";
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
}

TEST(CliOptions, VersionAndHelp) {
  auto v = parse({"--version"});
  ASSERT_OK(v);
  EXPECT_EQ(std::get<HelpCommand>(*v).text, std::string("romulus ") + ROMULUS_VERSION + "\n");
  auto h = parse({"--help"});
  ASSERT_OK(h);
  EXPECT_NE(std::get<HelpCommand>(*h).text.find("romulus --version"), std::string::npos);
}

TEST(CliOptions, SetHelpListsEachSettingWithTheChoicesItsNodeAccepts) {
  auto h = parse({"set", "--help"});
  ASSERT_OK(h);
  const std::string& text = std::get<HelpCommand>(*h).text;
  // A setting whose value is a list of choices lists its enum's names, in order.
  const std::map<std::string_view, std::string> choices = {
      {"commit", enum_list(checkpoint::kCommitModeNames)},
      {"codec", enum_list(protocol::kCodecNames)},
      {"on-backup-loss", enum_list(checkpoint::kBackupLossNames)},
      {"tls", "reload"}};
  for (const auto& st : checkpoint::run_time_settings()) {
    SCOPED_TRACE(std::string(st.name));
    const std::string head = fmt::format("  {} {} ", st.name, st.value);
    EXPECT_NE(text.find(head), std::string::npos) << text;
    const bool is_choice = std::islower(static_cast<unsigned char>(st.value[0])) != 0;
    if (is_choice) {
      ASSERT_TRUE(choices.count(st.name)) << "a list of choices with no enum behind it";
      EXPECT_EQ(st.value, choices.at(st.name));
    }
  }
  EXPECT_NE(text.find("interval DURATION"), std::string::npos);
  EXPECT_NE(text.find("(1ms to 60s)"), std::string::npos) << "the range, from kIntervalRange";
}

TEST(CliOptions, EachRunTimeSettingIsAnOptionWithTheWordsOfSetHelp) {
  const checkpoint::PrimaryConfig defaults;
  for (const auto& role : {"primary", "backup"}) {
    const auto entries = help_entries(role);
    for (const auto& st : checkpoint::run_time_settings()) {
      if (!st.startup) continue;
      SCOPED_TRACE(fmt::format("{} --{}", role, st.name));
      const std::string head = fmt::format("  --{} arg ", st.name);
      std::string found;
      for (const auto& e : entries) {
        if (e.rfind(head, 0) == 0) found = e;
      }
      ASSERT_FALSE(found.empty()) << "no such option";
      EXPECT_NE(found.find(std::string(st.what) + " (default " + st.text(defaults) + ")"),
                std::string::npos)
          << found;
      if (st.choices()) {
        EXPECT_NE(found.find(std::string(st.value) + ": "), std::string::npos);
      }
    }
  }
}

TEST(CliOptions, StartUpRefusesWhatSetRefusesWithTheSameWords) {
  // One value each entry refuses (several for some); the option's error is
  // the entry's, which the running primary replies to `romulus set`, with "--".
  const std::multimap<std::string_view, std::string> bad = {
      {"interval", "0ms"},
      {"interval", "banana"},
      {"interval", "5parsecs"},
      {"commit", "sometimes"},
      {"min-gap", "2s"},
      {"max-stopped-fraction", "half"},
      {"max-stopped-fraction", "0"},
      {"cache", "lots"},
      {"cache", "1234567890123456"},
      {"codec", "gzip"},
      {"on-backup-loss", "panic"},
  };
  for (const auto& st : checkpoint::run_time_settings()) {
    if (!st.startup) continue;
    SCOPED_TRACE(std::string(st.name));
    EXPECT_TRUE(bad.count(st.name)) << "no value to refuse";
  }
  for (const auto& [name, value] : bad) {
    SCOPED_TRACE(fmt::format("{} {}", name, value));
    checkpoint::PrimaryConfig c;
    const Status set = checkpoint::find_run_time_setting(name)->parse(value, c);
    ASSERT_FALSE(set.is_ok());
    EXPECT_EQ(error_of({"primary", "--backup", "null", "--" + std::string(name), value, "--",
                        "romulus-kvstore"}),
              "--" + set.message());
  }
}

TEST(CliOptions, StartUpReadsARunTimeSettingAsSetDoes) {
  const NodeOptions o = primary({"--backup", "null", "--max-stopped-fraction", "0.5", "--cache",
                                 "128M", "--on-backup-loss", "stall", "--codec", "none"});
  EXPECT_EQ(o.primary.engine.max_stopped_fraction, 0.5);
  EXPECT_EQ(o.primary.engine.cache_bytes, size_t{128} << 20);
  EXPECT_EQ(o.primary.on_backup_loss, checkpoint::BackupLoss::kStall);
  EXPECT_EQ(o.primary.engine.encode.codec, protocol::CodecId::kNone);
  EXPECT_EQ(primary({"--backup", "null", "--interval", "40"}).primary.engine.interval,
            std::chrono::milliseconds(40))
      << "a bare number is milliseconds";
}

TEST(CliOptions, SetHelpListsEveryEntryWithItsRange) {
  auto h = parse({"set", "--help"});
  ASSERT_OK(h);
  const std::string& text = std::get<HelpCommand>(*h).text;
  const std::string table = text.substr(text.find("settings:\n") + 10);
  size_t lines = 0;
  for (char c : table) lines += c == '\n';
  EXPECT_EQ(lines, checkpoint::run_time_settings().size());
  for (const auto& st : checkpoint::run_time_settings()) {
    SCOPED_TRACE(std::string(st.name));
    EXPECT_NE(table.find(fmt::format("{} {}", st.name, st.value)), std::string::npos);
    EXPECT_NE(table.find(" " + checkpoint::describe(st) + "\n"), std::string::npos) << table;
  }
}

TEST(CliOptions, SetKeepsItsWordsForTheNode) {
  auto c = parse({"set", "interval", "25ms", "--control", "/tmp/x.sock"});
  ASSERT_OK(c);
  const auto& s = std::get<SetCommand>(*c);
  EXPECT_EQ(s.name, "interval");
  EXPECT_EQ(s.value, "25ms") << "sent as typed: the node reads it with the option's reader";
  EXPECT_EQ(s.control_path, "/tmp/x.sock");
}

}  // namespace
}  // namespace romulus::cli::options_test
