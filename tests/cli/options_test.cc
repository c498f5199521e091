// The `romulus` command line, parsed as operators type it: the values each
// option lands as, the defaults, and a one-line error naming the option for
// each kind of mistake. Nothing here starts a node.
#include "cli/options.h"

#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::cli {
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

PrimaryOptions primary(std::vector<std::string> options) {
  std::vector<std::string> args{"primary"};
  args.insert(args.end(), options.begin(), options.end());
  args.insert(args.end(), {"--", "romulus-kvstore"});
  auto c = parse(args);
  EXPECT_OK(c);
  if (!c.is_ok() || !std::holds_alternative<PrimaryOptions>(*c)) return {};
  return std::get<PrimaryOptions>(*c);
}

TEST(CliOptions, APrimaryGetsEveryOptionItWasGiven) {
  const PrimaryOptions o =
      primary({"--backup", "[::1]:7000", "--service", "127.0.0.1:6379", "--interval", "25ms",
               "--commit", "Interval", "--min-gap", "2ms", "--tracker", "compare", "--codec",
               "xbzrle", "--memory", "64M", "--witness", "etcd://10.0.0.5:2379,node-w:2379",
               "--pair", "orders", "--metrics", "127.0.0.1:9100"});
  ASSERT_TRUE(o.backup);
  EXPECT_EQ(*o.backup, (Endpoint{"::1", 7000}));
  EXPECT_EQ(*o.service, (Endpoint{"127.0.0.1", 6379}));
  EXPECT_EQ(o.interval, std::chrono::milliseconds(25));
  EXPECT_EQ(o.commit, checkpoint::CommitMode::kInterval);
  EXPECT_EQ(o.min_gap, std::chrono::milliseconds(2));
  EXPECT_EQ(o.tracker, checkpoint::TrackerKind::kCompare);
  EXPECT_EQ(o.codec, protocol::CodecId::kXbzrle);
  EXPECT_EQ(o.memory_bytes, 64ull << 20);
  EXPECT_FALSE(o.witness.url.tls);
  EXPECT_EQ(o.witness.url.to_string(), "etcd://10.0.0.5:2379,node-w:2379");
  EXPECT_EQ(o.witness.pair, "orders");
  EXPECT_EQ(*o.metrics, (Endpoint{"127.0.0.1", 9100}));
  EXPECT_EQ(o.guest_command, std::vector<std::string>{"romulus-kvstore"});
}

TEST(CliOptions, DefaultsAreTheDocumentedOnes) {
  const PrimaryOptions o = primary({"--backup", "null"});
  EXPECT_TRUE(o.backup_null);
  EXPECT_FALSE(o.backup);
  EXPECT_FALSE(o.output_buffering) << "--backup null has nothing to wait for";
  EXPECT_EQ(o.interval, std::chrono::milliseconds(50));
  EXPECT_EQ(o.commit, checkpoint::CommitMode::kEager);
  EXPECT_EQ(o.tracker, checkpoint::TrackerKind::kAuto);
  EXPECT_FALSE(o.witness.enabled());
}

TEST(CliOptions, ABackupNeedsItsListenAddress) {
  EXPECT_EQ(error_of({"backup", "--", "romulus-kvstore"}),
            "--listen ADDR:PORT is required for a backup");
  auto c = parse({"backup", "--listen", "0.0.0.0:7000", "--reprotect", "node-a:7000", "--",
                  "romulus-kvstore"});
  ASSERT_OK(c);
  const auto& b = std::get<BackupOptions>(*c);
  EXPECT_EQ(b.listen, (Endpoint{"0.0.0.0", 7000}));
  EXPECT_EQ(b.primary.listen, b.listen) << "the node rejoins where it listens";
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
      {{"--backup", "null", "--commit", "sometimes"}, "--commit 'sometimes': use eager or interval"},
      {{"--backup", "null", "--tracker", "dirty"}, "--tracker 'dirty': use "},
      {{"--backup", "null", "--interval", "0ms"}, "--interval must be between 1ms and 60s"},
      {{"--backup", "null", "--min-gap", "2s"}, "--min-gap must be between 0 and 1s"},
      {{"--backup", "null", "--memory", "1000"}, "--memory must be at least 1M"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"primary"};
    args.insert(args.end(), c.options.begin(), c.options.end());
    args.insert(args.end(), {"--", "romulus-kvstore"});
    const std::string error = error_of(args);
    EXPECT_NE(error.find(c.says), std::string::npos) << "wanted '" << c.says << "', got '" << error << "'";
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

TEST(CliOptions, SetKeepsItsWordsForTheNode) {
  auto c = parse({"set", "interval", "25ms", "--control", "/tmp/x.sock"});
  ASSERT_OK(c);
  const auto& s = std::get<SetCommand>(*c);
  EXPECT_EQ(s.name, "interval");
  EXPECT_EQ(s.control_path, "/tmp/x.sock");
}

}  // namespace
}  // namespace romulus::cli
