#include "protocol/coding.h"
#include "tests/support/status_matchers.h"

#include <gtest/gtest.h>

namespace romulus::protocol::coding_test {
namespace {

TEST(Coding, FixedWidthIntegersAreLittleEndian) {
  Bytes out;
  put_u16(out, 0x0102);
  put_u32(out, 0x03040506);
  put_u64(out, 0x0708090a0b0c0d0eULL);
  put_i32(out, -12);
  const Bytes expected = {0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0e, 0x0d, 0x0c,
                          0x0b, 0x0a, 0x09, 0x08, 0x07, 0xf4, 0xff, 0xff, 0xff};
  EXPECT_EQ(out, expected);
}

TEST(Coding, ReaderReadsBackWhatWasWritten) {
  Bytes out;
  put_u8(out, 7);
  put_u16(out, 0xbeef);
  put_u32(out, 0xdeadbeef);
  put_u64(out, ~0ULL);
  put_i32(out, -13);
  ByteReader r(out);
  uint8_t a = 0;
  uint16_t b = 0;
  uint32_t c = 0;
  uint64_t d = 0;
  int32_t e = 0;
  ASSERT_TRUE(r.read_u8(&a, "a"));
  ASSERT_TRUE(r.read_u16(&b, "b"));
  ASSERT_TRUE(r.read_u32(&c, "c"));
  ASSERT_TRUE(r.read_u64(&d, "d"));
  ASSERT_TRUE(r.read_i32(&e, "e"));
  EXPECT_EQ(a, 7);
  EXPECT_EQ(b, 0xbeef);
  EXPECT_EQ(c, 0xdeadbeefu);
  EXPECT_EQ(d, ~0ULL);
  EXPECT_EQ(e, -13);
  EXPECT_TRUE(r.empty());
}

TEST(Coding, ShortInputFailsWithoutAdvancing) {
  const Bytes three = {1, 2, 3};
  ByteReader r(three);
  uint32_t v = 0;
  Status s = r.read_u32(&v, "epoch");
  EXPECT_EQ(s.code(), StatusCode::kTruncated);
  EXPECT_NE(s.message().find("epoch"), std::string::npos);
  EXPECT_EQ(r.position(), 0u);
  ByteSpan view;
  EXPECT_FALSE(r.read_bytes(4, &view, "body"));
  EXPECT_TRUE(r.read_bytes(3, &view, "body"));
}

TEST(Coding, VarintExactBytes) {
  struct Case {
    uint64_t v;
    Bytes bytes;
  };
  const Case cases[] = {
      {0, {0x00}},
      {1, {0x01}},
      {127, {0x7f}},
      {128, {0x80, 0x01}},
      {300, {0xac, 0x02}},
      {4096, {0x80, 0x20}},
      {~0ULL, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
  };
  for (const auto& c : cases) {
    Bytes out;
    put_varint(out, c.v);
    EXPECT_EQ(out, c.bytes) << c.v;
    EXPECT_EQ(varint_length(c.v), c.bytes.size());
    ByteReader r(out);
    uint64_t back = 0;
    ASSERT_TRUE(r.read_varint(&back, "v"));
    EXPECT_EQ(back, c.v);
  }
}

TEST(Coding, VarintTruncatedAndOverlongAreErrors) {
  const Bytes truncated = {0x80, 0x80};
  ByteReader r1(truncated);
  uint64_t v = 0;
  EXPECT_EQ(r1.read_varint(&v, "len").code(), StatusCode::kTruncated);
  const Bytes overlong = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
  ByteReader r2(overlong);
  EXPECT_EQ(r2.read_varint(&v, "len").code(), StatusCode::kCorrupt);
  const Bytes eleven = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
  ByteReader r3(eleven);
  EXPECT_EQ(r3.read_varint(&v, "len").code(), StatusCode::kCorrupt);
}

TEST(Status, ContextPrefixesMessageAndKeepsCode) {
  Status s = Status::corrupt("PFN 9 out of range").context("checkpoint 4");
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.to_string(), "corrupt: checkpoint 4: PFN 9 out of range");
  EXPECT_OK(Status::ok().context("x"));
}

}  // namespace
}  // namespace romulus::protocol::coding_test
