// ArenaFileStore: a tiny file system inside the arena's managed segment, the
// storage under the `romulus` SQLite VFS (guest/sqlite/sqlite_vfs.h).
//
// Files are named byte arrays made of 4 KiB blocks, each block 4 KiB-aligned in
// the arena, so a changed database page (SQLite's default page size is 4 KiB)
// dirties exactly one arena page. A file may also own shared-memory regions (the
// WAL index, xShmMap), each one contiguous, page-aligned allocation.
//
// In the arena: one StoreRoot, found by name in the segment, holding a fixed
// table of kMaxFiles entries (name, size, block handles, shm region handles) and
// a free list of blocks. Everything is a segment handle (an offset), never a
// pointer, so the store works at whatever address the arena is mapped after a
// resume. Blocks come from the segment in chunks and, once the store has them,
// stay with it (a freed block goes to the store's free list, not back to the
// segment): like a file system, the store does not give space back.
//
// Checkpoint consistency: every change (a write, a truncation, a create, a
// delete, a new shm region) runs inside one romulus::guest::Update, so a
// checkpoint holds each call entirely or not at all, and the store's tables
// always agree with its blocks. A checkpoint taken between two calls therefore
// holds a prefix of the calls, in order: what a disk that never reorders writes
// would hold after a power cut, which is what SQLite's journal and WAL recovery
// expect. Running out of arena is an error value (kFull), with the file as it
// was before the call.
//
// Threads: every method may be called from any thread. One process-local
// shared_mutex guards the tables: reads take it shared, changes exclusively. A
// change takes the mutex *before* it opens its Update, so a thread waiting for
// the mutex never holds an Update open (a pending pause is never kept waiting
// on it). ArenaFileStore is the process-local handle; it does not own the
// segment, which must outlive it.
#pragma once

#include <boost/interprocess/managed_external_buffer.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace romulus::guest::sqlite {

inline constexpr size_t kBlockSize = 4096;
inline constexpr size_t kMaxFiles = 64;
inline constexpr size_t kMaxNameBytes = 511;
// The segment name of the store's root object.
inline constexpr const char* kStoreObjectName = "romulus.sqlite.store";

struct StoreRoot;  // in the arena; defined in arena_file_store.cc

enum class StoreError {
  kOk = 0,
  kFull,          // the arena has no room for the blocks (or tables) needed
  kNotFound,      // no file of that name
  kExists,        // create-exclusive of a name that exists
  kTooManyFiles,  // all kMaxFiles entries are in use
  kNameTooLong,   // more than kMaxNameBytes
  kBadArgument,   // offset or size beyond what a file can hold
};

std::string_view store_error_name(StoreError e);

struct StoreStats {
  uint64_t files = 0;
  uint64_t blocks_total = 0;  // blocks the store took from the segment
  uint64_t blocks_free = 0;   // of those, on the free list
};

class ArenaFileStore {
 public:
  using Segment = boost::interprocess::managed_external_buffer;

  // Finds the store in `segment`, or builds it there (inside an Update). Null
  // if the segment has no room even for the tables.
  static std::unique_ptr<ArenaFileStore> open(Segment& segment);
  ArenaFileStore(const ArenaFileStore&) = delete;
  ArenaFileStore& operator=(const ArenaFileStore&) = delete;

  // A file's index in the table, for the calls below. Creates it (empty) when
  // `create`; `exclusive` fails with kExists if it already exists. `temp` marks
  // files that remove_temp_files() deletes.
  StoreError open_file(std::string_view name, bool create, bool exclusive, bool temp, int* index);
  StoreError remove(std::string_view name);
  // A file that exists and holds at least one byte (SQLite's xAccess EXISTS).
  bool exists_nonempty(std::string_view name);
  bool exists(std::string_view name);
  // The names of every file but temporary ones (an export lists them).
  std::vector<std::string> names();
  // Deletes every file marked temp: called when a process registers the VFS,
  // when no file it opened before a restart can be open any more.
  void remove_temp_files();

  uint64_t size(int index);
  // Copies min(out.size(), size - offset) bytes; returns how many. Holes read as zeros.
  size_t read(int index, uint64_t offset, std::span<uint8_t> out);
  StoreError write(int index, uint64_t offset, std::span<const uint8_t> data);
  // Creates the file `name` holding `data`, all in one Update (a checkpoint
  // holds the whole file or no file of that name): an existing database
  // brought into the arena. kExists if the name is taken; on kFull nothing
  // changes.
  StoreError create_with(std::string_view name, std::span<const uint8_t> data);
  StoreError truncate(int index, uint64_t size);

  // Shared-memory region `region` (each `region_size` bytes) of a file, or
  // nullptr when it does not exist and !extend. kFull when extending fails.
  StoreError shm_region(int index, int region, size_t region_size, bool extend, uint8_t** out);
  // Zeroes every shm region of the file (a fresh process's first mapping).
  void shm_zero(int index);
  // Frees the file's shm regions.
  void shm_free(int index);

  StoreStats stats();

  // Fault injection for tests: called after each completed change (write,
  // truncate, create, remove), outside its Update and with the store's mutex
  // still held, i.e. at a moment where a pause may stop the guest. Empty in
  // production. Set before the store is used by other threads.
  void set_after_change_hook(std::function<void()> hook) { after_change_ = std::move(hook); }

 private:
  ArenaFileStore(Segment& segment, StoreRoot* root) : segment_(segment), root_(root) {}
  // Moves `n` more blocks onto the free list, from the segment. Exclusive lock held.
  bool ensure_free_blocks(size_t n);
  uint8_t* block(uint64_t handle);
  // write()'s work, with the mutex held exclusively and an Update open.
  StoreError write_locked(int index, uint64_t offset, std::span<const uint8_t> data);
  void changed();

  Segment& segment_;
  StoreRoot* root_;
  std::shared_mutex mu_;
  std::function<void()> after_change_;
};

}  // namespace romulus::guest::sqlite
