// The `meta` file of a data directory: which image and log are current, whose
// pair and arena they belong to, and the checksums that verify the image.
//
//   meta := magic "RMLSMETA" (8) | version u32 (1) | page_count u64
//           | base_epoch u64 | checked_epoch u64
//           | image_generation u64 | log_generation u64
//           | folding_log_generation u64
//           | pages_per_block u32 | block_count u32
//           | pair_id_length u16 | pair_id bytes
//           | block_crc u32 {block_count}
//           | crc u32 (CRC32C of everything before it)
//
// base_epoch is the epoch the file image.<image_generation> holds; the log
// log.<log_generation> continues it. While a compaction runs, the log it folds
// into the image, log.<folding_log_generation> (0: none), comes between the
// two: replay it first, then log.<log_generation>. block_crc[i] is the CRC32C of pages
// [i * pages_per_block, (i + 1) * pages_per_block) (the last block may be
// shorter) of the image *at checked_epoch*: normally checked_epoch ==
// base_epoch; while a compaction folds the log into the image in place,
// checked_epoch is the epoch it folds up to, and the image verifies only once
// the log has been replayed through it (docs/design.md, "The durable image").
//
// Validity (decode_meta, hostile input): magic, version, the CRC, the exact
// length; page_count in [1, 2^36]; pages_per_block in [1, 2^20]; block_count
// == ceil(page_count / pages_per_block); pair_id at most 255 bytes;
// checked_epoch >= base_epoch; checked_epoch > base_epoch only while a log is
// folded.
//
// Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/coding.h"

namespace romulus::storage {

inline constexpr uint64_t kMaxArenaPages = uint64_t{1} << 36;
inline constexpr size_t kMaxPairIdLength = 255;

struct ImageMeta {
  uint64_t page_count = 0;
  std::string pair_id;
  uint64_t base_epoch = 0;
  uint64_t checked_epoch = 0;
  uint64_t image_generation = 0;
  uint64_t log_generation = 0;
  uint64_t folding_log_generation = 0;  // 0: no compaction under way
  uint32_t pages_per_block = 0;
  std::vector<uint32_t> block_crcs;

  // A compaction is under way: log.<folding_log_generation> is being folded.
  bool folding() const { return folding_log_generation != 0; }
  // The checksums are those of checked_epoch, after the folding log is replayed.
  bool checksums_after_fold() const { return checked_epoch != base_epoch; }
  uint64_t block_count() const { return (page_count + pages_per_block - 1) / pages_per_block; }
};

protocol::Bytes encode_meta(const ImageMeta& meta);
Result<ImageMeta> decode_meta(protocol::ByteSpan bytes);

}  // namespace romulus::storage
