// PageCache (and the codec dispatch it drives): counters in constructed
// scenarios, and the invariant that the cache always holds what the receiver
// holds, checked against a simulated receiver.
#include "protocol/page_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "protocol/page_buffer.h"
#include "protocol/page_codec.h"
#include "tests/support/page_patterns.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::page_cache_test {
namespace {

using testing::Change;
using testing::PageBytes;

constexpr size_t kPage = kPageSize;

PageBytes page_of(uint8_t fill) {
  PageBytes p;
  p.fill(fill);
  return p;
}

Bytes encode(PageCache& cache, uint64_t pfn, const PageBytes& cur, CodecId codec) {
  Bytes out(max_record_size(codec));
  out.resize(cache.encode(pfn, PageView(cur), codec, out.data()));
  return out;
}

void expect_stats(const PageCache::Stats& s, uint64_t lookups, uint64_t hits, uint64_t misses,
                  uint64_t evictions, uint64_t overflows) {
  EXPECT_EQ(s.lookups, lookups);
  EXPECT_EQ(s.hits, hits);
  EXPECT_EQ(s.misses, misses);
  EXPECT_EQ(s.evictions, evictions);
  EXPECT_EQ(s.overflows, overflows);
}

// ---- Dispatch.

TEST(PageCodec, MaxRecordSizes) {
  EXPECT_EQ(max_record_size(CodecId::kNone), 4096u);
  EXPECT_EQ(max_record_size(CodecId::kRunSkip), 4097u);
  EXPECT_EQ(max_record_size(CodecId::kXbzrle), 4097u);
  EXPECT_EQ(max_record_size(static_cast<CodecId>(9)), kMaxPageRecord);
}

TEST(PageCodec, NullOldEncodesAWholePageThatNeedsNoCurrentCopy) {
  const PageBytes cur = page_of(0x33);
  for (auto codec : {CodecId::kNone, CodecId::kRunSkip, CodecId::kXbzrle}) {
    Bytes out(max_record_size(codec));
    const size_t n = encode_page_record(codec, nullptr, PageView(cur), out.data());
    EXPECT_EQ(n, max_record_size(codec));
    EXPECT_FALSE(record_needs_current(codec, ByteSpan(out.data(), n)));
    PageBytes page = page_of(0);
    auto r = decode_page_record(codec, ByteSpan(out.data(), n), MutablePageView(page));
    ASSERT_OK(r);
    EXPECT_EQ(*r, n);
    EXPECT_EQ(page, cur);
  }
}

TEST(PageCodec, DeltaRecordsAndGarbageNeedTheCurrentCopy) {
  EXPECT_TRUE(record_needs_current(CodecId::kRunSkip, Bytes{0x00}));
  EXPECT_TRUE(record_needs_current(CodecId::kXbzrle, Bytes{0x01, 0x01}));
  EXPECT_TRUE(record_needs_current(CodecId::kRunSkip, ByteSpan()));
  EXPECT_TRUE(record_needs_current(CodecId::kRunSkip, Bytes{0x80, 0x00}));  // truncated
  EXPECT_TRUE(record_needs_current(CodecId::kNone, Bytes(100)));
  EXPECT_TRUE(record_needs_current(static_cast<CodecId>(7), Bytes(5000)));
}

TEST(PageCodec, UnknownCodecIsCorruptAndNoneNeedsAFullPage) {
  PageBytes page{};
  EXPECT_EQ(
      decode_page_record(static_cast<CodecId>(3), Bytes{0}, MutablePageView(page)).status().code(),
      StatusCode::kCorrupt);
  EXPECT_EQ(decode_page_record(CodecId::kNone, Bytes(4095), MutablePageView(page)).status().code(),
            StatusCode::kTruncated);
}

// ---- Counters.

TEST(PageCache, FirstEncodeMissesThenAnUnchangedPageHitsAsOneByte) {
  PageCache cache(1 << 20);
  const PageBytes p = page_of(1);
  EXPECT_EQ(encode(cache, 5, p, CodecId::kRunSkip).size(), 4097u);
  EXPECT_EQ(encode(cache, 5, p, CodecId::kRunSkip), Bytes{0x00});
  EXPECT_EQ(encode(cache, 5, p, CodecId::kXbzrle), Bytes{0x00});
  expect_stats(cache.stats(), 3, 2, 1, 0, 0);
}

TEST(PageCache, HitWhoseDeltaIsNotWorthItCountsAsOverflow) {
  PageCache cache(1 << 20);
  encode(cache, 1, page_of(1), CodecId::kRunSkip);
  const Bytes rec = encode(cache, 1, page_of(2), CodecId::kRunSkip);
  EXPECT_EQ(rec.size(), 4097u);
  EXPECT_EQ(rec[0], 0x80);
  expect_stats(cache.stats(), 2, 1, 1, 0, 1);
  // The cache now holds page_of(2).
  EXPECT_EQ(encode(cache, 1, page_of(2), CodecId::kRunSkip), Bytes{0x00});
}

TEST(PageCache, CapacityZeroMissesEverything) {
  PageCache cache(0);
  EXPECT_EQ(cache.capacity_bytes(), 0u);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(encode(cache, 9, page_of(4), CodecId::kRunSkip).size(), 4097u);
  expect_stats(cache.stats(), 3, 0, 3, 0, 0);
}

TEST(PageCache, CapacityBelowOnePageMissesEverything) {
  PageCache cache(4095);
  encode(cache, 1, page_of(1), CodecId::kXbzrle);
  EXPECT_EQ(encode(cache, 1, page_of(1), CodecId::kXbzrle).size(), 4097u);
  expect_stats(cache.stats(), 2, 0, 2, 0, 0);
}

TEST(PageCache, OneSetEvictsItsLeastRecentlyUsedEntry) {
  PageCache cache(8 * kPage);  // one set of 8 ways
  for (uint64_t pfn = 0; pfn < 8; ++pfn) encode(cache, pfn, page_of(1), CodecId::kRunSkip);
  encode(cache, 0, page_of(1), CodecId::kRunSkip);  // 0 is now the most recent
  encode(cache, 8, page_of(1), CodecId::kRunSkip);  // evicts 1
  expect_stats(cache.stats(), 10, 1, 9, 1, 0);
  EXPECT_EQ(encode(cache, 0, page_of(1), CodecId::kRunSkip).size(), 1u);     // hit
  EXPECT_EQ(encode(cache, 1, page_of(1), CodecId::kRunSkip).size(), 4097u);  // miss, evicts 2
  EXPECT_EQ(encode(cache, 8, page_of(1), CodecId::kRunSkip).size(), 1u);     // hit
  expect_stats(cache.stats(), 13, 3, 10, 2, 0);
}

TEST(PageCache, SmallCapacityUsesFewerWays) {
  PageCache cache(3 * kPage);  // one set of 3 ways
  for (uint64_t pfn = 0; pfn < 4; ++pfn) encode(cache, pfn, page_of(1), CodecId::kRunSkip);
  expect_stats(cache.stats(), 4, 0, 4, 1, 0);
  EXPECT_EQ(encode(cache, 3, page_of(1), CodecId::kRunSkip).size(), 1u);
}

TEST(PageCache, RawRecordsAreNotCountedAndDropTheEntry) {
  PageCache cache(1 << 20);
  encode(cache, 4, page_of(1), CodecId::kRunSkip);
  const Bytes raw = encode(cache, 4, page_of(2), CodecId::kNone);
  EXPECT_EQ(raw.size(), 4096u);
  expect_stats(cache.stats(), 1, 0, 1, 0, 0);
  // The receiver now holds page_of(2); the old entry (page_of(1)) must not be used.
  EXPECT_EQ(encode(cache, 4, page_of(2), CodecId::kRunSkip).size(), 4097u);
  expect_stats(cache.stats(), 2, 0, 2, 0, 0);
}

TEST(PageCache, ClearForgetsEverything) {
  PageCache cache(1 << 20);
  for (uint64_t pfn = 0; pfn < 10; ++pfn) encode(cache, pfn, page_of(1), CodecId::kRunSkip);
  cache.clear();
  for (uint64_t pfn = 0; pfn < 10; ++pfn) {
    EXPECT_EQ(encode(cache, pfn, page_of(1), CodecId::kRunSkip).size(), 4097u);
  }
  expect_stats(cache.stats(), 20, 0, 20, 0, 0);
}

TEST(PageCache, SetCapacityResizesAndForgets) {
  PageCache cache(1 << 20);
  encode(cache, 1, page_of(1), CodecId::kRunSkip);
  cache.set_capacity(2 << 20);
  EXPECT_EQ(cache.capacity_bytes(), 2u << 20);
  EXPECT_EQ(encode(cache, 1, page_of(1), CodecId::kRunSkip).size(), 4097u);
  cache.set_capacity(0);
  EXPECT_EQ(encode(cache, 1, page_of(1), CodecId::kRunSkip).size(), 4097u);
  expect_stats(cache.stats(), 3, 0, 3, 0, 0);
}

// ---- The invariant, against a simulated receiver.

// The receiver: its image of every PFN, updated only from records.
struct Receiver {
  std::map<uint64_t, PageBytes> image;
  void apply(uint64_t pfn, CodecId codec, const Bytes& rec) {
    PageBytes& page = image[pfn];
    auto r = decode_page_record(codec, rec, MutablePageView(page));
    ASSERT_OK(r);
    ASSERT_EQ(*r, rec.size());
  }
};

// Runs `steps` random encodes over pfns first_pfn, first_pfn + stride, ...;
// checks after every step that the receiver holds the sender's page.
void run_model(PageCache& cache, uint64_t seed, uint64_t first_pfn, uint64_t stride, size_t npfns,
               int steps) {
  std::mt19937_64 rng(seed);
  std::map<uint64_t, PageBytes> sender;
  Receiver receiver;
  for (int step = 0; step < steps; ++step) {
    const uint64_t pfn = first_pfn + stride * (rng() % npfns);
    auto [it, fresh] = sender.try_emplace(pfn);
    if (fresh) testing::fill_page(it->second.data(), testing::kind_for_index(rng()), rng);
    testing::apply_change(it->second.data(), static_cast<Change>(rng() % 4), rng);
    const uint64_t pick = rng() % 10;
    const CodecId codec = pick < 5   ? CodecId::kRunSkip
                          : pick < 9 ? CodecId::kXbzrle
                                     : CodecId::kNone;
    const Bytes rec = encode(cache, pfn, it->second, codec);
    receiver.apply(pfn, codec, rec);
    ASSERT_EQ(receiver.image[pfn], it->second) << "step " << step << " pfn " << pfn;
  }
}

TEST(PageCache, ReceiverAlwaysEqualsSenderUnderRandomEncodesAndEvictions) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  PageCache cache(16 * kPage);  // 2 sets of 8; 64 pfns keep it evicting
  run_model(cache, seed, 0, 1, 64, 4000);
  const auto s = cache.stats();
  EXPECT_EQ(s.hits + s.misses, s.lookups);
  EXPECT_GT(s.evictions, 0u);
  EXPECT_GT(s.hits, 0u);
}

TEST(PageCache, TwoThreadsOnDisjointPfnsKeepTheirReceiversConsistent) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  PageCache cache(24 * kPage);  // 3 sets shared by both threads' pfns
  std::thread even([&] { run_model(cache, seed, 0, 2, 40, 3000); });
  std::thread odd([&] { run_model(cache, seed + 1, 1, 2, 40, 3000); });
  // Meanwhile a control thread clears and resizes: the invariant must survive.
  std::thread control([&] {
    for (int i = 0; i < 20; ++i) {
      cache.clear();
      cache.set_capacity((i % 2 ? 24 : 8) * kPage);
      (void)cache.stats();
      std::this_thread::yield();
    }
  });
  even.join();
  odd.join();
  control.join();
  const auto s = cache.stats();
  EXPECT_EQ(s.hits + s.misses, s.lookups);
}

}  // namespace
}  // namespace romulus::protocol::page_cache_test

namespace romulus::protocol::page_cache_test {
namespace {

TEST(PageBuffer, StartsOnAPageBoundaryAtEverySize) {
  // Sizes below and above glibc's mmap threshold, whose chunks start 16 bytes
  // past a page boundary when allocated with plain new.
  for (size_t pages : {size_t{1}, size_t{3}, size_t{64}, size_t{2048}}) {
    const PageBuffer b = allocate_pages(pages);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % kPageSize, 0u) << pages << " pages";
  }
}

}  // namespace
}  // namespace romulus::protocol::page_cache_test
