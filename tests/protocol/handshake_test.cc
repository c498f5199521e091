#include "protocol/handshake.h"
#include "tests/support/status_matchers.h"

#include <gtest/gtest.h>

namespace romulus::protocol::handshake_test {
namespace {

Hello sample_hello() {
  Hello h;
  h.guest_page_count = 65536;
  h.session_id = 0x1122334455667788ull;
  h.codecs = {CodecId::kRunSkip, CodecId::kNone};
  return h;
}

LocalGeometry backup_with(uint64_t pages) {
  LocalGeometry g;
  g.guest_page_count = pages;
  return g;
}

TEST(Handshake, HelloRoundTrips) {
  const Hello h = sample_hello();
  const Bytes wire = encode_hello(h);
  auto parsed = parse_hello(wire);
  ASSERT_OK(parsed);
  ASSERT_TRUE(parsed->has_value());
  EXPECT_EQ((*parsed)->first, h);
  EXPECT_EQ((*parsed)->second, wire.size());
}

TEST(Handshake, HelloBytesAreAsDocumented) {
  Hello h;
  h.guest_page_count = 16;
  h.session_id = 7;
  h.codecs = {CodecId::kRunSkip};
  const Bytes expected = {'R',  'M',  'L',  'S',  0x01, 0x00, 0x1b, 0x00,
                          0x00, 0x00,                                   // magic, version 1, body 27
                          0x00, 0x10, 0x00, 0x00,                       // page size 4096
                          0x04,                                         // word size 4
                          0x10, 0,    0,    0,    0,    0,    0,    0,  // 16 pages
                          0x07, 0,    0,    0,    0,    0,    0,    0,  // session 7
                          0x01, 0x01,                                   // 1 codec: runskip
                          0x00, 0x00, 0x00, 0x00};                      // flags
  EXPECT_EQ(encode_hello(h), expected);
}

TEST(Handshake, ReplyBytesAreAsDocumented) {
  Reply accepted;
  accepted.accept = true;
  accepted.last_committed_epoch = 17;
  accepted.committed_session_id = 7;
  const Bytes expected = {'R',  'M',  'L', 'B', 0x01, 0x00, 0x13, 0x00,
                          0x00, 0x00,                                 // magic, version 1, body 19
                          0x01,                                       // accept
                          0x11, 0,    0,   0,   0,    0,    0,    0,  // last committed epoch 17
                          0x07, 0,    0,   0,   0,    0,    0,    0,  // its session 7
                          0x00, 0x00};                                // no reason
  EXPECT_EQ(encode_reply(accepted), expected);
  Reply refused = accepted;
  refused.accept = false;
  refused.reason = "busy";
  Bytes expected_refusal = expected;
  expected_refusal[6] = 0x17;   // body 23
  expected_refusal[10] = 0x00;  // refuse
  expected_refusal[27] = 0x04;  // reason length 4
  expected_refusal.insert(expected_refusal.end(), {'b', 'u', 's', 'y'});
  EXPECT_EQ(encode_reply(refused), expected_refusal);
}

TEST(Handshake, ReplyRoundTrips) {
  Reply r;
  r.accept = false;
  r.last_committed_epoch = 41;
  r.committed_session_id = 9;
  r.reason = "arena size mismatch";
  const Bytes wire = encode_reply(r);
  auto parsed = parse_reply(wire);
  ASSERT_OK(parsed);
  ASSERT_TRUE(parsed->has_value());
  EXPECT_EQ((*parsed)->first, r);
  EXPECT_EQ((*parsed)->second, wire.size());
}

TEST(Handshake, ParsersWaitForEveryMissingByte) {
  const Bytes hello = encode_hello(sample_hello());
  for (size_t n = 0; n < hello.size(); ++n) {
    auto parsed = parse_hello(ByteSpan(hello).first(n));
    ASSERT_OK(parsed) << n << ": " << parsed.status().to_string();
    EXPECT_FALSE(parsed->has_value()) << n;
  }
  Reply r;
  r.accept = true;
  const Bytes reply = encode_reply(r);
  for (size_t n = 0; n < reply.size(); ++n) {
    auto parsed = parse_reply(ByteSpan(reply).first(n));
    ASSERT_OK(parsed) << n;
    EXPECT_FALSE(parsed->has_value()) << n;
  }
}

TEST(Handshake, BytesAfterTheMessageAreLeftForTheCaller) {
  Bytes wire = encode_hello(sample_hello());
  const size_t size = wire.size();
  wire.push_back(0xaa);
  auto parsed = parse_hello(wire);
  ASSERT_OK(parsed);
  EXPECT_EQ((*parsed)->second, size);
}

TEST(Handshake, VersionMismatchIsRefusedFromTheHeaderAlone) {
  Hello h = sample_hello();
  h.version = 2;
  Bytes wire = encode_hello(h);
  wire.resize(kHandshakeHeaderSize);  // no body at all
  wire[6] = 0xff;                     // and a body length that would be rejected
  wire[7] = 0xff;
  auto parsed = parse_hello(wire);
  ASSERT_FALSE(parsed.is_ok());
  EXPECT_EQ(parsed.status().code(), StatusCode::kRefused);
  EXPECT_NE(parsed.status().message().find("version 2"), std::string::npos)
      << parsed.status().message();

  Reply r;
  r.version = 3;
  auto reply = parse_reply(encode_reply(r));
  ASSERT_FALSE(reply.is_ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kRefused);
}

TEST(Handshake, BadMagicIsRejectedAtTheFirstWrongByte) {
  const Bytes http = {'G', 'E', 'T', ' '};
  EXPECT_EQ(parse_hello(ByteSpan(http).first(1)).status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(parse_reply(encode_hello(sample_hello())).status().code(), StatusCode::kCorrupt);
}

TEST(Handshake, OversizedBodyLengthIsRejectedBeforeWaitingForIt) {
  Bytes wire = encode_hello(sample_hello());
  wire.resize(kHandshakeHeaderSize);
  store_u32(wire.data() + 6, kMaxHandshakeBody + 1);
  auto parsed = parse_hello(wire);
  ASSERT_FALSE(parsed.is_ok());
  EXPECT_EQ(parsed.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(parsed.status().message().find("exceeds limit"), std::string::npos);
}

TEST(Handshake, BodyShorterThanItsFieldsIsCorrupt) {
  Bytes wire = encode_hello(sample_hello());
  store_u32(wire.data() + 6, 10);  // claims 10 bytes: ends inside the page count
  wire.resize(kHandshakeHeaderSize + 10);
  EXPECT_FALSE(parse_hello(wire).is_ok());
}

TEST(Handshake, BodyLongerThanItsFieldsIsCorrupt) {
  Bytes wire = encode_hello(sample_hello());
  store_u32(wire.data() + 6, load_u32(wire.data() + 6) + 1);
  wire.push_back(0);
  auto parsed = parse_hello(wire);
  ASSERT_FALSE(parsed.is_ok());
  EXPECT_NE(parsed.status().message().find("unexpected bytes"), std::string::npos);
}

TEST(Handshake, TooManyCodecsIsCorrupt) {
  Hello h = sample_hello();
  Bytes wire = encode_hello(h);
  wire[kHandshakeHeaderSize + 4 + 1 + 8 + 8] = kMaxHelloCodecs + 1;
  EXPECT_EQ(parse_hello(wire).status().code(), StatusCode::kCorrupt);
}

TEST(Handshake, ReplyVerdictOtherThanZeroOrOneIsCorrupt) {
  Bytes wire = encode_reply(Reply{});
  wire[kHandshakeHeaderSize] = 2;
  EXPECT_EQ(parse_reply(wire).status().code(), StatusCode::kCorrupt);
}

TEST(Handshake, ReplyReasonLongerThanTheLimitIsCorrupt) {
  Reply r;
  r.reason = std::string(kMaxRefusalReason, 'x');
  Bytes wire = encode_reply(r);
  ASSERT_OK(parse_reply(wire));
  // Grow the reason by one byte by hand.
  const size_t len_at = kHandshakeHeaderSize + 1 + 8 + 8;
  store_u16(wire.data() + len_at, kMaxRefusalReason + 1);
  store_u32(wire.data() + 6, load_u32(wire.data() + 6) + 1);
  wire.push_back('x');
  EXPECT_EQ(parse_reply(wire).status().code(), StatusCode::kCorrupt);
}

TEST(Handshake, EncodeReplyCutsLongReasonsAtACharacterBoundary) {
  Reply r;
  r.reason = std::string(kMaxRefusalReason - 1, 'x') + "\xc3\xa9";  // 'é' straddles the limit
  auto parsed = parse_reply(encode_reply(r));
  ASSERT_OK(parsed);
  EXPECT_EQ((*parsed)->first.reason, std::string(kMaxRefusalReason - 1, 'x'));
}

TEST(HandshakeCompatibility, MatchingGeometryIsAccepted) {
  EXPECT_OK(check_hello_compatible(sample_hello(), backup_with(65536)));
}

TEST(HandshakeCompatibility, ArenaSizeMismatchSaysBothSizes) {
  const Status s = check_hello_compatible(sample_hello(), backup_with(16384));
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_EQ(s.message(),
            "arena size mismatch: primary has 65536 pages (256 MiB), backup expects 16384 pages "
            "(64 MiB)");
}

TEST(HandshakeCompatibility, VersionMismatchIsRefused) {
  Hello h = sample_hello();
  h.version = 7;
  const Status s = check_hello_compatible(h, backup_with(65536));
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_NE(s.message().find("version 7"), std::string::npos) << s.message();
}

TEST(HandshakeCompatibility, PageSizeMismatchIsRefused) {
  Hello h = sample_hello();
  h.page_size = 16384;
  const Status s = check_hello_compatible(h, backup_with(65536));
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_EQ(s.message(), "page size mismatch: primary uses 16384 bytes, backup uses 4096");
}

TEST(HandshakeCompatibility, WordSizeMismatchIsRefused) {
  Hello h = sample_hello();
  h.word_size = 8;
  const Status s = check_hello_compatible(h, backup_with(65536));
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_NE(s.message().find("word size mismatch"), std::string::npos) << s.message();
}

TEST(HandshakeCompatibility, UnknownCodecIsRefused) {
  Hello h = sample_hello();
  h.codecs.push_back(static_cast<CodecId>(9));
  const Status s = check_hello_compatible(h, backup_with(65536));
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_NE(s.message().find("codec 9"), std::string::npos) << s.message();
}

TEST(HandshakeCompatibility, CodecTheBackupDisabledIsRefused) {
  Hello h = sample_hello();
  h.codecs = {CodecId::kXbzrle};
  LocalGeometry g = backup_with(65536);
  g.codecs = {CodecId::kNone, CodecId::kRunSkip};
  const Status s = check_hello_compatible(h, g);
  EXPECT_EQ(s.code(), StatusCode::kRefused);
  EXPECT_NE(s.message().find("xbzrle"), std::string::npos) << s.message();
}

TEST(HandshakeCompatibility, UnknownFlagsAreRefused) {
  Hello h = sample_hello();
  h.flags = 4;
  EXPECT_EQ(check_hello_compatible(h, backup_with(65536)).code(), StatusCode::kRefused);
}

TEST(HandshakeCompatibility, ArenaSizesThatAreNotWholeMebibytes) {
  Hello h = sample_hello();
  h.guest_page_count = 3;
  const Status s = check_hello_compatible(h, backup_with(16));
  EXPECT_EQ(s.message(),
            "arena size mismatch: primary has 3 pages (12 KiB), backup expects 16 pages (64 KiB)");
}

}  // namespace
}  // namespace romulus::protocol::handshake_test

namespace romulus::protocol::handshake_test {
namespace {

// Regression: parsing before any byte arrived compared against a null pointer
// (UB; the sanitizer build aborted the primary at its first connection).
TEST(HandshakeRegression, ParsingNoBytesYetAsksForMore) {
  auto hello = parse_hello(ByteSpan());
  ASSERT_OK(hello);
  EXPECT_FALSE(hello->has_value());
  auto reply = parse_reply(ByteSpan());
  ASSERT_OK(reply);
  EXPECT_FALSE(reply->has_value());
}

}  // namespace
}  // namespace romulus::protocol::handshake_test
