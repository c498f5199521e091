// FaultInjectingFileSystem: an in-memory FileSystem that models what a disk
// keeps when the power goes, and fails on request.
//
// Every file has a volatile content (what reads see) and a durable one (what
// the last File::sync() saw); every directory entry likewise has a volatile
// and a durable state, the latter updated by sync_dir(). crash() replaces the
// volatile state with one a real disk could hold after a power cut:
//
//   kDropUnsynced  every write, truncate, create, rename and remove not covered
//                  by a sync is lost (LevelDB's FaultInjectionTestEnv);
//   kKeepUnsynced  everything reached the disk, in order (a write cut by
//                  cut_power_after(.., tear=true) stays torn);
//   kRandom        each unsynced write survives or not, independently and out
//                  of order, maybe torn at a 512-byte sector; each unsynced
//                  directory entry is old or new (rename stays atomic per name).
//
// Crash tests count the mutating operations of a sequence (mutating_ops()),
// then for each k run it again with cut_power_after(k): operation k+1 never
// happens (or a pwrite lands torn) and every later mutating one fails with
// EIO, as if the process died there. crash() then "reboots": the power is
// back, faults are cleared, and Files opened before fail with EIO.
//
// fail_after(n, errno) makes mutating operations fail like a full or broken
// disk (ENOSPC, EIO) after n more succeed, for error-path tests (a remove,
// which frees space, never fails with ENOSPC).
//
// Paths are plain strings; "/" always exists. Thread-safe (one mutex), so a
// DurableWriter's thread may use it while the test thread inspects it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "storage/file_system.h"

namespace romulus::storage {

class FaultInjectingFileSystem final : public FileSystem {
 public:
  enum class CrashMode { kDropUnsynced, kKeepUnsynced, kRandom };
  // Which mutating operations an injected fault applies to.
  enum FaultOps : unsigned {
    kWriteOps = 1,  // pwrite, truncate, create, rename, remove, make_dir
    kSyncOps = 2,   // File::sync, sync_dir
    kAllOps = 3,
  };

  FaultInjectingFileSystem();
  ~FaultInjectingFileSystem() override;

  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override;
  Status rename(const std::string& from, const std::string& to) override;
  Status remove(const std::string& path) override;
  Status sync_dir(const std::string& dir) override;
  Result<bool> exists(const std::string& path) override;
  Status make_dir(const std::string& dir) override;
  Result<std::vector<std::string>> list(const std::string& dir) override;
  // Locks live in memory only: crash() (the holder died) releases them all.
  Result<std::unique_ptr<FileLock>> lock(const std::string& path) override;

  // Mutating operations attempted so far (a failed one counts too).
  uint64_t mutating_ops() const;
  // One line per mutating operation ("pwrite /d/log.2 4136@40"), for messages.
  std::vector<std::string> op_log() const;

  // After `ops` more mutating operations, the power goes: see the header comment.
  void cut_power_after(uint64_t ops, bool tear_write = false);
  bool power_cut() const;
  // After `ops` more mutating operations of kind `which` succeed, the next
  // ones fail with `err` (only the next one if once), until clear_faults().
  void fail_after(uint64_t ops, int err, FaultOps which = kAllOps, bool once = false);
  void clear_faults();

  // Reboot after a power cut (or at any moment): see the header comment.
  // `seed` drives kRandom.
  void crash(CrashMode mode = CrashMode::kDropUnsynced, uint64_t seed = 0);

  // Test access, outside the fault machinery: the volatile content of a file,
  // and replacing it durably (to damage a file on purpose).
  Result<std::vector<uint8_t>> contents(const std::string& path) const;
  Status set_contents(const std::string& path, std::vector<uint8_t> data);

 private:
  class MemFile;
  class MemLock;
  struct Inode;
  struct Node {
    bool is_dir = false;
    std::shared_ptr<Inode> inode;  // files only
  };
  using Namespace = std::map<std::string, Node>;

  // Counts a mutating operation of `kind`; an error if it must fail. If the
  // power goes at this operation and `tearable`, *tear is set.
  // remove() frees space: an injected ENOSPC never fails it.
  Status begin_op(unsigned kind, const std::string& what, bool tearable = false,
                  bool* tear = nullptr, bool frees_space = false);
  bool parent_exists(const std::string& path) const;

  mutable std::mutex mu_;
  Namespace names_;                        // volatile
  Namespace durable_names_;                // what the directories hold on disk
  uint64_t generation_ = 0;                // crash() count: older Files and locks are stale
  std::map<std::string, uint64_t> locks_;  // held locks: path -> generation
  uint64_t ops_ = 0;
  std::vector<std::string> op_log_;
  std::optional<uint64_t> power_cut_at_;  // ops_ value at which the power goes
  bool tear_ = false;
  bool power_off_ = false;
  std::optional<uint64_t> fail_at_;
  int fail_errno_ = 0;
  unsigned fail_which_ = 0;
  bool fail_once_ = false;
  uint64_t fail_counted_ = 0;  // operations of kind fail_which_ so far
};

// ErrorInjectingFileSystem: wraps any FileSystem (the real one too) and makes
// its mutating operations fail on request, as FaultInjectingFileSystem does,
// without its crash model: to see a full or failing disk on a real directory
// (benches, end-to-end tests). Thread-safe if `base` is; `base` must outlive it.
class ErrorInjectingFileSystem final : public FileSystem {
 public:
  using FaultOps = FaultInjectingFileSystem::FaultOps;
  explicit ErrorInjectingFileSystem(FileSystem& base);
  ~ErrorInjectingFileSystem() override;

  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override;
  Status rename(const std::string& from, const std::string& to) override;
  Status remove(const std::string& path) override;
  Status sync_dir(const std::string& dir) override;
  Result<bool> exists(const std::string& path) override;
  Status make_dir(const std::string& dir) override;
  Result<std::vector<std::string>> list(const std::string& dir) override;
  Result<std::unique_ptr<FileLock>> lock(const std::string& path) override;

  // As FaultInjectingFileSystem::fail_after (a remove never fails with ENOSPC).
  void fail_after(uint64_t ops, int err, FaultOps which = FaultInjectingFileSystem::kAllOps,
                  bool once = false);
  void clear_faults();
  uint64_t mutating_ops() const;

 private:
  class WrappedFile;
  Status begin_op(unsigned kind, const std::string& what, bool frees_space = false);

  FileSystem& base_;
  mutable std::mutex mu_;
  uint64_t ops_ = 0;
  std::optional<uint64_t> fail_at_;
  int fail_errno_ = 0;
  unsigned fail_which_ = 0;
  bool fail_once_ = false;
  uint64_t fail_counted_ = 0;
};

}  // namespace romulus::storage
