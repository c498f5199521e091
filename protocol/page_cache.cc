#include "protocol/page_cache.h"

#include <algorithm>
#include <cstring>

#include "protocol/page_codec.h"

namespace romulus::protocol {

PageCache::PageCache(size_t capacity_bytes) { build(capacity_bytes); }

size_t PageCache::set_of(uint64_t pfn, size_t sets) const {
  // Fibonacci hashing, then a multiply-shift into [0, sets): the high bits of
  // the product are well mixed for consecutive PFNs.
  const uint64_t h = pfn * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>((static_cast<unsigned __int128>(h) * sets) >> 64);
}

void PageCache::lock_all() {
  for (auto& m : stripes_) m.lock();
}

void PageCache::unlock_all() {
  for (auto& m : stripes_) m.unlock();
}

void PageCache::build(size_t bytes) {
  const size_t pages = bytes / kPageSize;
  const size_t ways = std::min(kWays, pages);
  const size_t sets = ways == 0 ? 0 : pages / ways;
  Layout fresh;
  fresh.sets = sets;
  fresh.ways = ways;
  if (sets * ways > 0) {
    // Not zero-filled: a slot's bytes are only read after a page was stored.
    fresh.data = allocate_pages(sets * ways);
  }
  fresh.slots.assign(sets * ways, Slot{});
  fresh.clocks.assign(sets, 0);
  layout_ = std::move(fresh);
  sets_.store(sets, std::memory_order_release);
  capacity_bytes_.store(bytes, std::memory_order_relaxed);
}

size_t PageCache::encode(uint64_t pfn, PageView cur, CodecId codec, uint8_t* out) {
  const bool delta_codec = codec == CodecId::kRunSkip || codec == CodecId::kXbzrle;
  if (delta_codec) lookups_.fetch_add(1, std::memory_order_relaxed);

  // Choose the set without a lock, then confirm under its stripe that the
  // layout did not change meanwhile (set_capacity holds every stripe).
  while (true) {
    const size_t sets = sets_.load(std::memory_order_acquire);
    if (sets == 0) {
      // Nothing is cached, and nothing can be stored for this PFN.
      if (delta_codec) misses_.fetch_add(1, std::memory_order_relaxed);
      return encode_page_record(codec, nullptr, cur, out);
    }
    const size_t set = set_of(pfn, sets);
    std::lock_guard<std::mutex> lock(stripes_[set % kLockStripes]);
    if (layout_.sets != sets) continue;

    const size_t ways = layout_.ways;
    Slot* slots = layout_.slots.data() + set * ways;
    uint8_t* pages = layout_.data.get() + set * ways * kPageSize;
    size_t way = ways;
    for (size_t i = 0; i < ways; ++i) {
      if (slots[i].last_use != 0 && slots[i].pfn == pfn) {
        way = i;
        break;
      }
    }

    if (!delta_codec) {
      // The receiver's copy becomes the raw page; a stale entry must go.
      if (way != ways) slots[way] = Slot{};
      return encode_page_record(codec, nullptr, cur, out);
    }

    const uint64_t stamp = ++layout_.clocks[set];
    if (way != ways) {
      hits_.fetch_add(1, std::memory_order_relaxed);
      uint8_t* page = pages + way * kPageSize;
      const size_t n = encode_page_record(codec, page, cur, out);
      if (!record_needs_current(codec, ByteSpan(out, n))) {
        overflows_.fetch_add(1, std::memory_order_relaxed);
      }
      if (n != 1) std::memcpy(page, cur.data(), kPageSize);  // n == 1: unchanged page
      slots[way].last_use = stamp;
      return n;
    }

    misses_.fetch_add(1, std::memory_order_relaxed);
    way = 0;
    for (size_t i = 0; i < ways; ++i) {
      if (slots[i].last_use < slots[way].last_use) way = i;  // empty slots have 0
    }
    if (slots[way].last_use != 0) evictions_.fetch_add(1, std::memory_order_relaxed);
    slots[way] = Slot{pfn, stamp};
    std::memcpy(pages + way * kPageSize, cur.data(), kPageSize);
    return encode_page_record(codec, nullptr, cur, out);
  }
}

void PageCache::clear() {
  lock_all();
  std::fill(layout_.slots.begin(), layout_.slots.end(), Slot{});
  std::fill(layout_.clocks.begin(), layout_.clocks.end(), 0);
  unlock_all();
}

void PageCache::set_capacity(size_t bytes) {
  lock_all();
  build(bytes);
  unlock_all();
}

PageCache::Stats PageCache::stats() const {
  Stats s;
  s.lookups = lookups_.load(std::memory_order_relaxed);
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.overflows = overflows_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace romulus::protocol
