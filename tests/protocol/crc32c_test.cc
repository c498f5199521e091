#include "protocol/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string_view>

namespace romulus::protocol::crc32c_test {
namespace {

ByteSpan as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Crc32c, MatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c(as_bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c_extend_portable(0, as_bytes("123456789")), 0xE3069283u);
}

TEST(Crc32c, ThirtyTwoZeroBytes) {
  const Bytes zeros(32, 0);
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc32c_extend_portable(0, zeros), 0x8A9136AAu);
}

TEST(Crc32c, ThirtyTwoOnesBytes) {  // RFC 3720, B.4
  const Bytes ones(32, 0xff);
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
}

TEST(Crc32c, EmptyInputIsZeroAndExtendsNothing) {
  EXPECT_EQ(crc32c({}), 0u);
  EXPECT_EQ(crc32c_extend(0x12345678u, {}), 0x12345678u);
  EXPECT_EQ(crc32c_extend_portable(0x12345678u, {}), 0x12345678u);
}

TEST(Crc32c, ExtendEqualsCrcOfConcatenation) {
  const std::string_view s = "The quick brown fox jumps over the lazy dog";
  const ByteSpan all = as_bytes(s);
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    EXPECT_EQ(crc32c_extend(crc32c(all.first(cut)), all.subspan(cut)), crc32c(all)) << cut;
    EXPECT_EQ(crc32c_extend_portable(crc32c_extend_portable(0, all.first(cut)), all.subspan(cut)),
              crc32c(all))
        << cut;
  }
}

TEST(Crc32c, HardwareAndPortablePathsAgreeOnRandomData) {
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  SCOPED_TRACE(seed);
  std::mt19937 rng(seed);
  Bytes buffer(300 * 1024 + 64);
  for (auto& b : buffer) b = static_cast<uint8_t>(rng());
  std::printf("hardware crc32c: %s\n", crc32c_hardware_available() ? "yes" : "no");
  for (int i = 0; i < 300; ++i) {
    const size_t offset = rng() % 64;
    // Mostly short lengths, some long enough for the interleaved path.
    const size_t len = (i % 5 == 0) ? rng() % (300 * 1024) : rng() % 5000;
    const ByteSpan data(buffer.data() + offset, len);
    const uint32_t start = (i % 2) ? static_cast<uint32_t>(rng()) : 0;
    ASSERT_EQ(crc32c_extend(start, data), crc32c_extend_portable(start, data))
        << "offset " << offset << " len " << len;
  }
}

TEST(Crc32c, DetectsEverySingleBitFlipOfAPage) {
  Bytes page(4096);
  for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>(i * 7);
  const uint32_t good = crc32c(page);
  for (size_t bit = 0; bit < page.size() * 8; bit += 13) {
    page[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_NE(crc32c(page), good) << bit;
    page[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace romulus::protocol::crc32c_test
