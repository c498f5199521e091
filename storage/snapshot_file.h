// Snapshot files: one self-contained, checksummed image of an arena at one
// epoch (`romulus snapshot FILE`, `--from-snapshot FILE`).
//
//   snapshot := header run* trailer
//   header   := magic "RMLSSNAP" (8) | version u32 (1) | flags u32 (0)
//               | page_count u64 | epoch u64 | data_pages u64 | run_count u64
//               | pair_id_length u16 | pair_id bytes
//   run      := first_pfn u64 | pages u32 | page (4096 bytes) {pages}
//   trailer  := crc u32 (CRC32C of every byte before it) | magic "RMLSEND1" (8)
//
// Only non-zero pages are stored, in runs of 1 to kMaxSnapshotRunPages
// consecutive pages; every other page of the arena is zero. Integers are
// little-endian.
//
// Validity (read_snapshot: the file is hostile): magic, version, flags 0;
// page_count in [1, 2^36], epoch >= 1, data_pages <= page_count, run_count <=
// data_pages, pair_id at most 255 bytes; the file's size exactly what the
// header announces (checked before any run is read); runs in increasing,
// non-overlapping order inside the arena, whose pages add up to data_pages;
// the CRC; the trailer's magic.
//
// write_snapshot writes FILE.tmp, syncs it, renames it to FILE and syncs the
// directory: FILE is either absent (or the previous one) or whole.
//
// Functions of the caller's thread; the arena is not modified by writing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"
#include "storage/file_system.h"

namespace romulus::storage {

inline constexpr uint32_t kMaxSnapshotRunPages = 256;

struct SnapshotInfo {
  uint64_t page_count = 0;
  uint64_t epoch = 0;
  std::string pair_id;
  uint64_t data_pages = 0;  // non-zero pages stored (filled by the readers)
};

// Writes `arena` (bytes == info.page_count * 4096) at info.epoch to `path`.
Status write_snapshot(FileSystem& fs, const std::string& path, const SnapshotInfo& info,
                      const uint8_t* arena, size_t bytes);

// Reads and verifies the whole file into `arena` (bytes must be the file's
// page_count * 4096). On error the arena is zeroed, never left half-written.
Result<SnapshotInfo> read_snapshot(FileSystem& fs, const std::string& path, uint8_t* arena,
                                   size_t bytes);

// The header alone, checked against the file's size (the pages and the CRC
// are not read: read_snapshot verifies them).
Result<SnapshotInfo> read_snapshot_info(FileSystem& fs, const std::string& path);

}  // namespace romulus::storage
