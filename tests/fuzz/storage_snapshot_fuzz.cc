// Fuzz target for snapshot files (storage/snapshot_file.h): the input is the
// file. read_snapshot_info and, for an arena of at most 64 pages,
// read_snapshot must refuse or succeed, never crash or read out of bounds;
// a snapshot that reads must write back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "protocol/page.h"
#include "storage/fault_injection.h"
#include "storage/snapshot_file.h"

using namespace romulus;
using namespace romulus::storage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FaultInjectingFileSystem fs;
  (void)fs.set_contents("/s", std::vector<uint8_t>(data, data + size));
  Result<SnapshotInfo> info = read_snapshot_info(fs, "/s");
  if (!info.is_ok() || info->page_count > 64) return 0;
  std::vector<uint8_t> arena(info->page_count * protocol::kPageSize);
  Result<SnapshotInfo> full = read_snapshot(fs, "/s", arena.data(), arena.size());
  if (!full.is_ok()) {
    for (uint8_t b : arena) {
      if (b != 0) __builtin_trap();  // a refused snapshot leaves nothing behind
    }
    return 0;
  }
  // Runs may be split differently by a writer, but a zero page stored in a run
  // is the only other freedom: the arena must write back and read back equal.
  if (!write_snapshot(fs, "/t", *full, arena.data(), arena.size()).is_ok()) __builtin_trap();
  std::vector<uint8_t> back(arena.size());
  if (!read_snapshot(fs, "/t", back.data(), back.size()).is_ok() || back != arena) {
    __builtin_trap();
  }
  return 0;
}
