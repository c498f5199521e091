#include "storage/image_meta.h"

#include <cstring>

#include <fmt/format.h>

#include "protocol/crc32c.h"

namespace romulus::storage {

using protocol::Bytes;
using protocol::ByteSpan;

namespace {

constexpr uint8_t kMetaMagic[8] = {'R', 'M', 'L', 'S', 'M', 'E', 'T', 'A'};
constexpr uint32_t kMetaVersion = 1;

}  // namespace

Bytes encode_meta(const ImageMeta& meta) {
  Bytes out(kMetaMagic, kMetaMagic + 8);
  protocol::put_u32(out, kMetaVersion);
  protocol::put_u64(out, meta.page_count);
  protocol::put_u64(out, meta.base_epoch);
  protocol::put_u64(out, meta.checked_epoch);
  protocol::put_u64(out, meta.image_generation);
  protocol::put_u64(out, meta.log_generation);
  protocol::put_u64(out, meta.folding_log_generation);
  protocol::put_u32(out, meta.pages_per_block);
  protocol::put_u32(out, static_cast<uint32_t>(meta.block_crcs.size()));
  protocol::put_u16(out, static_cast<uint16_t>(meta.pair_id.size()));
  out.insert(out.end(), meta.pair_id.begin(), meta.pair_id.end());
  for (uint32_t c : meta.block_crcs) protocol::put_u32(out, c);
  protocol::put_u32(out, protocol::crc32c(out));
  return out;
}

Result<ImageMeta> decode_meta(ByteSpan bytes) {
  if (bytes.size() < 4) return Status::truncated("meta: shorter than its checksum");
  protocol::ByteReader in(bytes.first(bytes.size() - 4));
  ByteSpan magic;
  ROMULUS_RETURN_IF_ERROR(in.read_bytes(8, &magic, "meta magic"));
  if (std::memcmp(magic.data(), kMetaMagic, 8) != 0) {
    return Status::corrupt("meta: not a Romulus data directory's meta file (bad magic)");
  }
  if (protocol::load_u32(bytes.data() + bytes.size() - 4) !=
      protocol::crc32c(bytes.first(bytes.size() - 4))) {
    return Status::corrupt("meta: checksum mismatch");
  }
  uint32_t version = 0, block_count = 0;
  uint16_t pair_length = 0;
  ImageMeta m;
  ROMULUS_RETURN_IF_ERROR(in.read_u32(&version, "meta version"));
  if (version != kMetaVersion) {
    return Status::unsupported(
        fmt::format("meta: format version {} (this build reads {})", version, kMetaVersion));
  }
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&m.page_count, "meta page count"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&m.base_epoch, "meta base epoch"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&m.checked_epoch, "meta checked epoch"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&m.image_generation, "meta image generation"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&m.log_generation, "meta log generation"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&m.folding_log_generation, "meta folding log generation"));
  ROMULUS_RETURN_IF_ERROR(in.read_u32(&m.pages_per_block, "meta pages per block"));
  ROMULUS_RETURN_IF_ERROR(in.read_u32(&block_count, "meta block count"));
  ROMULUS_RETURN_IF_ERROR(in.read_u16(&pair_length, "meta pair id length"));
  if (m.page_count == 0 || m.page_count > kMaxArenaPages) {
    return Status::corrupt(fmt::format("meta: page count {} out of range", m.page_count));
  }
  if (m.pages_per_block == 0 || m.pages_per_block > (1u << 20) || block_count != m.block_count()) {
    return Status::corrupt(fmt::format("meta: {} blocks of {} pages for {} pages", block_count,
                                       m.pages_per_block, m.page_count));
  }
  if (pair_length > kMaxPairIdLength) return Status::corrupt("meta: pair id too long");
  if (m.checked_epoch < m.base_epoch ||
      (m.checked_epoch != m.base_epoch && m.folding_log_generation == 0)) {
    return Status::corrupt("meta: checked epoch before the base epoch, or without a log to fold");
  }
  if (m.folding_log_generation != 0 && m.folding_log_generation == m.log_generation) {
    return Status::corrupt("meta: the log being folded is the current log");
  }
  ByteSpan pair;
  ROMULUS_RETURN_IF_ERROR(in.read_bytes(pair_length, &pair, "meta pair id"));
  m.pair_id.assign(pair.begin(), pair.end());
  if (in.remaining() != uint64_t{block_count} * 4) {
    return Status::corrupt(fmt::format("meta: {} bytes of block checksums for {} blocks",
                                       in.remaining(), block_count));
  }
  m.block_crcs.resize(block_count);
  for (uint32_t& c : m.block_crcs) ROMULUS_RETURN_IF_ERROR(in.read_u32(&c, "meta block crc"));
  return m;
}

}  // namespace romulus::storage
