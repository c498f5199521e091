// ArenaFileStore: files of 4 KiB blocks in the arena (see arena_file_store.h).
#include "guest/sqlite/arena_file_store.h"

#include <algorithm>
#include <boost/container/vector.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <vector>

#include "guest/guest.h"

namespace romulus::guest::sqlite {

namespace bip = boost::interprocess;
using SegmentManager = bip::managed_external_buffer::segment_manager;
using HandleVector = boost::container::vector<uint64_t, bip::allocator<uint64_t, SegmentManager>>;

namespace {
constexpr uint32_t kStoreMagic = 0x524f5346;  // "ROSF"
constexpr uint32_t kStoreVersion = 1;
// Blocks taken from the segment at a time (one aligned allocation), so that the
// segment's per-allocation overhead is paid once per chunk, not per block.
constexpr size_t kChunkBlocks = 16;
// The largest file: SQLite's own limit is far below (2^31 pages of 64 KiB is
// 2^47); this keeps offset arithmetic far from overflow.
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 46;
}  // namespace

struct FileEntry {
  explicit FileEntry(SegmentManager* sm) : blocks(sm), shm_regions(sm) {}
  uint32_t used = 0;
  uint32_t temp = 0;
  uint64_t size = 0;
  uint64_t shm_region_size = 0;
  char name[kMaxNameBytes + 1] = {};
  HandleVector blocks;       // block i holds bytes [i*4096, (i+1)*4096); 0 = hole
  HandleVector shm_regions;  // 0 = not allocated
};

struct StoreRoot {
  explicit StoreRoot(SegmentManager* sm)
      : files{make_files(sm, std::make_index_sequence<kMaxFiles>())}, free_blocks(sm) {}
  template <size_t... I>
  static std::array<FileEntry, kMaxFiles> make_files(SegmentManager* sm,
                                                     std::index_sequence<I...>) {
    return {((void)I, FileEntry(sm))...};
  }
  uint32_t magic = kStoreMagic;
  uint32_t version = kStoreVersion;
  std::array<FileEntry, kMaxFiles> files;
  HandleVector free_blocks;  // capacity always >= blocks_total: pushes never allocate
  uint64_t blocks_total = 0;
};

std::string_view store_error_name(StoreError e) {
  switch (e) {
    case StoreError::kOk:
      return "ok";
    case StoreError::kFull:
      return "the arena is full";
    case StoreError::kNotFound:
      return "no such file";
    case StoreError::kExists:
      return "the file exists";
    case StoreError::kTooManyFiles:
      return "too many files in the arena";
    case StoreError::kNameTooLong:
      return "file name too long";
    case StoreError::kBadArgument:
      return "offset or size out of range";
  }
  return "unknown";
}

std::unique_ptr<ArenaFileStore> ArenaFileStore::open(Segment& segment) {
  StoreRoot* root = nullptr;
  try {
    Update u;
    root = segment.find_or_construct<StoreRoot>(kStoreObjectName)(segment.get_segment_manager());
  } catch (const std::exception&) {
    return nullptr;
  }
  if (root == nullptr || root->magic != kStoreMagic || root->version != kStoreVersion) {
    return nullptr;
  }
  return std::unique_ptr<ArenaFileStore>(new ArenaFileStore(segment, root));
}

uint8_t* ArenaFileStore::block(uint64_t handle) {
  return static_cast<uint8_t*>(
      segment_.get_address_from_handle(static_cast<Segment::handle_t>(handle)));
}

void ArenaFileStore::changed() {
  if (after_change_) after_change_();
}

bool ArenaFileStore::ensure_free_blocks(size_t n) {
  HandleVector& free = root_->free_blocks;
  if (free.size() >= n) return true;
  const size_t needed = n - free.size();
  // A whole chunk when there is room for one, else exactly what is needed.
  size_t count = std::max(kChunkBlocks, needed);
  void* chunk = segment_.allocate_aligned(count * kBlockSize, kBlockSize, std::nothrow);
  if (chunk == nullptr && count != needed) {
    count = needed;
    chunk = segment_.allocate_aligned(count * kBlockSize, kBlockSize, std::nothrow);
  }
  if (chunk == nullptr) return false;
  const uint64_t total = root_->blocks_total + count;
  try {
    if (free.capacity() < total) free.reserve(std::max<uint64_t>(total, 2 * free.capacity()));
  } catch (const std::exception&) {
    segment_.deallocate(chunk);
    return false;
  }
  root_->blocks_total = total;
  for (size_t i = 0; i < count; ++i) {
    free.push_back(segment_.get_handle_from_address(static_cast<uint8_t*>(chunk) + i * kBlockSize));
  }
  return true;
}

StoreError ArenaFileStore::open_file(std::string_view name, bool create, bool exclusive, bool temp,
                                     int* index) {
  if (name.size() > kMaxNameBytes || name.empty()) return StoreError::kNameTooLong;
  {
    std::shared_lock l(mu_);
    for (size_t i = 0; i < kMaxFiles; ++i) {
      const FileEntry& f = root_->files[i];
      if (f.used && name == f.name) {
        if (create && exclusive) return StoreError::kExists;
        *index = static_cast<int>(i);
        return StoreError::kOk;
      }
    }
  }
  if (!create) return StoreError::kNotFound;
  std::unique_lock l(mu_);
  int free_slot = -1;
  for (size_t i = 0; i < kMaxFiles; ++i) {  // again: another thread may have created it
    FileEntry& f = root_->files[i];
    if (f.used && name == f.name) {
      if (exclusive) return StoreError::kExists;
      *index = static_cast<int>(i);
      return StoreError::kOk;
    }
    if (!f.used && free_slot < 0) free_slot = static_cast<int>(i);
  }
  if (free_slot < 0) return StoreError::kTooManyFiles;
  {
    Update u;
    FileEntry& f = root_->files[free_slot];
    std::memset(f.name, 0, sizeof(f.name));
    std::memcpy(f.name, name.data(), name.size());
    f.size = 0;
    f.temp = temp ? 1 : 0;
    f.used = 1;
  }
  *index = free_slot;
  changed();
  return StoreError::kOk;
}

StoreError ArenaFileStore::remove(std::string_view name) {
  std::unique_lock l(mu_);
  for (FileEntry& f : root_->files) {
    if (!f.used || name != f.name) continue;
    {
      Update u;
      for (uint64_t h : f.blocks) {
        if (h != 0) root_->free_blocks.push_back(h);  // capacity reserved: never allocates
      }
      f.blocks.clear();
      f.blocks.shrink_to_fit();
      for (uint64_t h : f.shm_regions) {
        if (h != 0) segment_.deallocate(block(h));
      }
      f.shm_regions.clear();
      f.shm_regions.shrink_to_fit();
      f.size = 0;
      f.used = 0;
      f.temp = 0;
    }
    changed();
    return StoreError::kOk;
  }
  return StoreError::kNotFound;
}

bool ArenaFileStore::exists_nonempty(std::string_view name) {
  std::shared_lock l(mu_);
  for (const FileEntry& f : root_->files) {
    if (f.used && name == f.name) return f.size > 0;
  }
  return false;
}

std::vector<std::string> ArenaFileStore::names() {
  std::shared_lock l(mu_);
  std::vector<std::string> out;
  for (const FileEntry& f : root_->files) {
    if (f.used && f.temp == 0) out.emplace_back(f.name);
  }
  return out;
}

bool ArenaFileStore::exists(std::string_view name) {
  std::shared_lock l(mu_);
  for (const FileEntry& f : root_->files) {
    if (f.used && name == f.name) return true;
  }
  return false;
}

void ArenaFileStore::remove_temp_files() {
  std::vector<std::string> names;
  {
    std::shared_lock l(mu_);
    for (const FileEntry& f : root_->files) {
      if (f.used && f.temp) names.emplace_back(f.name);
    }
  }
  for (const std::string& n : names) (void)remove(n);
}

uint64_t ArenaFileStore::size(int index) {
  std::shared_lock l(mu_);
  return root_->files[index].size;
}

size_t ArenaFileStore::read(int index, uint64_t offset, std::span<uint8_t> out) {
  std::shared_lock l(mu_);
  const FileEntry& f = root_->files[index];
  if (offset >= f.size) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), f.size - offset));
  size_t done = 0;
  while (done < n) {
    const uint64_t pos = offset + done;
    const uint64_t bi = pos / kBlockSize;
    const size_t in_block = static_cast<size_t>(pos % kBlockSize);
    const size_t len = std::min(n - done, kBlockSize - in_block);
    const uint64_t h = bi < f.blocks.size() ? f.blocks[bi] : 0;
    if (h == 0) {
      std::memset(out.data() + done, 0, len);
    } else {
      std::memcpy(out.data() + done, block(h) + in_block, len);
    }
    done += len;
  }
  return n;
}

StoreError ArenaFileStore::write(int index, uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return StoreError::kOk;
  if (offset > kMaxFileBytes || data.size() > kMaxFileBytes - offset) {
    return StoreError::kBadArgument;
  }
  std::unique_lock l(mu_);
  {
    Update u;
    if (StoreError e = write_locked(index, offset, data); e != StoreError::kOk) return e;
  }
  changed();
  return StoreError::kOk;
}

StoreError ArenaFileStore::create_with(std::string_view name, std::span<const uint8_t> data) {
  if (name.size() > kMaxNameBytes || name.empty()) return StoreError::kNameTooLong;
  if (data.size() > kMaxFileBytes) return StoreError::kBadArgument;
  std::unique_lock l(mu_);
  int slot = -1;
  for (size_t i = 0; i < kMaxFiles; ++i) {
    const FileEntry& f = root_->files[i];
    if (f.used && name == f.name) return StoreError::kExists;
    if (!f.used && slot < 0) slot = static_cast<int>(i);
  }
  if (slot < 0) return StoreError::kTooManyFiles;
  {
    // One Update for the entry and every block: a checkpoint holds the whole
    // file under its name, or no file of that name.
    Update u;
    FileEntry& f = root_->files[slot];
    f.size = 0;
    if (!data.empty()) {
      if (StoreError e = write_locked(slot, 0, data); e != StoreError::kOk) return e;
    }
    std::memset(f.name, 0, sizeof(f.name));
    std::memcpy(f.name, name.data(), name.size());
    f.temp = 0;
    f.used = 1;
  }
  changed();
  return StoreError::kOk;
}

StoreError ArenaFileStore::write_locked(int index, uint64_t offset, std::span<const uint8_t> data) {
  FileEntry& f = root_->files[index];
  const uint64_t first = offset / kBlockSize;
  const uint64_t last = (offset + data.size() - 1) / kBlockSize;
  {
    // Everything that can fail comes first, so that a failure leaves the file as it was.
    size_t missing = 0;
    for (uint64_t bi = first; bi <= last; ++bi) {
      if (bi >= f.blocks.size() || f.blocks[bi] == 0) ++missing;
    }
    if (!ensure_free_blocks(missing)) return StoreError::kFull;
    if (f.blocks.size() <= last) {
      try {
        f.blocks.resize(last + 1, 0);
      } catch (const std::exception&) {
        return StoreError::kFull;
      }
    }
    size_t done = 0;
    for (uint64_t bi = first; bi <= last; ++bi) {
      const uint64_t pos = offset + done;
      const size_t in_block = static_cast<size_t>(pos % kBlockSize);
      const size_t len = std::min(data.size() - done, kBlockSize - in_block);
      if (f.blocks[bi] == 0) {
        f.blocks[bi] = root_->free_blocks.back();
        root_->free_blocks.pop_back();
        if (len != kBlockSize) std::memset(block(f.blocks[bi]), 0, kBlockSize);
      }
      std::memcpy(block(f.blocks[bi]) + in_block, data.data() + done, len);
      done += len;
    }
    // Stored only when it grows: under the uffd tracker any store, even of the
    // same value, dirties the table's page.
    if (offset + data.size() > f.size) f.size = offset + data.size();
  }
  return StoreError::kOk;
}

StoreError ArenaFileStore::truncate(int index, uint64_t size) {
  std::unique_lock l(mu_);
  FileEntry& f = root_->files[index];
  if (size >= f.size) return StoreError::kOk;  // SQLite never grows a file by truncating
  {
    Update u;
    const uint64_t keep = (size + kBlockSize - 1) / kBlockSize;
    for (uint64_t bi = keep; bi < f.blocks.size(); ++bi) {
      if (f.blocks[bi] != 0) root_->free_blocks.push_back(f.blocks[bi]);
    }
    if (f.blocks.size() > keep) f.blocks.resize(keep);
    // Zero the cut-off tail of the last block: a later write past it must read zeros there.
    if (size % kBlockSize != 0 && keep > 0 && keep <= f.blocks.size() && f.blocks[keep - 1] != 0) {
      const size_t cut = static_cast<size_t>(size % kBlockSize);
      std::memset(block(f.blocks[keep - 1]) + cut, 0, kBlockSize - cut);
    }
    f.size = size;
  }
  changed();
  return StoreError::kOk;
}

StoreError ArenaFileStore::shm_region(int index, int region, size_t region_size, bool extend,
                                      uint8_t** out) {
  *out = nullptr;
  if (region < 0 || region_size == 0 || region_size > (size_t{1} << 24)) {
    return StoreError::kBadArgument;
  }
  {
    std::shared_lock l(mu_);
    const FileEntry& f = root_->files[index];
    if (f.shm_region_size == region_size && static_cast<size_t>(region) < f.shm_regions.size() &&
        f.shm_regions[region] != 0) {
      *out = block(f.shm_regions[region]);
      return StoreError::kOk;
    }
    if (!extend) return StoreError::kOk;
  }
  std::unique_lock l(mu_);
  FileEntry& f = root_->files[index];
  {
    Update u;
    if (f.shm_region_size != region_size) {
      // SQLite maps one region size per file; a different one means the old
      // regions are stale (a different SQLite build): drop them.
      for (uint64_t h : f.shm_regions) {
        if (h != 0) segment_.deallocate(block(h));
      }
      f.shm_regions.clear();
      f.shm_region_size = region_size;
    }
    try {
      if (f.shm_regions.size() <= static_cast<size_t>(region)) f.shm_regions.resize(region + 1, 0);
    } catch (const std::exception&) {
      return StoreError::kFull;
    }
    for (int r = 0; r <= region; ++r) {  // SQLite maps regions in order; fill any gap
      if (f.shm_regions[r] != 0) continue;
      void* p = segment_.allocate_aligned(region_size, kBlockSize, std::nothrow);
      if (p == nullptr) return StoreError::kFull;
      std::memset(p, 0, region_size);
      f.shm_regions[r] = segment_.get_handle_from_address(p);
    }
    *out = block(f.shm_regions[region]);
  }
  return StoreError::kOk;
}

void ArenaFileStore::shm_zero(int index) {
  std::unique_lock l(mu_);
  FileEntry& f = root_->files[index];
  Update u;
  for (uint64_t h : f.shm_regions) {
    if (h != 0) std::memset(block(h), 0, f.shm_region_size);
  }
}

void ArenaFileStore::shm_free(int index) {
  std::unique_lock l(mu_);
  FileEntry& f = root_->files[index];
  Update u;
  for (uint64_t h : f.shm_regions) {
    if (h != 0) segment_.deallocate(block(h));
  }
  f.shm_regions.clear();
  f.shm_regions.shrink_to_fit();
}

StoreStats ArenaFileStore::stats() {
  std::shared_lock l(mu_);
  StoreStats s;
  for (const FileEntry& f : root_->files) s.files += f.used ? 1 : 0;
  s.blocks_total = root_->blocks_total;
  s.blocks_free = root_->free_blocks.size();
  return s;
}

}  // namespace romulus::guest::sqlite
