// The seam between the storage layer and the disk: File and FileSystem.
//
// Everything storage/ writes goes through these two small interfaces, so that
// tests can put FaultInjectingFileSystem (fault_injection.h) underneath and
// cut the power at any step. posix_file_system() is the real one: pread,
// pwrite, fdatasync, rename, and fsync of a directory.
//
// Durability contract (what callers may rely on, and all they may rely on):
//   - File::sync() makes the file's data and size durable (fdatasync), not
//     its name: a new file, a rename or a remove is durable only after
//     sync_dir() of the directory holding it.
//   - rename() replaces its target atomically: after a crash the target
//     names either the old file or the new one.
//   - Anything written and not yet covered by a sync may be lost, in whole or
//     in part, in any order, after a crash.
//
// Errors are Status values naming the path and the errno text ("write
// /data/log.3: No space left on device"); nothing throws. A File is used by
// one thread at a time; posix_file_system() may be used from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::storage {

enum class OpenMode {
  kRead,       // an existing file, read only
  kReadWrite,  // an existing file, read and write
  kCreate,     // a new empty file, read and write (an existing one is truncated)
};

class File {
 public:
  virtual ~File();
  // Writes all n bytes at offset (the file grows as needed, a gap reads as zeros).
  virtual Status pwrite(uint64_t offset, const uint8_t* data, size_t n) = 0;
  // Reads exactly n bytes at offset; a read past the end is kTruncated.
  virtual Status pread(uint64_t offset, uint8_t* data, size_t n) = 0;
  virtual Result<uint64_t> size() = 0;
  // Shrinks or grows (with zeros; sparse where the file system allows) to size.
  virtual Status truncate(uint64_t size) = 0;
  // fdatasync: the data and size written so far are durable on return.
  virtual Status sync() = 0;
};

// A held lock (FileSystem::lock); destroying it releases the lock.
class FileLock {
 public:
  virtual ~FileLock();
};

class FileSystem {
 public:
  virtual ~FileSystem();
  virtual Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) = 0;
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Status remove(const std::string& path) = 0;
  // Makes the directory's entries (creates, renames, removes) durable.
  virtual Status sync_dir(const std::string& dir) = 0;
  virtual Result<bool> exists(const std::string& path) = 0;
  // Creates the directory; OK if it already exists as one.
  virtual Status make_dir(const std::string& dir) = 0;
  // The names (not paths) in dir, in no particular order.
  virtual Result<std::vector<std::string>> list(const std::string& dir) = 0;
  // Takes an exclusive lock on `path` (created if missing), held until the
  // returned handle is destroyed; kRefused if another holder has it (another
  // process: flock(2); the lock dies with its holder).
  virtual Result<std::unique_ptr<FileLock>> lock(const std::string& path) = 0;
};

// The real file system. One instance for the process; thread-safe.
FileSystem& posix_file_system();

// "a/b/c" -> "a/b"; "c" -> "."; "/c" -> "/".
std::string parent_dir(const std::string& path);
// dir + "/" + name.
std::string join_path(const std::string& dir, const std::string& name);

// Writes `n` bytes to path.tmp, syncs it, renames it to path and syncs the
// directory: afterwards path holds exactly these bytes, durably, and a crash
// at any step leaves path as it was before or as it is after.
Status write_file_atomically(FileSystem& fs, const std::string& path, const uint8_t* data,
                             size_t n);

// The whole content of a file (for small files: meta, tests).
Result<std::vector<uint8_t>> read_whole_file(FileSystem& fs, const std::string& path);

}  // namespace romulus::storage
