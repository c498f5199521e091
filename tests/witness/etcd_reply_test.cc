// The etcd reply parsers: real replies parse; hostile ones are errors.
#include "witness/etcd_reply.h"
#include "tests/support/status_matchers.h"

#include <gtest/gtest.h>

#include <vector>

namespace romulus::witness::etcd::etcd_reply_test {
namespace {

TEST(EtcdReply, ParsesAGrant) {
  auto r = parse_grant_reply(R"({"header":{"revision":"1"},"ID":"4111120331597892614","TTL":"5"})");
  ASSERT_OK(r);
  EXPECT_EQ(r->id, 4111120331597892614);
  EXPECT_EQ(r->ttl, 5);
}

TEST(EtcdReply, KeepAliveOfAGoneLeaseHasNoTtl) {
  auto alive = parse_keepalive_reply(R"({"result":{"header":{},"ID":"7","TTL":"5"}})");
  ASSERT_OK(alive);
  EXPECT_EQ(*alive, 5);
  auto gone = parse_keepalive_reply(R"({"result":{"header":{},"ID":"7"}})");
  ASSERT_OK(gone);
  EXPECT_EQ(*gone, 0);
}

TEST(EtcdReply, ParsesARangeAndATxn) {
  const char* range =
      R"({"header":{},"kvs":[{"key":"L3JvbXVsdXMvcC9vd25lcg==","create_revision":"2","mod_revision":"3","version":"1","value":"aGVsbG8=","lease":"41"}],"count":"1"})";
  auto r = parse_range_reply(range);
  ASSERT_OK(r);
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->key, "/romulus/p/owner");
  EXPECT_EQ((*r)->value, "hello");
  EXPECT_EQ((*r)->lease, 41);
  EXPECT_EQ((*r)->mod_revision, 3);
  auto empty = parse_range_reply(R"({"header":{}})");
  ASSERT_OK(empty);
  EXPECT_FALSE(empty->has_value());
  auto txn = parse_txn_reply(
      R"({"header":{},"responses":[{"response_range":{"header":{},"kvs":[{"key":"YQ==","value":"Yg==","lease":"9"}],"count":"1"}}]})");
  ASSERT_OK(txn);
  EXPECT_FALSE(txn->succeeded);
  ASSERT_TRUE(txn->range_kv.has_value());
  EXPECT_EQ(txn->range_kv->lease, 9);
  auto del = parse_txn_reply(
      R"({"succeeded":true,"responses":[{"response_delete_range":{"deleted":"1"}}]})");
  ASSERT_OK(del);
  EXPECT_TRUE(del->succeeded);
  EXPECT_TRUE(del->deleted);
}

TEST(EtcdReply, AnErrorReplyIsAnErrorStatus) {
  auto r = parse_time_to_live_reply(
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "etcd: etcdserver: requested lease not found");
}

TEST(EtcdReply, HostileRepliesAreErrorsNotCrashes) {
  EXPECT_FALSE(parse_grant_reply("").is_ok());
  EXPECT_FALSE(parse_grant_reply("not json").is_ok());
  EXPECT_FALSE(parse_grant_reply("[1,2]").is_ok());
  EXPECT_FALSE(parse_grant_reply(R"({"ID":"12x","TTL":"5"})").is_ok());
  EXPECT_FALSE(parse_grant_reply(R"({"ID":{},"TTL":"5"})").is_ok());
  EXPECT_FALSE(parse_grant_reply(R"({"ID":"99999999999999999999","TTL":"5"})").is_ok());
  EXPECT_FALSE(parse_grant_reply(R"({"TTL":"5"})").is_ok()) << "no lease id";
  EXPECT_FALSE(parse_range_reply(R"({"kvs":{}})").is_ok());
  EXPECT_FALSE(parse_range_reply(R"({"kvs":[1]})").is_ok());
  EXPECT_FALSE(parse_range_reply(R"({"kvs":[{"value":"@@@@"}]})").is_ok());
  EXPECT_FALSE(parse_range_reply(R"({"kvs":[{"value":"YQ"}]})").is_ok());
  EXPECT_FALSE(parse_txn_reply(R"({"succeeded":"yes"})").is_ok());
  EXPECT_FALSE(parse_txn_reply(R"({"responses":[{"response_range":[]}]})").is_ok());
  EXPECT_FALSE(parse_keepalive_reply(R"({"result":7})").is_ok());
  std::string deep(10000, '[');
  EXPECT_FALSE(parse_range_reply(deep).is_ok());
  std::string big = R"({"x":")" + std::string(kMaxReplyBytes, 'a') + R"("})";
  EXPECT_FALSE(parse_range_reply(big).is_ok());
}

TEST(EtcdReply, Base64RoundTrips) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto d = base64_decode(base64_encode(s));
    ASSERT_OK(d);
    EXPECT_EQ(*d, s);
  }
  EXPECT_FALSE(base64_decode("a===").is_ok());
  EXPECT_FALSE(base64_decode("ab=c").is_ok());
}

}  // namespace
}  // namespace romulus::witness::etcd::etcd_reply_test
