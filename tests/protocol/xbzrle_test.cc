// XBZRLE codec: the grammar and validity rules of docs/protocol.md "Codecs".
#include "protocol/xbzrle.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/support/page_patterns.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::xbzrle_test {
namespace {

using testing::Change;
using testing::PageBytes;

struct Pair {
  PageBytes old{};
  PageBytes cur{};
};

Bytes encode(const uint8_t* old, const PageBytes& cur) {
  Bytes out(kXbzrleMaxRecord + 16, 0xEE);
  const size_t n = xbzrle_encode(old, PageView(cur), out.data());
  EXPECT_LE(n, kXbzrleMaxRecord);
  for (size_t i = kXbzrleMaxRecord; i < out.size(); ++i) {
    EXPECT_EQ(out[i], 0xEE) << "wrote past the maximum record at " << i;
  }
  out.resize(n);
  return out;
}

// The record QEMU's rules give without folding gaps (an upper bound).
size_t unfolded_size(const PageBytes& old, const PageBytes& cur) {
  size_t len = 0, i = 0, covered = 0;
  while (i < kPageSize) {
    while (i < kPageSize && old[i] == cur[i]) ++i;
    if (i == kPageSize) break;
    size_t e = i;
    while (e < kPageSize && old[e] != cur[e]) ++e;
    len += varint_length(i - covered) + varint_length(e - i) + (e - i);
    covered = i = e;
  }
  if (len == 0) return 1;
  const size_t rec = 1 + varint_length(len) + len;
  return len > kXbzrleMaxDelta ? kXbzrleMaxRecord : rec;
}

Result<size_t> decode_keeping(ByteSpan in, PageBytes* page) {
  const PageBytes before = *page;
  auto r = xbzrle_decode(in, MutablePageView(*page));
  if (!r.is_ok()) {
    EXPECT_EQ(*page, before) << "a failed decode changed the page";
  }
  return r;
}

void expect_round_trip(const Pair& p) {
  const Bytes rec = encode(p.old.data(), p.cur);
  EXPECT_LE(rec.size(), unfolded_size(p.old, p.cur));
  PageBytes page = p.old;
  auto r = decode_keeping(rec, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, rec.size());
  EXPECT_EQ(page, p.cur);
}

TEST(Xbzrle, RoundTripsEveryChangePatternOnEveryPageKind) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 50; ++iter) {
    for (auto kind : {testing::PageKind::kZero, testing::PageKind::kText,
                      testing::PageKind::kPointers, testing::PageKind::kSmallInts}) {
      for (auto change :
           {Change::kUnchanged, Change::kSparse, Change::kClustered, Change::kDense}) {
        SCOPED_TRACE(std::string(testing::change_name(change)));
        Pair p;
        testing::fill_page(p.old.data(), kind, rng);
        p.cur = p.old;
        testing::apply_change(p.cur.data(), change, rng);
        expect_round_trip(p);
      }
    }
  }
}

TEST(Xbzrle, UnchangedPageIsTagZero) {
  Pair p;
  EXPECT_EQ(encode(p.old.data(), p.cur), Bytes{0x00});
}

TEST(Xbzrle, NullOldGivesWholePageRecord) {
  PageBytes cur;
  cur.fill(3);
  const Bytes rec = encode(nullptr, cur);
  ASSERT_EQ(rec.size(), kXbzrleMaxRecord);
  EXPECT_EQ(rec[0], 0x02);
  EXPECT_TRUE(xbzrle_is_whole_page(rec));
}

TEST(Xbzrle, ChangeAtFirstByteHasEmptyFirstZeroRun) {
  Pair p;
  p.cur[0] = 0xAA;
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 0x03, 0x00, 0x01, 0xAA}));
  expect_round_trip(p);
}

TEST(Xbzrle, ChangeAtLastByte) {
  Pair p;
  p.cur[4095] = 0xBB;
  // zrun 4095 = ff 1f, nzrun 1, the byte.
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 0x04, 0xFF, 0x1F, 0x01, 0xBB}));
  expect_round_trip(p);
}

TEST(Xbzrle, OneByteGapIsFoldedIntoTheNonZeroRun) {
  Pair p;
  p.cur[10] = 1;
  p.cur[12] = 2;  // byte 11 unchanged
  // Folded: zrun 10, nzrun 3 (01 00 02) = 5 bytes; unfolded would be 6.
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 0x05, 10, 3, 1, 0, 2}));
  expect_round_trip(p);
}

TEST(Xbzrle, TwoByteGapIsFoldedOnlyWhenSmaller) {
  Pair p;
  p.cur[10] = 1;
  p.cur[13] = 2;  // bytes 11, 12 unchanged: folding costs 2, a new pair 2 -> keep pairs
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 0x06, 10, 1, 1, 2, 1, 2}));
  expect_round_trip(p);
  Pair q;
  q.cur[10] = 1;
  q.cur[11] = 1;
  q.cur[14] = 2;
  q.cur[15] = 2;  // gap of 2 between runs of 2: folded 6+1 vs 2+1+1+1+2 ... equal -> pairs
  expect_round_trip(q);
}

TEST(Xbzrle, ThreeByteGapIsNeverFolded) {
  Pair p;
  p.cur[10] = 1;
  p.cur[14] = 2;
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 0x06, 10, 1, 1, 3, 1, 2}));
}

TEST(Xbzrle, DenseChangeFallsBackToWholePage) {
  Pair p;
  p.cur.fill(1);
  const Bytes rec = encode(p.old.data(), p.cur);
  EXPECT_EQ(rec.size(), kXbzrleMaxRecord);
  EXPECT_EQ(rec[0], 0x02);
  expect_round_trip(p);
}

TEST(Xbzrle, LongestDeltaIsKeptAndOneByteMoreFallsBack) {
  // First byte unchanged, then a run of n changed bytes to the end of the
  // page: delta = zrun 1 (1) + varint(n) (2) + n. n = 4090 gives L = 4093.
  Pair p;
  for (size_t i = 6; i < kPageSize; ++i) p.cur[i] = 1;  // n = 4090, zrun = 6
  const Bytes rec = encode(p.old.data(), p.cur);
  EXPECT_EQ(rec.size(), 1 + 2 + kXbzrleMaxDelta);
  expect_round_trip(p);
  p.cur[5] = 1;  // L = 4094: not smaller than a whole page
  EXPECT_EQ(encode(p.old.data(), p.cur).size(), kXbzrleMaxRecord);
  expect_round_trip(p);
}

// ---- Decoder against hostile input.

std::vector<Bytes> sample_records(std::mt19937_64& rng) {
  std::vector<Bytes> recs;
  for (auto change : {Change::kSparse, Change::kClustered, Change::kDense}) {
    Pair p;
    testing::fill_page(p.old.data(), testing::PageKind::kPointers, rng);
    p.cur = p.old;
    testing::apply_change(p.cur.data(), change, rng);
    recs.push_back(encode(p.old.data(), p.cur));
  }
  Pair p;
  p.cur[0] = 1;
  p.cur[4095] = 1;
  recs.push_back(encode(p.old.data(), p.cur));
  recs.push_back(encode(nullptr, p.cur));
  return recs;
}

TEST(XbzrleDecode, EveryTruncationIsReportedAsTruncated) {
  std::mt19937_64 rng(3);
  for (const Bytes& rec : sample_records(rng)) {
    for (size_t len = 0; len < rec.size(); ++len) {
      PageBytes page{};
      auto r = decode_keeping(ByteSpan(rec.data(), len), &page);
      ASSERT_FALSE(r.is_ok()) << "prefix " << len << " of " << rec.size();
      EXPECT_EQ(r.status().code(), StatusCode::kTruncated) << r.status().to_string();
    }
  }
}

TEST(XbzrleDecode, EverySingleBitFlipDecodesOrFailsCleanly) {
  std::mt19937_64 rng(4);
  for (Bytes rec : sample_records(rng)) {
    for (size_t bit = 0; bit < std::min<size_t>(rec.size(), 600) * 8; ++bit) {
      rec[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      PageBytes page{};
      auto r = decode_keeping(rec, &page);
      if (r.is_ok()) {
        EXPECT_LE(*r, rec.size());
      }
      rec[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    }
  }
}

StatusCode decode_code(const Bytes& in) {
  PageBytes page{};
  return decode_keeping(in, &page).status().code();
}

TEST(XbzrleDecode, RunsOverflowingThePageAreCorrupt) {
  // zrun 4096, nzrun 1: passes the end.
  EXPECT_EQ(decode_code({0x01, 0x04, 0x80, 0x20, 0x01, 0x00}), StatusCode::kCorrupt);
  // zrun 4095, nzrun 2.
  EXPECT_EQ(decode_code({0x01, 0x05, 0xFF, 0x1F, 0x02, 0x00, 0x00}), StatusCode::kCorrupt);
  // Two pairs whose sum passes 4096: (0, 2048 bytes) twice and one more.
  Bytes big = {0x01};
  Bytes d = {0x00, 0x80, 0x10};
  d.resize(d.size() + 2048, 7);
  d.insert(d.end(), {0x01, 0x80, 0x10});  // zrun 1 + 2048 > 4096 - 2048
  d.resize(d.size() + 2048, 7);
  // L = 4102 > max: corrupt by the length rule already.
  big.push_back(static_cast<uint8_t>(0x80 | (d.size() & 0x7f)));
  big.push_back(static_cast<uint8_t>(d.size() >> 7));
  big.insert(big.end(), d.begin(), d.end());
  EXPECT_EQ(decode_code(big), StatusCode::kCorrupt);
}

TEST(XbzrleDecode, OverLongAndNonMinimalVarintsAreCorrupt) {
  // zrun as a 10-byte varint with bits past 64.
  EXPECT_EQ(decode_code({0x01, 0x0C, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
                         0x01, 0x00}),
            StatusCode::kCorrupt);
  // zrun 1 written as 81 00 (non-minimal).
  EXPECT_EQ(decode_code({0x01, 0x04, 0x81, 0x00, 0x01, 0x09}), StatusCode::kCorrupt);
  // Length written as 83 00.
  EXPECT_EQ(decode_code({0x01, 0x83, 0x00, 0x01, 0x01, 0x09}), StatusCode::kCorrupt);
  // Huge zrun (2^63).
  EXPECT_EQ(
      decode_code({0x01, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01}),
      StatusCode::kCorrupt);
}

TEST(XbzrleDecode, AmbiguousEncodingsAreCorrupt) {
  EXPECT_EQ(decode_code({0x01, 0x00}), StatusCode::kCorrupt);              // L = 0
  EXPECT_EQ(decode_code({0x01, 0x02, 0x05, 0x00}), StatusCode::kCorrupt);  // nzrun 0
  // Second pair with zrun 0: two adjacent non-zero runs.
  EXPECT_EQ(decode_code({0x01, 0x06, 0x01, 0x01, 0xAA, 0x00, 0x01, 0xBB}), StatusCode::kCorrupt);
  // A lone zero run (trailing zero runs are omitted).
  EXPECT_EQ(decode_code({0x01, 0x01, 0x05}), StatusCode::kCorrupt);
  // Delta length above the maximum.
  Bytes big = {0x01, 0xFE, 0x1F};  // L = 4094
  big.resize(big.size() + 4094, 0);
  EXPECT_EQ(decode_code(big), StatusCode::kCorrupt);
  // Unknown tag.
  EXPECT_EQ(decode_code({0x03}), StatusCode::kCorrupt);
  // A non-zero run that passes the declared delta length.
  EXPECT_EQ(decode_code({0x01, 0x03, 0x00, 0x05, 0xAA, 0xBB, 0xCC}), StatusCode::kCorrupt);
}

TEST(XbzrleDecode, BytesAfterTheRecordAreLeftForTheNextRecord) {
  PageBytes page{};
  auto r = decode_keeping(Bytes{0x00, 0x99}, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, 1u);
  r = decode_keeping(Bytes{0x01, 0x03, 0x00, 0x01, 0xAA, 0x01, 0x02}, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, 5u);
  EXPECT_EQ(page[0], 0xAA);
}

}  // namespace
}  // namespace romulus::protocol::xbzrle_test
