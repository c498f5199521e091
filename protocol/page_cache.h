// PageCache: the sender's memory of what the receiver holds for recently sent
// pages, so that a dirty page can be sent as a small delta (RUN/SKIP or XBZRLE)
// against its previous contents instead of as a whole page.
//
// Invariant: for every PFN the cache holds, its copy equals what the receiver
// holds after applying every record emitted so far. encode() keeps it by
// storing exactly `cur` whenever it emits a record for a PFN; a PFN it does not
// hold is sent as a whole page. Whoever sends pages to the receiver by another
// path (a Format A full sync) must clear() the cache or never have filled it.
//
// Eviction: set-associative, 8 ways per set, LRU within a set. A PFN maps to
// one set by a multiplicative hash, so neighbouring PFNs spread over sets. QEMU's
// XBZRLE cache is direct-mapped (1 way): two hot pages whose PFNs collide evict
// each other on every epoch. With 8 ways a set absorbs such collisions, while a
// lookup still only scans 8 tags. LRU over 8 entries is a 64-bit stamp compare,
// cheaper to reason about than CLOCK and exact; a dirty page that was sent
// recently is the one most likely to be dirty again (the working set of an
// epoch-based workload).
//
// Memory: floor(capacity / 4096 / 8) sets of 8 page slots (fewer ways when the
// capacity holds fewer than 8 pages), so page data never exceeds capacity_bytes;
// metadata is 24 bytes per slot plus 256 mutexes. Every slot starts on a page
// boundary (protocol/page_buffer.h). Capacity 0 holds nothing:
// every lookup misses and every page goes whole.
//
// Threading: encode() may be called concurrently from several encoder threads
// for different PFNs (two calls for the same PFN must be ordered by the caller,
// as their records are). Sets are guarded by 256 striped mutexes (set i by
// mutex i % 256); there is no global lock on the hot path. clear() and
// set_capacity() take every stripe and may run at any time. Counters are atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "protocol/page.h"
#include "protocol/page_buffer.h"

namespace romulus::protocol {

class PageCache {
 public:
  struct Stats {
    uint64_t lookups = 0;    // encode() calls with a delta codec
    uint64_t hits = 0;       // the PFN was cached: a delta against it was tried
    uint64_t misses = 0;     // not cached (a whole-page record was sent)
    uint64_t evictions = 0;  // misses that replaced another PFN's entry
    uint64_t overflows = 0;  // hits whose delta was not worth it (whole page sent)
  };

  static constexpr size_t kWays = 8;
  static constexpr size_t kLockStripes = 256;

  explicit PageCache(size_t capacity_bytes = 64u << 20);
  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

  // Encodes cur as one record of `codec` against pfn's cached previous copy (a
  // whole-page record on a miss), then stores cur as pfn's cached copy
  // (inserting, evicting the set's least recently used entry if needed). `out`
  // has room for max_record_size(codec) bytes; returns the bytes written.
  // For CodecId::kNone: a raw record; nothing is looked up, counted or
  // inserted, but an entry for pfn is dropped (the receiver's copy changes).
  size_t encode(uint64_t pfn, PageView cur, CodecId codec, uint8_t* out);

  // Forgets every entry (a new full sync). Counters are kept.
  void clear();

  // Resizes to `bytes` (rounded down to whole sets); forgets every entry.
  void set_capacity(size_t bytes);

  size_t capacity_bytes() const { return capacity_bytes_.load(std::memory_order_relaxed); }

  // Cumulative counters since construction.
  Stats stats() const;

 private:
  struct Slot {
    uint64_t pfn = 0;
    uint64_t last_use = 0;  // 0 = empty
  };

  // Geometry and storage; written only while every stripe is held.
  struct Layout {
    size_t sets = 0;
    size_t ways = 0;
    PageBuffer data;               // sets * ways pages, page-aligned
    std::vector<Slot> slots;       // sets * ways
    std::vector<uint64_t> clocks;  // per set: last stamp handed out
  };

  size_t set_of(uint64_t pfn, size_t sets) const;
  void lock_all();
  void unlock_all();
  void build(size_t bytes);  // with every stripe held (or in the constructor)

  std::array<std::mutex, kLockStripes> stripes_;
  std::atomic<size_t> sets_{0};  // mirrors layout_.sets for lock-free set choice
  std::atomic<size_t> capacity_bytes_{0};
  Layout layout_;

  std::atomic<uint64_t> lookups_{0}, hits_{0}, misses_{0}, evictions_{0}, overflows_{0};
};

}  // namespace romulus::protocol
