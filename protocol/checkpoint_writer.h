// The sending half of the checkpoint chunk stream (docs/protocol.md, "Chunks").
//
// Pure: these functions only append bytes; the caller owns the socket. A
// checkpoint is produced in three parts so that page batches can be encoded
// on several threads and sent in order:
//
//   CheckpointFramer framer;
//   send(framer.begin(epoch, flags));
//   for each batch, in PFN order:            // encode_body_* may run on any thread
//     Bytes body; encode_body_format_b(pfns, pages, cache, options, body, &stats);
//     framer.add_body(body, pfns.size());    // in the order the bodies are sent
//     send(body);
//   send(framer.end());
//
// The framer keeps the running CRC32C and page count of everything between
// begin and end; the reader rejects a checkpoint whose tail does not match.
//
// Threading: encode_body_format_a/b are reentrant and may run concurrently on
// disjoint PFN sets (the PageCache is thread-safe for different PFNs). A
// CheckpointFramer is a plain value used by one thread at a time.
#pragma once

#include <cstdint>
#include <span>

#include "protocol/coding.h"
#include "protocol/page.h"
#include "protocol/page_cache.h"
#include "protocol/wire_format.h"

namespace romulus::protocol {

struct EncodeOptions {
  CodecId codec = CodecId::kRunSkip;
  // kAuto: LZ4 is tried on a payload that holds whole-page records (cache
  // misses) and kept if smaller. kAlways: tried on every payload, kept if
  // smaller. kOff: never.
  enum class Lz4 { kOff, kAuto, kAlways } lz4 = Lz4::kAuto;
  // Target size of one chunk, header included. Every chunk holds at least one
  // record or PFN, and no chunk exceeds the limits in wire_format.h.
  size_t max_chunk_bytes = 256 << 10;
};

// The names of --lz4, in the order help texts list them.
inline constexpr EnumName<EncodeOptions::Lz4> kLz4Names[] = {
    {EncodeOptions::Lz4::kAuto, "auto"},
    {EncodeOptions::Lz4::kOff, "off"},
    {EncodeOptions::Lz4::kAlways, "always"}};

// Counters, added to (never reset) by the encoders.
struct EncodeStats {
  uint64_t pages = 0;        // pages encoded
  uint64_t raw_bytes = 0;    // pages * 4096
  uint64_t wire_bytes = 0;   // bytes appended to `out`
  uint64_t whole_pages = 0;  // pages sent whole (Format A, cache misses, overflows)
  uint64_t lz4_chunks = 0;   // COMPRESSED_DATA chunks whose records went through LZ4
};

// Appends the Format B body chunks for `pfns` (strictly increasing) whose
// contents are `pages` (pfns.size() * 4096 contiguous bytes) to `out`: PFN
// arrays, each followed by the COMPRESSED_DATA chunks holding its records
// (records made by cache.encode(), so the cache must mirror the receiver).
void encode_body_format_b(std::span<const uint64_t> pfns, const uint8_t* pages, PageCache& cache,
                          const EncodeOptions& options, Bytes& out, EncodeStats* stats);
// The same, with the contents of pfns[i] at pages[i] (4096 bytes each, anywhere:
// e.g. straight from a tracker's copy of the arena). pages.size() == pfns.size().
void encode_body_format_b(std::span<const uint64_t> pfns, std::span<const uint8_t* const> pages,
                          PageCache& cache, const EncodeOptions& options, Bytes& out,
                          EncodeStats* stats);

// Appends the Format A body chunks for `pfns`: PFN arrays of at most
// kMaxPfnBatch entries, each followed by its raw pages. The cache is not
// involved (a full sync clears it).
void encode_body_format_a(std::span<const uint64_t> pfns, const uint8_t* pages, Bytes& out,
                          EncodeStats* stats);
// The same, with the contents of pfns[i] at pages[i]. pages.size() == pfns.size().
void encode_body_format_a(std::span<const uint64_t> pfns, std::span<const uint8_t* const> pages,
                          Bytes& out, EncodeStats* stats);

// Begin chunk, running CRC and page count, end chunk + tail of one checkpoint.
class CheckpointFramer {
 public:
  // Starts a checkpoint: returns its begin chunk (and resets the framer).
  Bytes begin(uint64_t epoch, uint32_t flags);
  // Accounts for body bytes exactly as sent, in order, and the pages they carry.
  void add_body(ByteSpan body, uint32_t pages);
  // Returns the end-of-body chunk and the tail (epoch, page count, CRC32C).
  Bytes end();

  uint64_t epoch() const { return epoch_; }
  uint32_t pages() const { return pages_; }

 private:
  uint64_t epoch_ = 0;
  uint32_t pages_ = 0;
  uint32_t crc_ = 0;
};

// DEVICE_STATE (a virtual machine's devices), inside a consistent checkpoint:
// its bytes go through CheckpointFramer::add_body(chunk, 0) like any body.
Bytes encode_device_state(ByteSpan state);

// Chunks outside checkpoints.
Bytes encode_heartbeat(uint64_t ns);
Bytes encode_enable_compression();
Bytes encode_goodbye();
// HANDOVER: the primary stops on purpose and hands the pair to this backup,
// which takes over at once. Between checkpoints only; nothing follows it.
Bytes encode_handover();
// DROPPED: the primary gives up on this backup and continues without it.
// May follow any chunk; nothing follows it.
Bytes encode_dropped();

}  // namespace romulus::protocol
