// RUN/SKIP codec: the grammar of docs/protocol.md "Codecs", byte for byte.
#include "protocol/runskip.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/reference_decoder.h"
#include "protocol/page_compare.h"
#include "tests/support/page_patterns.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::runskip_test {
namespace {

using testing::Change;
using testing::PageBytes;

struct Pair {
  PageBytes old{};
  PageBytes cur{};
};

Bytes encode(const uint8_t* old, const PageBytes& cur) {
  Bytes out(kRunSkipMaxRecord + 16, 0xEE);
  const size_t n = runskip_encode(old, PageView(cur), out.data());
  EXPECT_LE(n, kRunSkipMaxRecord);
  for (size_t i = kRunSkipMaxRecord; i < out.size(); ++i)
    EXPECT_EQ(out[i], 0xEE) << "wrote past kRunSkipMaxRecord at " << i;
  out.resize(n);
  return out;
}

// The size the grammar says a minimal record has (see runskip.h): every changed
// word in a RUN, every unchanged word before the last change in a SKIP.
size_t minimal_size(const PageBytes& old, const PageBytes& cur) {
  auto changed = [&](size_t w) { return std::memcmp(&old[w * 4], &cur[w * 4], 4) != 0; };
  size_t size = 0, w = 0, last_end = 0;
  while (w < kWordsPerPage) {
    const bool c = changed(w);
    size_t e = w;
    while (e < kWordsPerPage && changed(e) == c) ++e;
    const size_t n = e - w;
    const size_t markers = (n + 126) / 127;
    if (c) {
      size += markers + 4 * n;
      last_end = e;
    } else if (e < kWordsPerPage) {
      size += markers;
    }
    w = e;
  }
  if (last_end < kWordsPerPage) size += 1;  // END
  return size > kRunSkipDeltaBudget ? kRunSkipMaxRecord : size;
}

void expect_round_trip(const Pair& p) {
  const Bytes rec = encode(p.old.data(), p.cur);
  EXPECT_EQ(rec.size(), minimal_size(p.old, p.cur));
  PageBytes page = p.old;
  auto r = runskip_decode(rec, MutablePageView(page));
  ASSERT_OK(r);
  EXPECT_EQ(*r, rec.size());
  EXPECT_EQ(page, p.cur);
}

TEST(RunSkip, RoundTripsEveryChangePatternOnEveryPageKind) {
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

TEST(RunSkip, UnchangedPageIsOneEndByte) {
  Pair p;
  p.old.fill(7);
  p.cur = p.old;
  EXPECT_EQ(encode(p.old.data(), p.cur), Bytes{0x00});
}

TEST(RunSkip, NullOldGivesWholePageRecord) {
  PageBytes cur;
  cur.fill(0x5A);
  const Bytes rec = encode(nullptr, cur);
  ASSERT_EQ(rec.size(), kRunSkipMaxRecord);
  EXPECT_EQ(rec[0], 0x80);
  EXPECT_TRUE(std::equal(cur.begin(), cur.end(), rec.begin() + 1));
  EXPECT_TRUE(runskip_is_whole_page(rec));
}

TEST(RunSkip, ChangeInWordZero) {
  Pair p;
  p.cur[0] = 1;
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 1, 0, 0, 0, 0x00}));
  expect_round_trip(p);
}

TEST(RunSkip, ChangeInLastWordNeedsNoEnd) {
  Pair p;
  p.cur[4095] = 9;
  // SKIP 127 x8 = 1016 words, SKIP 7, RUN 1.
  Bytes want(8, 0xFF);
  want.push_back(0x87);
  want.insert(want.end(), {0x01, 0, 0, 0, 9});
  EXPECT_EQ(encode(p.old.data(), p.cur), want);
  expect_round_trip(p);
}

TEST(RunSkip, SingleUnchangedWordBetweenChangesIsSkipped) {
  Pair p;
  p.cur[0] = 1;  // word 0
  p.cur[8] = 2;  // word 2; word 1 unchanged
  EXPECT_EQ(encode(p.old.data(), p.cur), (Bytes{0x01, 1, 0, 0, 0, 0x81, 0x01, 2, 0, 0, 0, 0x00}));
}

class RunSkipLengths : public ::testing::TestWithParam<size_t> {};

TEST_P(RunSkipLengths, RunOfNWordsSplitsAt127) {
  const size_t n = GetParam();
  Pair p;
  for (size_t w = 0; w < n; ++w) p.cur[w * 4] = static_cast<uint8_t>(1 + w % 200);
  const Bytes rec = encode(p.old.data(), p.cur);
  if (n * 4 > kRunSkipDeltaBudget) {  // too long a run to be worth a delta
    EXPECT_EQ(rec.size(), kRunSkipMaxRecord);
    expect_round_trip(p);
    return;
  }
  size_t pos = 0, words = 0;
  while (words < n) {
    const size_t m = std::min<size_t>(127, n - words);
    ASSERT_EQ(rec[pos], m) << "at " << pos;
    pos += 1 + 4 * m;
    words += m;
  }
  EXPECT_EQ(rec[pos], 0x00);
  EXPECT_EQ(rec.size(), pos + 1);
  expect_round_trip(p);
}

TEST_P(RunSkipLengths, SkipOfNWordsSplitsAt127) {
  const size_t n = GetParam();
  Pair p;
  p.cur[n * 4] = 0x42;  // word n changes after n unchanged words
  const Bytes rec = encode(p.old.data(), p.cur);
  size_t pos = 0, words = 0;
  while (words < n) {
    const size_t m = std::min<size_t>(127, n - words);
    ASSERT_EQ(rec[pos], 0x80 | m) << "at " << pos;
    ++pos;
    words += m;
  }
  EXPECT_EQ(Bytes(rec.begin() + pos, rec.end()), (Bytes{0x01, 0x42, 0, 0, 0, 0x00}));
  expect_round_trip(p);
}

INSTANTIATE_TEST_SUITE_P(Borders, RunSkipLengths,
                         ::testing::Values(1, 126, 127, 128, 254, 255, 256, 381, 1000));

TEST(RunSkip, WholePageChangeFallsBackToWholePageRecord) {
  Pair p;
  p.cur.fill(1);
  const Bytes rec = encode(p.old.data(), p.cur);
  EXPECT_EQ(rec.size(), kRunSkipMaxRecord);
  EXPECT_EQ(rec[0], 0x80);
  expect_round_trip(p);
}

TEST(RunSkip, DeltaWithinTheBudgetIsKeptAndOneWordMoreFallsBack) {
  // Word 0 changed, word 1 unchanged, words 2..2+k changed, then END. Growing k
  // crosses kRunSkipDeltaBudget: below it the delta is sent, above it the page.
  bool kept = false, fell_back = false;
  for (size_t k = 860; k < 920; ++k) {
    Pair p;
    p.cur[0] = 1;
    for (size_t w = 2; w < 2 + k; ++w) p.cur[w * 4] = 1;
    const Bytes rec = encode(p.old.data(), p.cur);
    if (rec.size() <= kRunSkipDeltaBudget) {
      EXPECT_EQ(rec[0], 0x01) << k;
      EXPECT_FALSE(fell_back) << "a larger delta was kept after a smaller one fell back, k " << k;
      kept = true;
    } else {
      EXPECT_EQ(rec.size(), kRunSkipMaxRecord) << k;
      EXPECT_EQ(rec[0], 0x80) << k;
      fell_back = true;
    }
    expect_round_trip(p);
  }
  EXPECT_TRUE(kept);
  EXPECT_TRUE(fell_back);
}

TEST(RunSkip, SparsePageEncodesInAtMostOneFiftiethOfAPage) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 200; ++i) {
    Pair p;
    testing::fill_page(p.old.data(), testing::kind_for_index(i), rng);
    p.cur = p.old;
    testing::apply_change(p.cur.data(), Change::kSparse, rng);
    EXPECT_LE(encode(p.old.data(), p.cur).size(), kPageSize / 50);
  }
}

// ---- The encoder against a plain reference encoder.

// The grammar of runskip.h, applied word by word: each word up to the last
// changed one extends the open marker if that has the same kind (RUN or SKIP)
// and fewer than 127 words, else opens a new one; END follows unless the last
// word changed; a record over kRunSkipDeltaBudget bytes becomes a whole page.
Bytes reference_encode(const PageBytes& old, const PageBytes& cur) {
  auto changed = [&](size_t w) { return std::memcmp(&old[w * 4], &cur[w * 4], 4) != 0; };
  size_t last = 0;  // one past the last changed word
  for (size_t w = 0; w < kWordsPerPage; ++w) {
    if (changed(w)) last = w + 1;
  }
  Bytes out;
  size_t marker = 0, count = 0;
  bool run = false;
  for (size_t w = 0; w < last; ++w) {
    const bool c = changed(w);
    if (out.empty() || c != run || count == 127) {
      marker = out.size();
      out.push_back(0);
      count = 0;
      run = c;
    }
    ++count;
    out[marker] = static_cast<uint8_t>(c ? count : 0x80 | count);
    if (c) out.insert(out.end(), cur.begin() + w * 4, cur.begin() + w * 4 + 4);
  }
  if (last < kWordsPerPage) out.push_back(0x00);
  if (out.size() > kRunSkipDeltaBudget) {
    out.assign(1, 0x80);
    out.insert(out.end(), cur.begin(), cur.end());
  }
  return out;
}

void change_word(PageBytes& page, size_t w, std::mt19937_64& rng) {
  page[w * 4 + rng() % 4] ^= testing::nonzero_byte(rng);
}

// Words [from, to) of page changed.
void change_words(PageBytes& page, size_t from, size_t to, std::mt19937_64& rng) {
  for (size_t w = from; w < to && w < kWordsPerPage; ++w) change_word(page, w, rng);
}

// One random change pattern of many shapes: single words, runs and gaps of the
// lengths where markers split (126..128, 254..255), pages changed at their
// first or last word, clusters, dense pages at a random density.
void random_changes(PageBytes& page, std::mt19937_64& rng) {
  static constexpr size_t kEdgeLengths[] = {1, 2, 63, 64, 65, 126, 127, 128, 129, 254, 255, 256};
  auto edge_length = [&] { return kEdgeLengths[rng() % std::size(kEdgeLengths)]; };
  switch (rng() % 8) {
    case 0:  // a few single words
      for (size_t k = 1 + rng() % 12; k > 0; --k) change_word(page, rng() % kWordsPerPage, rng);
      break;
    case 1: {  // alternating runs and gaps of marker-splitting lengths
      size_t w = rng() % 2 == 0 ? 0 : edge_length();
      while (w < kWordsPerPage) {
        const size_t n = edge_length();
        change_words(page, w, w + n, rng);
        w += n + edge_length();
      }
      break;
    }
    case 2: {  // one run touching the first or the last word
      const size_t n = edge_length();
      if (rng() % 2 == 0) {
        change_words(page, 0, n, rng);
      } else {
        change_words(page, kWordsPerPage - n, kWordsPerPage, rng);
      }
      break;
    }
    case 3:  // the first and the last word
      change_word(page, 0, rng);
      change_word(page, kWordsPerPage - 1, rng);
      break;
    case 4:  // clusters
      for (size_t k = 1 + rng() % 4; k > 0; --k) {
        const size_t start = rng() % kWordsPerPage;
        change_words(page, start, start + 1 + rng() % 80, rng);
      }
      break;
    case 5: {  // dense, at a random density
      const uint64_t per_256 = rng() % 257;
      for (size_t w = 0; w < kWordsPerPage; ++w) {
        if (rng() % 256 < per_256) change_word(page, w, rng);
      }
      break;
    }
    case 6:  // the realistic patterns of the benchmarks
      testing::apply_change(page.data(), static_cast<Change>(rng() % 4), rng);
      break;
    default: {  // runs across 256-byte block boundaries (64 words)
      const size_t boundary = 64 * (1 + rng() % 15);
      change_words(page, boundary - 1 - rng() % 3, boundary + 1 + rng() % 3, rng);
      if (rng() % 2 == 0) change_words(page, boundary + 64, boundary + 64 + edge_length(), rng);
      break;
    }
  }
}

void expect_same_as_reference(const Pair& p) {
  const Bytes rec = encode(p.old.data(), p.cur);
  ASSERT_EQ(rec, reference_encode(p.old, p.cur));
  PageBytes page = p.old;
  auto r = runskip_decode(rec, MutablePageView(page));
  ASSERT_OK(r);
  EXPECT_EQ(*r, rec.size());
  ASSERT_EQ(page, p.cur);
}

TEST(RunSkip, EncoderMatchesReferenceEncoderOnRandomPages) {
  const uint64_t seed = testing::test_seed();
  std::printf("seed %llu (ROMULUS_TEST_SEED replays it)\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 20000; ++i) {
    Pair p;
    testing::fill_page(p.old.data(), testing::kind_for_index(i), rng);
    p.cur = p.old;
    for (size_t k = 1 + rng() % 2; k > 0; --k) random_changes(p.cur, rng);
    ASSERT_NO_FATAL_FAILURE(expect_same_as_reference(p)) << "page " << i;
  }
}

TEST(RunSkip, EncoderMatchesReferenceEncoderWithEveryCompareImplementation) {
  // runskip_encode() picks AVX-512BW or AVX2 at run time; each implementation,
  // the portable and SSE2 fallbacks forced, must give the same records.
  const uint64_t seed = testing::test_seed();
  std::printf("seed %llu (ROMULUS_TEST_SEED replays it)\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  size_t tested = 0;
  for (auto impl :
       {CompareImpl::kPortable, CompareImpl::kSse2, CompareImpl::kAvx2, CompareImpl::kAvx512}) {
    if (!compare_impl_available(impl)) {
      std::printf("compare implementation %d: not on this CPU, skipped\n", static_cast<int>(impl));
      continue;
    }
    ++tested;
    for (int i = 0; i < 3000; ++i) {
      Pair p;
      testing::fill_page(p.old.data(), testing::kind_for_index(i), rng);
      p.cur = p.old;
      for (size_t k = 1 + rng() % 2; k > 0; --k) random_changes(p.cur, rng);
      Bytes rec(kRunSkipMaxRecord);
      rec.resize(runskip_encode_with(impl, p.old.data(), PageView(p.cur), rec.data()));
      ASSERT_EQ(rec, reference_encode(p.old, p.cur))
          << "impl " << static_cast<int>(impl) << " page " << i;
    }
  }
  EXPECT_GE(tested, 1u);
}

TEST(RunSkip, EncoderMatchesReferenceEncoderAroundTheBudget) {
  // Adds changed words one at a time until the delta goes over the budget,
  // checking every step from a little below the budget to the fallback.
  const uint64_t seed = testing::test_seed();
  std::printf("seed %llu (ROMULUS_TEST_SEED replays it)\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 60; ++i) {
    Pair p;
    testing::fill_page(p.old.data(), testing::kind_for_index(i), rng);
    p.cur = p.old;
    random_changes(p.cur, rng);
    // Changes land in a random order, or in clusters, so that both many short
    // RUNs (marker-heavy) and few long ones reach the budget.
    const bool clustered = i % 2 == 1;
    size_t next = rng() % kWordsPerPage;
    for (int step = 0; step < 4 * static_cast<int>(kWordsPerPage);) {
      const size_t size = reference_encode(p.old, p.cur).size();
      if (size + 64 >= kRunSkipDeltaBudget) {
        ASSERT_NO_FATAL_FAILURE(expect_same_as_reference(p)) << "page " << i << " step " << step;
      }
      if (size > kRunSkipDeltaBudget) break;
      // One more changed word adds at most kMaxGrowth bytes (its 4 bytes, a RUN
      // marker and the SKIP markers of a gap of up to 1023 words), so the steps
      // that cannot reach 64 bytes below the budget are taken without encoding:
      // the same pages, checked at the same steps (the reference encoder is
      // quadratic here, and this test took 110 s under ASan).
      constexpr size_t kMaxGrowth = 4 + 1 + (kWordsPerPage + kRunSkipMaxRun - 1) / kRunSkipMaxRun;
      const size_t below = kRunSkipDeltaBudget - 64;
      const size_t free_steps = size < below ? std::max<size_t>(1, (below - size) / kMaxGrowth) : 1;
      for (size_t k = 0; k < free_steps && step < 4 * static_cast<int>(kWordsPerPage);
           ++k, ++step) {
        next = clustered ? (next + 1 + rng() % 3) % kWordsPerPage : rng() % kWordsPerPage;
        change_word(p.cur, next, rng);
      }
    }
  }
}

TEST(RunSkip, EncoderMatchesReferenceEncoderOnEveryRunOfOneToThreeHundredWords) {
  // Every run length from 1 to 300 words, starting at every offset within a
  // 256-byte block and at the page edges.
  std::mt19937_64 rng(3);
  for (size_t n = 1; n <= 300; ++n) {
    for (size_t start : {size_t{0}, size_t{1}, size_t{62}, size_t{63}, size_t{64}, size_t{65},
                         size_t{127}, size_t{500}, kWordsPerPage - n}) {
      Pair p;
      change_words(p.cur, start, start + n, rng);
      ASSERT_NO_FATAL_FAILURE(expect_same_as_reference(p)) << "run of " << n << " at " << start;
    }
  }
}

// ---- Decoder against hostile input.

Result<size_t> decode_keeping(ByteSpan in, PageBytes* page) {
  const PageBytes before = *page;
  auto r = runskip_decode(in, MutablePageView(*page));
  if (!r.is_ok()) {
    EXPECT_EQ(*page, before) << "a failed decode changed the page";
  }
  return r;
}

std::vector<Bytes> sample_records(std::mt19937_64& rng) {
  std::vector<Bytes> recs;
  for (auto change : {Change::kSparse, Change::kClustered, Change::kDense}) {
    Pair p;
    testing::fill_page(p.old.data(), testing::PageKind::kText, rng);
    p.cur = p.old;
    testing::apply_change(p.cur.data(), change, rng);
    recs.push_back(encode(p.old.data(), p.cur));
  }
  Pair p;
  p.cur[4095] = 1;  // ends without END
  recs.push_back(encode(p.old.data(), p.cur));
  recs.push_back(encode(nullptr, p.cur));  // whole page
  return recs;
}

TEST(RunSkipDecode, EveryTruncationIsReportedAsTruncated) {
  std::mt19937_64 rng(1);
  for (const Bytes& rec : sample_records(rng)) {
    for (size_t len = 0; len < rec.size(); ++len) {
      PageBytes page{};
      auto r = decode_keeping(ByteSpan(rec.data(), len), &page);
      ASSERT_FALSE(r.is_ok()) << "prefix of " << len << " of " << rec.size();
      EXPECT_EQ(r.status().code(), StatusCode::kTruncated) << r.status().to_string();
    }
  }
}

// Records whose markers take every path of the decoder: short RUNs (saved for
// undo) before and after long ones (the rest checked first), SKIPs of every
// split, records with and without END, and the realistic patterns.
std::vector<Pair> damage_pages(std::mt19937_64& rng) {
  std::vector<Pair> pages;
  for (int i = 0; i < 48; ++i) {
    Pair p;
    testing::fill_page(p.old.data(), testing::kind_for_index(i), rng);
    p.cur = p.old;
    if (i % 3 == 0) {
      // Short runs, one long run (16..40 words), short runs.
      for (int k = 0; k < 4; ++k) change_word(p.cur, rng() % 300, rng);
      const size_t start = 300 + rng() % 200;
      change_words(p.cur, start, start + 16 + rng() % 25, rng);
      for (int k = 0; k < 4; ++k) change_word(p.cur, 600 + rng() % 424, rng);
    } else {
      random_changes(p.cur, rng);
    }
    pages.push_back(p);
  }
  return pages;
}

// The decoder and the plain one-pass decoder of bench/reference_decoder.h
// agree on `rec` applied to `start`: both succeed with the same length and
// page, or both fail with the same code, and the decoder then left the page
// exactly as it was.
void expect_decoders_agree(ByteSpan rec, const PageBytes& start) {
  PageBytes page = start;
  PageBytes ref_page = start;
  const auto r = runskip_decode(rec, MutablePageView(page));
  const auto ref = bench::reference_runskip_decode(rec, MutablePageView(ref_page));
  ASSERT_EQ(r.is_ok(), ref.is_ok()) << (r.is_ok() ? ref.status() : r.status()).to_string();
  if (r.is_ok()) {
    ASSERT_EQ(*r, *ref);
    ASSERT_EQ(page, ref_page);
  } else {
    ASSERT_EQ(r.status().code(), ref.status().code()) << r.status().to_string();
    ASSERT_EQ(page, start) << "a failed decode changed the page: " << r.status().to_string();
  }
}

TEST(RunSkipDecode, MatchesReferenceDecoderOnEveryDamagedRecord) {
  // Every prefix, and every byte replaced by each of several marker-like
  // values, of records of many shapes, decoded onto the page they were made
  // against (so an incomplete undo shows).
  const uint64_t seed = testing::test_seed();
  std::printf("seed %llu (ROMULUS_TEST_SEED replays it)\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  size_t cases = 0;
  for (const Pair& p : damage_pages(rng)) {
    Bytes rec = encode(p.old.data(), p.cur);
    ASSERT_NO_FATAL_FAILURE(expect_decoders_agree(rec, p.old));
    for (size_t len = 0; len < rec.size(); ++len) {
      ASSERT_NO_FATAL_FAILURE(expect_decoders_agree(ByteSpan(rec.data(), len), p.old))
          << "prefix of " << len << " of " << rec.size();
    }
    for (size_t at = 0; at < rec.size(); ++at) {
      const uint8_t was = rec[at];
      for (uint8_t v : {uint8_t{0x00}, uint8_t{0x01}, uint8_t{0x10}, uint8_t{0x7F}, uint8_t{0x80},
                        uint8_t{0x81}, uint8_t{0xFF}, static_cast<uint8_t>(was ^ 0x01),
                        static_cast<uint8_t>(was ^ 0x40), static_cast<uint8_t>(was ^ 0x80)}) {
        rec[at] = v;
        ASSERT_NO_FATAL_FAILURE(expect_decoders_agree(rec, p.old))
            << "byte " << at << " of " << rec.size() << " set to " << int{v};
        ++cases;
      }
      rec[at] = was;
    }
  }
  std::printf("%zu damaged records\n", cases);
}

TEST(RunSkipDecode, MatchesReferenceDecoderOnEveryRunLength) {
  // A RUN of every length 1..300 words (the undo limit lies inside), after
  // and before short RUNs, intact and cut one byte short.
  std::mt19937_64 rng(4);
  for (size_t n = 1; n <= 300; ++n) {
    Pair p;
    testing::fill_page(p.old.data(), testing::PageKind::kText, rng);
    p.cur = p.old;
    change_word(p.cur, 3, rng);
    change_words(p.cur, 100, 100 + n, rng);
    change_word(p.cur, 1000, rng);
    const Bytes rec = encode(p.old.data(), p.cur);
    ASSERT_NO_FATAL_FAILURE(expect_decoders_agree(rec, p.old)) << "run of " << n;
    ASSERT_NO_FATAL_FAILURE(expect_decoders_agree(ByteSpan(rec.data(), rec.size() - 1), p.old))
        << "run of " << n << ", cut";
  }
}

TEST(RunSkipDecode, EverySingleBitFlipDecodesOrFailsCleanly) {
  std::mt19937_64 rng(2);
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

TEST(RunSkipDecode, MarkerRunningPastThePageIsCorrupt) {
  Bytes in(8, 0xFF);   // SKIP 127 x 8 = 1016 words
  in.push_back(0x89);  // SKIP 9: 1025 > 1024
  PageBytes page{};
  auto r = decode_keeping(in, &page);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("offset 8"), std::string::npos) << r.status().message();

  Bytes run(8, 0xFF);
  run.push_back(0x09);  // RUN 9 past the end
  run.resize(run.size() + 36, 0);
  EXPECT_EQ(decode_keeping(run, &page).status().code(), StatusCode::kCorrupt);
}

TEST(RunSkipDecode, WholePageMarkerAfterTheFirstByteIsCorrupt) {
  PageBytes page{};
  Bytes in = {0x81, 0x80};
  in.resize(2 + 4096, 0);
  auto r = decode_keeping(in, &page);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("offset 1"), std::string::npos) << r.status().message();
}

TEST(RunSkipDecode, BytesAfterTheRecordAreLeftForTheNextRecord) {
  PageBytes page{};
  // END record, then garbage.
  auto r = decode_keeping(Bytes{0x00, 0xAB, 0xCD}, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, 1u);
  // A record covering all 1024 words ends without END; the following 0x00 is not its.
  Bytes full(8, 0xFF);
  full.insert(full.end(), {0x88, 0x00, 0x00});
  r = decode_keeping(full, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, 9u);
  // Whole page, then more.
  Bytes whole(1 + 4096 + 5, 0x11);
  whole[0] = 0x80;
  r = decode_keeping(whole, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, kRunSkipMaxRecord);
  EXPECT_EQ(page[4095], 0x11);
}

// docs/protocol.md, "RUN/SKIP": the decoder accepts any marker sequence, not
// only the encoder's (whose records are at most 4097 bytes): 1024 RUN 1
// markers are the longest valid record, 1024 x (1 + 4) = 5120 bytes.
TEST(RunSkipDecode, LongestValidRecordIsOneThousandTwentyFourRunsOfOneWord) {
  PageBytes page{};
  Bytes in;
  for (size_t w = 0; w < kWordsPerPage; ++w) in.insert(in.end(), {0x01, 0x5a, 0x5a, 0x5a, 0x5a});
  ASSERT_EQ(in.size(), 5120u);
  in.push_back(0x00);  // the next record
  auto r = decode_keeping(in, &page);
  ASSERT_OK(r);
  EXPECT_EQ(*r, 5120u);
  EXPECT_EQ(page[0], 0x5a);
  EXPECT_EQ(page[4095], 0x5a);
}

TEST(RunSkipDecode, EmptyInputIsTruncated) {
  PageBytes page{};
  EXPECT_EQ(decode_keeping(ByteSpan(), &page).status().code(), StatusCode::kTruncated);
}

// ---- The SIMD comparison behind the encoder.

TEST(PageCompare, EveryImplementationFindsExactlyTheChangedWordsAndBytes) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 200; ++iter) {
    Pair p;
    testing::fill_page(p.old.data(), testing::kind_for_index(iter), rng);
    p.cur = p.old;
    testing::apply_change(p.cur.data(), static_cast<Change>(iter % 4), rng);
    WordDiffMap want_w{};
    ByteDiffMap want_b{};
    for (size_t i = 0; i < kPageSize; ++i) {
      if (p.old[i] != p.cur[i]) {
        want_b[i / 64] |= uint64_t{1} << (i % 64);
        want_w[i / 256] |= uint64_t{1} << ((i / 4) % 64);
      }
    }
    for (auto impl :
         {CompareImpl::kPortable, CompareImpl::kSse2, CompareImpl::kAvx2, CompareImpl::kAvx512}) {
      if (!compare_impl_available(impl)) {
        continue;
      }
      WordDiffMap w;
      ByteDiffMap b;
      uint32_t want_blocks = 0;
      for (size_t k = 0; k < want_w.size(); ++k) {
        want_blocks |= static_cast<uint32_t>(want_w[k] != 0) << k;
      }
      w.fill(0x5555);  // every element must be written
      EXPECT_EQ(diff_word_blocks_with(impl, p.old.data(), p.cur.data(), &w), want_blocks)
          << "impl " << static_cast<int>(impl);
      EXPECT_EQ(w, want_w) << "diff_word_blocks, impl " << static_cast<int>(impl);
      EXPECT_EQ(diff_words_with(impl, p.old.data(), p.cur.data(), &w), p.old != p.cur);
      EXPECT_EQ(diff_bytes_with(impl, p.old.data(), p.cur.data(), &b), p.old != p.cur);
      EXPECT_EQ(w, want_w) << "impl " << static_cast<int>(impl);
      EXPECT_EQ(b, want_b) << "impl " << static_cast<int>(impl);
    }
  }
}

TEST(PageCompare, FindNextBitWalksSetAndClearBits) {
  WordDiffMap m{};
  m[0] = 0b1100;
  m[15] = uint64_t{1} << 63;
  EXPECT_EQ(find_next_bit(m.data(), 1024, 0, true), 2u);
  EXPECT_EQ(find_next_bit(m.data(), 1024, 2, false), 4u);
  EXPECT_EQ(find_next_bit(m.data(), 1024, 4, true), 1023u);
  EXPECT_EQ(find_next_bit(m.data(), 1024, 1023, false), 1024u);
  EXPECT_EQ(find_next_bit(m.data(), 1024, 1024, true), 1024u);
}

}  // namespace
}  // namespace romulus::protocol::runskip_test
