#include "storage/log_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "protocol/coding.h"
#include "tests/support/status_matchers.h"

namespace romulus::storage::log_format_test {
namespace {

using protocol::Bytes;
using protocol::ByteSpan;
using protocol::kPageSize;

constexpr uint64_t kArenaPages = 64;

Bytes pages_of(std::span<const uint64_t> pfns, bool compressible) {
  Bytes pages(pfns.size() * kPageSize);
  std::mt19937 rng(7);
  for (size_t i = 0; i < pages.size(); ++i) {
    pages[i] = compressible ? static_cast<uint8_t>(i / 512 + pfns[i / kPageSize])
                            : static_cast<uint8_t>(rng());
  }
  return pages;
}

// Decodes one whole record from `bytes` (header + body).
Status decode(ByteSpan bytes, RecordPages& out, RecordHeader* header_out = nullptr) {
  ROMULUS_ASSIGN_OR_RETURN(RecordHeader h, decode_record_header(bytes, kArenaPages));
  if (header_out != nullptr) *header_out = h;
  if (bytes.size() < h.record_length()) return Status::truncated("body cut");
  return decode_record_body(h, bytes.first(kRecordHeaderSize),
                            bytes.subspan(kRecordHeaderSize, h.body_length), kArenaPages, out);
}

TEST(LogFormat, LogHeaderRoundTrips) {
  const Bytes b = encode_log_header({3, 99});
  ASSERT_EQ(b.size(), kLogHeaderSize);
  Result<LogHeader> h = decode_log_header(b);
  ASSERT_OK(h);
  EXPECT_EQ(h->generation, 3u);
  EXPECT_EQ(h->base_epoch, 99u);
}

TEST(LogFormat, LogHeaderRefusesEveryFlippedByteAndEveryCut) {
  const Bytes b = encode_log_header({3, 99});
  for (size_t i = 0; i < b.size(); ++i) {
    Bytes d = b;
    d[i] ^= 0x40;
    EXPECT_FALSE(decode_log_header(d).is_ok()) << i;
    EXPECT_FALSE(decode_log_header(ByteSpan(b).first(i)).is_ok()) << i;
  }
}

TEST(LogFormat, RecordRoundTripsRawAndCompressed) {
  const std::vector<uint64_t> pfns = {0, 5, 6, 63};
  for (bool compressible : {false, true}) {
    const Bytes pages = pages_of(pfns, compressible);
    Bytes out;
    encode_record(42, false, pfns, pages.data(), 1234, /*try_lz4=*/true, out);
    RecordPages r;
    RecordHeader h;
    ASSERT_OK(decode(out, r, &h));
    EXPECT_EQ(h.lz4(), compressible);
    EXPECT_EQ(h.epoch, 42u);
    EXPECT_EQ(h.durable_offset, 1234u);
    EXPECT_FALSE(h.continued());
    EXPECT_EQ(r.pfns, pfns);
    EXPECT_EQ(r.pages, pages);
    if (compressible) {
      EXPECT_LT(out.size(), kRecordHeaderSize + pfns.size() * kRecordBytesPerPage);
    }
  }
}

TEST(LogFormat, AnEmptyCheckpointIsAValidRecord) {
  Bytes out;
  encode_record(5, false, {}, nullptr, 0, true, out);
  EXPECT_EQ(out.size(), kRecordHeaderSize);
  RecordPages r;
  ASSERT_OK(decode(out, r));
  EXPECT_TRUE(r.pfns.empty());
}

TEST(LogFormat, EveryFlippedByteIsCaught) {
  const std::vector<uint64_t> pfns = {1, 2, 40};
  for (bool compressible : {false, true}) {
    const Bytes pages = pages_of(pfns, compressible);
    Bytes out;
    encode_record(9, false, pfns, pages.data(), 0, true, out);
    for (size_t i = 0; i < out.size(); ++i) {
      Bytes d = out;
      d[i] ^= static_cast<uint8_t>(1u << (i % 8));
      RecordPages r;
      EXPECT_FALSE(decode(d, r).is_ok()) << "byte " << i << (compressible ? " (lz4)" : "");
    }
  }
}

TEST(LogFormat, EveryTruncationIsCaught) {
  const std::vector<uint64_t> pfns = {3, 4};
  const Bytes pages = pages_of(pfns, true);
  Bytes out;
  encode_record(9, false, pfns, pages.data(), 0, true, out);
  for (size_t n = 0; n < out.size(); ++n) {
    RecordPages r;
    EXPECT_FALSE(decode(ByteSpan(out).first(n), r).is_ok()) << n;
  }
}

TEST(LogFormat, PfnsOutOfOrderOrPastTheArenaAreRefusedEvenWithAGoodCrc) {
  for (const std::vector<uint64_t>& pfns :
       {std::vector<uint64_t>{5, 5}, std::vector<uint64_t>{6, 5},
        std::vector<uint64_t>{kArenaPages}}) {
    const Bytes pages = pages_of(pfns, false);
    Bytes out;
    encode_record(1, false, pfns, pages.data(), 0, false, out);
    RecordPages r;
    const Status st = decode(out, r);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.to_string();
  }
}

TEST(LogFormat, AHeaderWithMorePagesThanTheArenaIsRefusedBeforeItsBody) {
  std::vector<uint64_t> pfns(kArenaPages + 1);
  for (size_t i = 0; i < pfns.size(); ++i) pfns[i] = i;
  const Bytes pages = pages_of(pfns, false);
  Bytes out;
  encode_record(1, false, pfns, pages.data(), 0, false, out);
  EXPECT_FALSE(decode_record_header(out, kArenaPages).is_ok());
  EXPECT_OK(decode_record_header(out, kArenaPages + 1));
}

TEST(LogFormat, ContinuedFlagRoundTrips) {
  const std::vector<uint64_t> pfns = {7};
  const Bytes pages = pages_of(pfns, false);
  Bytes out;
  encode_record(3, true, pfns, pages.data(), 0, false, out);
  RecordPages r;
  RecordHeader h;
  ASSERT_OK(decode(out, r, &h));
  EXPECT_TRUE(h.continued());
}

}  // namespace
}  // namespace romulus::storage::log_format_test
