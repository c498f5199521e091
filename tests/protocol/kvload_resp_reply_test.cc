// romulus-kvload's RESP reply parser (examples/kvload/resp_reply.h): the
// replies Redis gives SET, GET, INCR and WAIT, any split of the bytes, and
// hostile input that must be an error rather than a crash, a hang or an
// allocation.
#include "examples/kvload/resp_reply.h"

#include <gtest/gtest.h>

#include <string>

namespace romulus::kvload::kvload_resp_reply_test {
namespace {

constexpr size_t kLimit = 1024;
using Outcome = RespParse::Outcome;

TEST(RespReplyTest, ParsesEachReplyKindKvloadExpects) {
  RespParse ok = parse_resp_reply("+OK\r\n", kLimit);
  ASSERT_EQ(ok.outcome, Outcome::kReply);
  EXPECT_EQ(ok.reply.type, RespType::kSimple);
  EXPECT_EQ(ok.reply.text, "OK");
  EXPECT_EQ(ok.consumed, 5u);

  RespParse wait = parse_resp_reply(":1\r\n", kLimit);
  ASSERT_EQ(wait.outcome, Outcome::kReply);
  EXPECT_EQ(wait.reply.type, RespType::kInteger);
  EXPECT_EQ(wait.reply.integer, 1);

  RespParse neg = parse_resp_reply(":-42\r\n", kLimit);
  ASSERT_EQ(neg.outcome, Outcome::kReply);
  EXPECT_EQ(neg.reply.integer, -42);

  RespParse bulk = parse_resp_reply("$5\r\nhe\r\no\r\n", kLimit);  // a body may hold CRLF
  ASSERT_EQ(bulk.outcome, Outcome::kReply);
  EXPECT_EQ(bulk.reply.type, RespType::kBulk);
  EXPECT_EQ(bulk.reply.text, "he\r\no");
  EXPECT_EQ(bulk.consumed, 11u);

  RespParse null = parse_resp_reply("$-1\r\n", kLimit);
  ASSERT_EQ(null.outcome, Outcome::kReply);
  EXPECT_EQ(null.reply.type, RespType::kNull);

  RespParse err = parse_resp_reply("-NOREPLICAS Not enough good replicas\r\n", kLimit);
  ASSERT_EQ(err.outcome, Outcome::kReply);
  EXPECT_EQ(err.reply.type, RespType::kError);
  EXPECT_EQ(err.reply.text, "NOREPLICAS Not enough good replicas");
}

TEST(RespReplyTest, ParsesOnlyTheFirstOfSeveralPipelinedReplies) {
  std::string in = "+OK\r\n:1\r\n$3\r\nabc\r\n";
  size_t at = 0;
  std::vector<RespType> types;
  while (at < in.size()) {
    RespParse p = parse_resp_reply(std::string_view(in).substr(at), kLimit);
    ASSERT_EQ(p.outcome, Outcome::kReply);
    types.push_back(p.reply.type);
    at += p.consumed;
  }
  EXPECT_EQ(types, (std::vector<RespType>{RespType::kSimple, RespType::kInteger, RespType::kBulk}));
}

TEST(RespReplyTest, EveryPrefixOfAValidReplyNeedsMore) {
  for (std::string reply :
       {"+OK\r\n", ":12345\r\n", "$10\r\n0123456789\r\n", "$-1\r\n", "$0\r\n\r\n"}) {
    for (size_t n = 0; n < reply.size(); ++n) {
      RespParse p = parse_resp_reply(std::string_view(reply).substr(0, n), kLimit);
      EXPECT_EQ(p.outcome, Outcome::kNeedMore) << "'" << reply << "' cut at " << n;
    }
    RespParse whole = parse_resp_reply(reply, kLimit);
    EXPECT_EQ(whole.outcome, Outcome::kReply) << reply;
    EXPECT_EQ(whole.consumed, reply.size()) << reply;
  }
}

TEST(RespReplyTest, MalformedRepliesAreErrors) {
  for (std::string bad : {
           "*1\r\n+OK\r\n",              // an array: no reply kvload asks for is one
           "%1\r\n",                     // RESP3 map
           "+OK\n",                      // bare LF
           "+O\rK\r\n",                  // CR inside a line
           ":12a\r\n",                   // not a number
           ":\r\n",                      // empty number
           ":+1\r\n",                    // sign kvload does not accept
           ":99999999999999999999\r\n",  // overflows int64
           "$-2\r\n",                    // negative length other than -1
           "$3\r\nabcde\r\n",            // body not followed by CRLF
           "$x\r\n",                     // malformed length
       }) {
    RespParse p = parse_resp_reply(bad, kLimit);
    EXPECT_EQ(p.outcome, Outcome::kBad) << "accepted '" << bad << "'";
    EXPECT_FALSE(p.error.empty());
  }
}

TEST(RespReplyTest, ARepliesLongerThanTheLimitIsAnErrorBeforeItArrives) {
  // A bulk length past the limit is rejected from its header alone, so a
  // hostile server cannot make kvload wait for (or buffer) a huge body.
  EXPECT_EQ(parse_resp_reply("$2000\r\n", kLimit).outcome, Outcome::kBad);
  EXPECT_EQ(parse_resp_reply("$9223372036854775807\r\n", kLimit).outcome, Outcome::kBad);
  EXPECT_EQ(parse_resp_reply("$1019\r\n", kLimit).outcome, Outcome::kBad);  // 7 + 1019 + 2 > 1024
  EXPECT_EQ(parse_resp_reply("$1015\r\n", kLimit).outcome, Outcome::kNeedMore);  // exactly 1024
  // A line that never ends is an error once it reaches the limit.
  EXPECT_EQ(parse_resp_reply("+" + std::string(kLimit - 2, 'x'), kLimit).outcome,
            Outcome::kNeedMore);
  EXPECT_EQ(parse_resp_reply("+" + std::string(kLimit, 'x'), kLimit).outcome, Outcome::kBad);
}

TEST(RespReplyTest, CommandsAreArraysOfBulkStrings) {
  std::string out;
  append_resp_command(out, {"SET", "k", "v1"});
  append_resp_command(out, {"WAIT", "1", "0"});
  EXPECT_EQ(out,
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n");
}

}  // namespace
}  // namespace romulus::kvload::kvload_resp_reply_test
