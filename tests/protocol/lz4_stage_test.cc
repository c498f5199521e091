// The LZ4 stage: round trips, and a hostile block or size never gets past it.
#include "protocol/lz4_stage.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "protocol/wire_format.h"
#include "tests/support/page_patterns.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::lz4_stage_test {
namespace {

TEST(Lz4Stage, RoundTripsRealisticPages) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Bytes in = testing::make_working_set(16, rng);
  Bytes block, back;
  ASSERT_TRUE(lz4_compress(in, block));
  EXPECT_LT(block.size(), in.size());
  ASSERT_OK(lz4_decompress(block, in.size(), back));
  EXPECT_EQ(back, in);
}

TEST(Lz4Stage, IncompressibleInputIsSentUncompressed) {
  std::mt19937_64 rng(7);
  Bytes in(4096);
  for (auto& b : in) b = static_cast<uint8_t>(rng());
  Bytes block = {1, 2, 3};
  EXPECT_FALSE(lz4_compress(in, block));
  EXPECT_TRUE(block.empty());
}

TEST(Lz4Stage, EmptyAndOneByteInputsAreNotCompressed) {
  Bytes block;
  EXPECT_FALSE(lz4_compress(ByteSpan(), block));
  EXPECT_FALSE(lz4_compress(Bytes{0}, block));
}

TEST(Lz4Stage, WrongExpectedSizeIsCorrupt) {
  const Bytes in(10000, 0x41);
  Bytes block, back;
  ASSERT_TRUE(lz4_compress(in, block));
  Status s = lz4_decompress(block, in.size() - 1, back);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_TRUE(back.empty());
  s = lz4_decompress(block, in.size() + 1, back);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_TRUE(back.empty());
}

TEST(Lz4Stage, GarbageIsCorrupt) {
  Bytes back;
  EXPECT_EQ(lz4_decompress(Bytes{}, 10, back).code(), StatusCode::kCorrupt);
  EXPECT_EQ(lz4_decompress(Bytes{0xFF, 0xFF, 0xFF}, 100, back).code(), StatusCode::kCorrupt);
  // A match whose offset points before the start of the output.
  EXPECT_EQ(lz4_decompress(Bytes{0x14, 'a', 0x10, 0x00}, 100, back).code(), StatusCode::kCorrupt);
  std::mt19937_64 rng(8);
  for (int i = 0; i < 1000; ++i) {
    Bytes junk(1 + rng() % 64);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    Status s = lz4_decompress(junk, rng() % 8192, back);
    if (!s.is_ok()) {
      EXPECT_TRUE(back.empty());
    }
  }
}

TEST(Lz4Stage, ExpectedSizeAboveTheLimitIsRefusedWithoutAllocating) {
  Bytes back;
  const Status s = lz4_decompress(Bytes{0x00}, size_t{kMaxDecodedPayload} + 1, back);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_EQ(back.capacity(), 0u);
  EXPECT_EQ(lz4_decompress(Bytes{0x00}, SIZE_MAX, back).code(), StatusCode::kInvalidArgument);
}

TEST(Lz4Stage, SizeNoBlockOfThatLengthCanReachIsRefusedWithoutAllocating) {
  Bytes back;
  // Five bytes cannot decode to a megabyte: refused before the output is sized.
  const Status s = lz4_decompress(Bytes{0x1F, 0x00, 0x01, 0x00, 0xFF}, 1u << 20, back);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_EQ(back.capacity(), 0u);
}

TEST(Lz4Stage, ExpectedSizeAtTheLimitIsAccepted) {
  const Bytes in(kMaxDecodedPayload, 0);
  Bytes block, back;
  ASSERT_TRUE(lz4_compress(in, block));
  ASSERT_OK(lz4_decompress(block, kMaxDecodedPayload, back));
  EXPECT_EQ(back, in);
}

TEST(Lz4Stage, EmptyBlockDecodesToZeroBytes) {
  Bytes back = {1};
  EXPECT_OK(lz4_decompress(Bytes{0x00}, 0, back));  // liblz4's block for ""
  EXPECT_TRUE(back.empty());
}

// ---- End-of-block conditions (docs/protocol.md, "LZ4 stage").

// 14 literals "abcdefghijklmn", then a match of `match` bytes at `offset`, then
// `tail` literals 'z': the hand-built blocks below.
Bytes block_with_match(uint16_t offset, int match, int tail) {
  Bytes b = {static_cast<uint8_t>(0xE0 | (match - 4))};
  for (int i = 0; i < 14; ++i) b.push_back(static_cast<uint8_t>('a' + i));
  b.push_back(static_cast<uint8_t>(offset));
  b.push_back(static_cast<uint8_t>(offset >> 8));
  b.push_back(static_cast<uint8_t>(tail << 4));
  for (int i = 0; i < tail; ++i) b.push_back('z');
  return b;
}

TEST(Lz4Stage, BlockEndingInFiveLiteralsAfterItsLastMatchDecodes) {
  Bytes back;
  ASSERT_OK(lz4_decompress(block_with_match(8, 13, 5), 32, back));
  EXPECT_EQ(std::string(back.begin(), back.end()), "abcdefghijklmnghijklmnghijkzzzzz");
}

// Regression: liblz4 1.9.4's LZ4_decompress_safe accepts these when the match
// goes through its shortcut (offset >= 8, short lengths), though the block
// format requires the last 5 bytes to be literals: what the backup accepted
// depended on the library's code path.
TEST(Lz4Stage, LastMatchEndingInTheLastFiveBytesIsCorrupt) {
  Bytes back;
  for (int tail = 0; tail < 5; ++tail) {
    const Status s = lz4_decompress(block_with_match(8, 18 - tail, tail), 32, back);
    EXPECT_EQ(s.code(), StatusCode::kCorrupt) << "tail " << tail << ": " << s.to_string();
    EXPECT_NE(s.message().find("the last 5 bytes must be literals"), std::string::npos)
        << s.message();
    EXPECT_TRUE(back.empty());
  }
}

TEST(Lz4Stage, MatchStartingLessThanTwelveBytesBeforeTheEndIsCorrupt) {
  Bytes back;
  // 14 literals, a 4-byte match at output byte 14 of 23: 9 bytes before the end.
  const Status s = lz4_decompress(block_with_match(8, 4, 5), 23, back);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_NE(s.message().find("less than 12 bytes before the end"), std::string::npos)
      << s.message();
}

// Regression: liblz4 1.9.4 decodes an offset of 0, which the format calls
// invalid, instead of rejecting it.
TEST(Lz4Stage, MatchOffsetZeroIsCorrupt) {
  Bytes back;
  const Status s = lz4_decompress(block_with_match(0, 13, 5), 32, back);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_NE(s.message().find("match offset 0"), std::string::npos) << s.message();
}

TEST(Lz4Stage, BytesAfterTheLastLiteralsAreCorrupt) {
  Bytes back;
  Bytes b = {0x30, 'x', 'y', 'z'};
  ASSERT_OK(lz4_decompress(b, 3, back));
  b.push_back(0x00);
  EXPECT_EQ(lz4_decompress(b, 3, back).code(), StatusCode::kCorrupt);
}

}  // namespace
}  // namespace romulus::protocol::lz4_stage_test
