#include "protocol/checkpoint_writer.h"

#include <algorithm>

#include "protocol/crc32c.h"
#include "protocol/lz4_stage.h"
#include "protocol/page_codec.h"

namespace romulus::protocol {
namespace {

// type (4) + length (4) + codec (1) + flags (1) [+ raw length (4) if LZ4].
constexpr size_t kCompressedHeader = 4 + 4 + 2;
constexpr size_t kLz4Extra = 4;

void append_pfn_array(std::span<const uint64_t> pfns, Bytes& out) {
  put_i32(out, static_cast<int32_t>(pfns.size()));
  const size_t at = out.size();
  out.resize(at + 8 * pfns.size());
  for (size_t i = 0; i < pfns.size(); ++i) store_u64(out.data() + at + 8 * i, pfns[i]);
}

// Appends one COMPRESSED_DATA chunk carrying `records`, through LZ4 if asked
// and worth it.
void append_compressed(CodecId codec, ByteSpan records, bool try_lz4, Bytes& lz4_scratch,
                       Bytes& out, EncodeStats& stats) {
  const bool lz4 = try_lz4 && lz4_compress(records, lz4_scratch);
  const ByteSpan body = lz4 ? ByteSpan(lz4_scratch) : records;
  const size_t payload = 2 + (lz4 ? kLz4Extra : 0) + body.size();
  put_i32(out, XC_SAVE_ID_COMPRESSED_DATA);
  put_u32(out, static_cast<uint32_t>(payload));
  put_u8(out, static_cast<uint8_t>(codec));
  put_u8(out, lz4 ? kPayloadLz4 : 0);
  if (lz4) put_u32(out, static_cast<uint32_t>(records.size()));
  put_bytes(out, body);
  if (lz4) ++stats.lz4_chunks;
}

// page_at(i): where the contents of pfns[i] are.
template <typename PageAt>
void encode_format_a(std::span<const uint64_t> pfns, PageAt page_at, Bytes& out,
                     EncodeStats* stats) {
  const size_t start = out.size();
  for (size_t i = 0; i < pfns.size(); i += kMaxPfnBatch) {
    const size_t n = std::min<size_t>(kMaxPfnBatch, pfns.size() - i);
    append_pfn_array(pfns.subspan(i, n), out);
    for (size_t k = i; k < i + n; ++k) put_bytes(out, ByteSpan(page_at(k), kPageSize));
  }
  if (stats != nullptr) {
    stats->pages += pfns.size();
    stats->raw_bytes += pfns.size() * kPageSize;
    stats->whole_pages += pfns.size();
    stats->wire_bytes += out.size() - start;
  }
}

template <typename PageAt>
void encode_format_b(std::span<const uint64_t> pfns, PageAt page_at, PageCache& cache,
                     const EncodeOptions& options, Bytes& out, EncodeStats* stats) {
  EncodeStats local;
  const size_t start = out.size();
  const CodecId codec = options.codec;
  const size_t record_max = max_record_size(codec);
  // Records per chunk: as many as fit the chunk target, at least one, and
  // never more than the payload limits allow.
  const size_t overhead = kCompressedHeader + kLz4Extra;
  size_t records_budget =
      options.max_chunk_bytes > overhead ? options.max_chunk_bytes - overhead : 0;
  records_budget = std::min<size_t>(records_budget, kMaxDecodedPayload);
  records_budget = std::min<size_t>(records_budget, kMaxCompressedPayload - 2 - kLz4Extra);
  records_budget = std::max(records_budget, record_max);
  // PFNs per array: bounded by the chunk target too (an array is 4 + 8n bytes).
  size_t batch = options.max_chunk_bytes > 4 ? (options.max_chunk_bytes - 4) / 8 : 1;
  batch = std::clamp<size_t>(batch, 1, kMaxPfnBatch);

  Bytes records;
  records.reserve(records_budget);
  Bytes lz4_scratch;
  bool has_whole = false;
  const auto flush = [&] {
    if (records.empty()) return;
    const bool try_lz4 = options.lz4 == EncodeOptions::Lz4::kAlways ||
                         (options.lz4 == EncodeOptions::Lz4::kAuto && has_whole);
    append_compressed(codec, records, try_lz4, lz4_scratch, out, local);
    records.clear();
    has_whole = false;
  };

  for (size_t i = 0; i < pfns.size(); i += batch) {
    const size_t n = std::min(batch, pfns.size() - i);
    append_pfn_array(pfns.subspan(i, n), out);
    for (size_t k = i; k < i + n; ++k) {
      if (records.size() + record_max > records_budget) flush();
      const size_t at = records.size();
      records.resize(at + record_max);
      const PageView cur(page_at(k), kPageSize);
      const size_t len = cache.encode(pfns[k], cur, codec, records.data() + at);
      records.resize(at + len);
      if (!record_needs_current(codec, ByteSpan(records).subspan(at))) {
        has_whole = true;
        ++local.whole_pages;
      }
    }
    // A payload never runs ahead of its PFN array, so close it at the end of
    // each array: the receiver's queue of PFNs waiting for records stays
    // within one array.
    flush();
  }
  local.pages = pfns.size();
  local.raw_bytes = pfns.size() * kPageSize;
  local.wire_bytes = out.size() - start;
  if (stats != nullptr) {
    stats->pages += local.pages;
    stats->raw_bytes += local.raw_bytes;
    stats->wire_bytes += local.wire_bytes;
    stats->whole_pages += local.whole_pages;
    stats->lz4_chunks += local.lz4_chunks;
  }
}

}  // namespace

void encode_body_format_a(std::span<const uint64_t> pfns, const uint8_t* pages, Bytes& out,
                          EncodeStats* stats) {
  encode_format_a(
      pfns, [pages](size_t i) { return pages + i * kPageSize; }, out, stats);
}

void encode_body_format_a(std::span<const uint64_t> pfns, std::span<const uint8_t* const> pages,
                          Bytes& out, EncodeStats* stats) {
  encode_format_a(
      pfns, [pages](size_t i) { return pages[i]; }, out, stats);
}

void encode_body_format_b(std::span<const uint64_t> pfns, const uint8_t* pages, PageCache& cache,
                          const EncodeOptions& options, Bytes& out, EncodeStats* stats) {
  encode_format_b(
      pfns, [pages](size_t i) { return pages + i * kPageSize; }, cache, options, out, stats);
}

void encode_body_format_b(std::span<const uint64_t> pfns, std::span<const uint8_t* const> pages,
                          PageCache& cache, const EncodeOptions& options, Bytes& out,
                          EncodeStats* stats) {
  encode_format_b(
      pfns, [pages](size_t i) { return pages[i]; }, cache, options, out, stats);
}

Bytes CheckpointFramer::begin(uint64_t epoch, uint32_t flags) {
  epoch_ = epoch;
  pages_ = 0;
  Bytes out;
  put_i32(out, kChunkCheckpointBegin);
  put_u64(out, epoch);
  put_u32(out, flags);
  crc_ = crc32c(out);
  return out;
}

void CheckpointFramer::add_body(ByteSpan body, uint32_t pages) {
  crc_ = crc32c_extend(crc_, body);
  pages_ += pages;
}

Bytes CheckpointFramer::end() {
  Bytes out;
  put_i32(out, kChunkEndOfBody);
  put_u64(out, epoch_);
  put_u32(out, pages_);
  put_u32(out, crc32c_extend(crc_, out));
  return out;
}

Bytes encode_heartbeat(uint64_t ns) {
  Bytes out;
  put_i32(out, kChunkHeartbeat);
  put_u64(out, ns);
  return out;
}

Bytes encode_enable_compression() {
  Bytes out;
  put_i32(out, XC_SAVE_ID_ENABLE_COMPRESSION);
  return out;
}

Bytes encode_goodbye() {
  Bytes out;
  put_i32(out, kChunkGoodbye);
  return out;
}

Bytes encode_device_state(ByteSpan state) {
  Bytes out;
  out.reserve(8 + state.size());
  put_i32(out, kChunkDeviceState);
  put_u32(out, static_cast<uint32_t>(state.size()));
  out.insert(out.end(), state.begin(), state.end());
  return out;
}

Bytes encode_handover() {
  Bytes out;
  put_i32(out, kChunkHandover);
  return out;
}

Bytes encode_dropped() {
  Bytes out;
  put_i32(out, kChunkDropped);
  return out;
}

}  // namespace romulus::protocol
