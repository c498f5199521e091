// QmpDecoder: QMP's lines in, messages out, any split the same, hostile input an error.
#include "vm/qmp_decoder.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::vm::qmp_decoder_test {
namespace {

// What QEMU 7.2 sent in the example VM's session (greeting abridged).
const std::string kSession =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n"
    "{\"return\": {}, \"id\": 1}\r\n"
    "{\"timestamp\": {\"seconds\": 1765070000, \"microseconds\": 5}, \"event\": \"STOP\"}\r\n"
    "{\"return\": {}, \"id\": 2}\r\n"
    "{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"Failed to open file\\n"
    "'/nonexistent/x'\"}}\r\n"
    "{\"return\": {\"status\": \"completed\"}}\r\n";

std::vector<QmpMessage> drain(QmpDecoder& d) {
  std::vector<QmpMessage> out;
  while (auto m = d.next()) out.push_back(std::move(*m));
  return out;
}

// A comparable summary of a message.
std::string summary(const QmpMessage& m) {
  return std::to_string(static_cast<int>(m.kind)) + "|" +
         (m.id ? std::to_string(*m.id) : std::string("-")) + "|" + m.event + "|" + m.error_class +
         "|" + m.error_desc + "|" + boost::json::serialize(m.value);
}

std::vector<std::string> summaries(const std::vector<QmpMessage>& ms) {
  std::vector<std::string> out;
  for (const auto& m : ms) out.push_back(summary(m));
  return out;
}

TEST(QmpDecoder, DecodesEachKindOfMessage) {
  QmpDecoder d;
  ASSERT_OK(d.feed(kSession));
  auto ms = drain(d);
  ASSERT_EQ(ms.size(), 6u);
  EXPECT_EQ(ms[0].kind, QmpMessageKind::kGreeting);
  EXPECT_TRUE(ms[0].value.as_object().contains("version"));
  EXPECT_EQ(ms[1].kind, QmpMessageKind::kReturn);
  EXPECT_EQ(ms[1].id, 1u);
  EXPECT_EQ(ms[2].kind, QmpMessageKind::kEvent);
  EXPECT_EQ(ms[2].event, "STOP");
  EXPECT_TRUE(ms[2].value.is_null());
  EXPECT_EQ(ms[4].kind, QmpMessageKind::kError);
  EXPECT_EQ(ms[4].id, 3u);
  EXPECT_EQ(ms[4].error_class, "GenericError");
  EXPECT_EQ(ms[4].error_desc, "Failed to open file '/nonexistent/x'");  // one line
  EXPECT_FALSE(ms[5].id.has_value());
  EXPECT_EQ(ms[5].value.as_object().at("status").as_string(), "completed");
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(QmpDecoder, AnySplitGivesTheSameMessages) {
  QmpDecoder whole;
  ASSERT_OK(whole.feed(kSession));
  auto expected = summaries(drain(whole));

  QmpDecoder bytewise;
  for (char c : kSession) ASSERT_OK(bytewise.feed(std::string_view(&c, 1)));
  EXPECT_EQ(summaries(drain(bytewise)), expected);

  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  for (int round = 0; round < 50; ++round) {
    QmpDecoder d;
    size_t at = 0;
    while (at < kSession.size()) {
      size_t n = std::min<size_t>(kSession.size() - at, 1 + rng() % 40);
      ASSERT_OK(d.feed(std::string_view(kSession).substr(at, n))) << "seed " << seed;
      at += n;
    }
    EXPECT_EQ(summaries(drain(d)), expected) << "seed " << seed;
  }
}

TEST(QmpDecoder, HoldsAnIncompleteLineUntilItsNewline) {
  QmpDecoder d;
  ASSERT_OK(d.feed("{\"return\": {}"));
  EXPECT_FALSE(d.next().has_value());
  EXPECT_EQ(d.buffered(), 13u);
  ASSERT_OK(d.feed("}\n"));
  ASSERT_TRUE(d.next().has_value());
}

TEST(QmpDecoder, SkipsBlankLines) {
  QmpDecoder d;
  ASSERT_OK(d.feed("\r\n\n  \r\n{\"return\": 1}\n"));
  EXPECT_EQ(drain(d).size(), 1u);
}

TEST(QmpDecoder, RefusesALineLongerThanTheLimitBeforeItsEnd) {
  QmpDecoder d(64);
  Status s = d.feed(std::string(65, ' '));
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("longer than 64 bytes"), std::string::npos) << s.to_string();
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(QmpDecoder, ALineOfExactlyTheLimitIsAccepted) {
  std::string line = "{\"return\": \"" + std::string(64 - 14, 'x') + "\"}";
  ASSERT_EQ(line.size(), 64u);
  QmpDecoder d(64);
  ASSERT_OK(d.feed(line + "\n"));
  EXPECT_EQ(drain(d).size(), 1u);
}

TEST(QmpDecoder, RefusesWhatIsNotJson) {
  QmpDecoder d;
  Status s = d.feed("{\"return\": \n");
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("QMP line 1: not JSON"), std::string::npos) << s.to_string();
}

TEST(QmpDecoder, RefusesJsonThatIsNotAnObject) {
  QmpDecoder d;
  EXPECT_EQ(d.feed("[1, 2]\n").code(), StatusCode::kCorrupt);
}

TEST(QmpDecoder, RefusesAnObjectOfNoKnownKind) {
  QmpDecoder d;
  EXPECT_EQ(d.feed("{\"hello\": 1}\n").code(), StatusCode::kCorrupt);
  QmpDecoder two;
  EXPECT_EQ(two.feed("{\"return\": 1, \"event\": \"STOP\"}\n").code(), StatusCode::kCorrupt);
}

TEST(QmpDecoder, RefusesAnErrorWithoutDesc) {
  QmpDecoder d;
  EXPECT_EQ(d.feed("{\"error\": {\"class\": \"GenericError\"}}\n").code(), StatusCode::kCorrupt);
}

TEST(QmpDecoder, RefusesANegativeId) {
  QmpDecoder d;
  EXPECT_EQ(d.feed("{\"return\": {}, \"id\": -1}\n").code(), StatusCode::kCorrupt);
}

TEST(QmpDecoder, TheFirstErrorSticks) {
  QmpDecoder d;
  Status first = d.feed("{\"return\": 1}\nnot json\n{\"return\": 2}\n");
  ASSERT_FALSE(first.is_ok());
  EXPECT_EQ(d.feed("{\"return\": 3}\n"), first);
  EXPECT_EQ(d.status(), first);
  EXPECT_EQ(drain(d).size(), 1u);  // the message before the error
}

TEST(QmpDecoder, RefusesDeepNesting) {
  QmpDecoder d;
  std::string deep = "{\"return\": " + std::string(10000, '[') + std::string(10000, ']') + "}\n";
  EXPECT_EQ(d.feed(deep).code(), StatusCode::kCorrupt);
}

TEST(OneLine, ReplacesControlCharactersAndCutsLongText) {
  EXPECT_EQ(one_line("a\nb\tc\r"), "a b c");
  EXPECT_EQ(one_line(std::string(600, 'x'), 10), std::string(10, 'x') + "...");
}

}  // namespace
}  // namespace romulus::vm::qmp_decoder_test
