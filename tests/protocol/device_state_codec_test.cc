// The DEVICE_STATE payload: raw, or XBZRLE per 4 KiB block against the
// stream's previous state (protocol/device_state_codec.h).
#include "protocol/device_state_codec.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/support/status_matchers.h"

namespace romulus::protocol::device_state_codec_test {
namespace {

Bytes random_state(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  for (auto& v : b) v = static_cast<uint8_t>(rng());
  return b;
}

TEST(DeviceStateCodec, TheFirstStateOfAStreamIsRawAndASmallChangeIsADelta) {
  std::mt19937_64 rng(11);
  const Bytes first = random_state(rng, 81031);  // the size of the example VM's
  const Bytes p0 = encode_device_state_payload(first, std::nullopt);
  EXPECT_EQ(p0[0], kDeviceStateRaw);
  auto d0 = decode_device_state_payload(p0, std::nullopt);
  ASSERT_OK(d0);
  EXPECT_EQ(*d0, first);
  Bytes next = first;
  for (size_t at : {0ul, 5000ul, 40000ul, 81030ul}) next[at] ^= 0x5a;
  const Bytes p1 = encode_device_state_payload(next, ByteSpan(first));
  EXPECT_EQ(p1[0], kDeviceStateDelta);
  EXPECT_LT(p1.size(), 200u) << "four changed bytes in 80 KB";
  auto d1 = decode_device_state_payload(p1, ByteSpan(first));
  ASSERT_OK(d1);
  EXPECT_EQ(*d1, next);
}

TEST(DeviceStateCodec, AStateOfAnotherLengthOrAllNewGoesRaw) {
  std::mt19937_64 rng(12);
  const Bytes a = random_state(rng, 9000), b = random_state(rng, 9001), c = random_state(rng, 9000);
  EXPECT_EQ(encode_device_state_payload(b, ByteSpan(a))[0], kDeviceStateRaw);
  EXPECT_EQ(encode_device_state_payload(c, ByteSpan(a))[0], kDeviceStateRaw) << "no smaller";
}

TEST(DeviceStateCodec, HostilePayloadsAreCorruptNeverOutOfBounds) {
  std::mt19937_64 rng(13);
  const Bytes prev = random_state(rng, 5000);
  Bytes next = prev;
  next[4999] ^= 1;
  const Bytes good = encode_device_state_payload(next, ByteSpan(prev));
  ASSERT_EQ(good[0], kDeviceStateDelta);
  EXPECT_FALSE(decode_device_state_payload(good, std::nullopt).is_ok()) << "no previous state";
  const Bytes shorter(prev.begin(), prev.end() - 1);
  EXPECT_FALSE(decode_device_state_payload(good, ByteSpan(shorter)).is_ok()) << "wrong length";
  EXPECT_FALSE(decode_device_state_payload(Bytes{}, std::nullopt).is_ok());
  EXPECT_FALSE(decode_device_state_payload(Bytes{0x07, 1, 2}, std::nullopt).is_ok());
  for (size_t cut = 1; cut < good.size(); ++cut) {
    EXPECT_FALSE(decode_device_state_payload(ByteSpan(good).first(cut), ByteSpan(prev)).is_ok())
        << "cut at " << cut;
  }
  Bytes trailing = good;
  trailing.push_back(0);
  EXPECT_FALSE(decode_device_state_payload(trailing, ByteSpan(prev)).is_ok());
}

}  // namespace
}  // namespace romulus::protocol::device_state_codec_test
