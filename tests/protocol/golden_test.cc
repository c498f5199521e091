// The worked example of docs/protocol.md ("Worked example"), byte for byte.
// The expected bytes below are copied from the document; if this test fails,
// either the code or the document is wrong, and both must agree again.
#include <gtest/gtest.h>

#include <cstring>

#include "protocol/checkpoint_writer.h"
#include "protocol/device_state_codec.h"
#include "protocol/lz4_stage.h"
#include "protocol/page_codec.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::golden_test {
namespace {

struct Example {
  uint8_t before[kPageSize] = {};
  uint8_t after[kPageSize] = {};
  Example() {
    const char kText[] = "Romulus checkpoint v1";
    std::memcpy(before, kText, sizeof(kText) - 1);
    std::memcpy(after, before, kPageSize);
    after[0x14] = '2';    // "v1" -> "v2"
    after[0x100] = 0x2a;  // a u32 counter at 0x100 goes 0 -> 42
  }
};

Bytes encode(CodecId codec, const uint8_t* old, const uint8_t* cur) {
  Bytes out(max_record_size(codec));
  out.resize(encode_page_record(codec, old, PageView(cur, kPageSize), out.data()));
  return out;
}

TEST(Golden, PagesBeforeAndAfterStartAsDocumented) {
  const Example ex;
  const Bytes first = {0x52, 0x6f, 0x6d, 0x75, 0x6c, 0x75, 0x73, 0x20, 0x63, 0x68, 0x65,
                       0x63, 0x6b, 0x70, 0x6f, 0x69, 0x6e, 0x74, 0x20, 0x76, 0x31, 0x00};
  EXPECT_EQ(Bytes(ex.before, ex.before + first.size()), first);
  EXPECT_EQ(ex.after[0x14], 0x32);
  EXPECT_EQ(ex.after[0x100], 0x2a);
}

// docs/protocol.md, "Chunks": DEVICE_STATE of the 4 bytes "QEVM" (raw, as the
// first of a stream), and of "QEVM-device-2" after "QEVM-device-1" (a delta).
TEST(Golden, DeviceStateChunksAsDocumented) {
  const Bytes state = {0x51, 0x45, 0x56, 0x4d};
  const Bytes raw = {0x97, 0xff, 0xff, 0xff, 0x05, 0x00, 0x00, 0x00, 0x00, 0x51, 0x45, 0x56, 0x4d};
  EXPECT_EQ(encode_device_state(encode_device_state_payload(state, std::nullopt)), raw);
  const std::string one = "QEVM-device-1", two = "QEVM-device-2";
  const Bytes before(one.begin(), one.end()), after(two.begin(), two.end());
  const Bytes delta = {0x97, 0xff, 0xff, 0xff, 0x0a, 0x00, 0x00, 0x00, 0x01,
                       0x0d, 0x00, 0x00, 0x00, 0x01, 0x03, 0x0c, 0x01, 0x32};
  EXPECT_EQ(encode_device_state(encode_device_state_payload(after, ByteSpan(before))), delta);
}

TEST(Golden, RunSkipRecord) {
  const Example ex;
  const Bytes want = {0x85, 0x01, 0x32, 0x00, 0x00, 0x00, 0xba, 0x01, 0x2a, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(encode(CodecId::kRunSkip, ex.before, ex.after), want);
  uint8_t page[kPageSize];
  std::memcpy(page, ex.before, kPageSize);
  auto r = decode_page_record(CodecId::kRunSkip, want, MutablePageView(page, kPageSize));
  ASSERT_OK(r);
  EXPECT_EQ(*r, want.size());
  EXPECT_EQ(std::memcmp(page, ex.after, kPageSize), 0);
}

TEST(Golden, XbzrleRecord) {
  const Example ex;
  const Bytes want = {0x01, 0x07, 0x14, 0x01, 0x32, 0xeb, 0x01, 0x01, 0x2a};
  EXPECT_EQ(encode(CodecId::kXbzrle, ex.before, ex.after), want);
  uint8_t page[kPageSize];
  std::memcpy(page, ex.before, kPageSize);
  auto r = decode_page_record(CodecId::kXbzrle, want, MutablePageView(page, kPageSize));
  ASSERT_OK(r);
  EXPECT_EQ(*r, want.size());
  EXPECT_EQ(std::memcmp(page, ex.after, kPageSize), 0);
}

TEST(Golden, Lz4OfTheWholePageRecordOnACacheMiss) {
  const Example ex;
  const Bytes record = encode(CodecId::kRunSkip, nullptr, ex.after);
  ASSERT_EQ(record.size(), 4097u);
  const Bytes want = {0xff, 0x08, 0x80, 0x52, 0x6f, 0x6d, 0x75, 0x6c, 0x75, 0x73, 0x20, 0x63,
                      0x68, 0x65, 0x63, 0x6b, 0x70, 0x6f, 0x69, 0x6e, 0x74, 0x20, 0x76, 0x32,
                      0x00, 0x01, 0x00, 0xd7, 0x1f, 0x2a, 0xeb, 0x00, 0xd7, 0x0f, 0x02, 0x00,
                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                      0xff, 0xff, 0x0b, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00};
  Bytes block;
  ASSERT_TRUE(lz4_compress(record, block));
  EXPECT_EQ(block, want);
  Bytes back;
  ASSERT_OK(lz4_decompress(want, record.size(), back));
  EXPECT_EQ(back, record);
}

}  // namespace
}  // namespace romulus::protocol::golden_test
