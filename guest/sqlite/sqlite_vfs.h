// The `romulus` SQLite VFS: SQLite databases, rollback journals, WALs and WAL
// indexes kept in the replicated arena, so an unmodified SQLite program is
// protected by Romulus once it opens its database with `vfs=romulus` (or once the
// VFS is the default, as the LD_PRELOAD library makes it).
//
//   if (auto st = romulus::guest::register_sqlite_vfs(); !st.is_ok()) { ...; }
//   sqlite3_open_v2("bank.db", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "romulus");
//
// Storage is an ArenaFileStore (guest/sqlite/arena_file_store.h): 4 KiB-aligned
// blocks, every change inside one Update. What lives in the arena and what does
// not, and why a checkpoint taken at any moment recovers (docs/design.md,
// "SQLite in the arena"):
//   - file contents and sizes: in the arena; each xWrite/xTruncate/xDelete is in
//     a checkpoint whole or not at all, so a checkpoint holds a prefix of the
//     calls in order. xSync does nothing: durability is output commit's job.
//   - locks (SHARED/RESERVED/PENDING/EXCLUSIVE and the WAL index's slot locks):
//     process-local, in the SqliteVfs object, never in the arena. A resumed
//     process starts with no locks held, so SQLite sees a journal left by an
//     interrupted transaction as hot and rolls it back, and a WAL as needing
//     recovery.
//   - the WAL index (xShmMap): in the arena, but zeroed the first time a process
//     maps it (as the unix VFS truncates it when it is the first to open), so
//     SQLite rebuilds it from the WAL rather than trusting an index the
//     checkpoint may have caught mid-update.
//   - temporary files (no name): in the arena, deleted on close; ones left by a
//     dead process are deleted when the next one registers the VFS.
// A full arena is SQLITE_FULL, with the file unchanged.
//
// Do not call SQLite inside an Update of your own: the VFS opens its own
// Updates, one per call, and a transaction needs none (the recovery above makes
// it all-or-nothing); a thread blocked on the VFS's locks inside an Update could
// keep a pause waiting for the gate timeout.
//
// Threads: SQLite calls the VFS from any thread; every method here is
// thread-safe. Ownership: SqliteVfs owns its store; SQLite holds a pointer to it
// while registered, so it must outlive every connection that uses it (the one
// register_sqlite_vfs() makes lives until the process exits).
#pragma once

#include <sqlite3.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "guest/sqlite/arena_file_store.h"

namespace romulus::guest {

inline constexpr const char* kSqliteVfsName = "romulus";
// Set to 0 in the guest's environment: a database file on disk is never
// imported into the arena (SqliteVfs::set_import_from_disk).
inline constexpr const char* kEnvSqliteImport = "ROMULUS_SQLITE_IMPORT";

// Attaches the arena (attach()), opens the file store in its segment and
// registers the `romulus` VFS, as SQLite's default when `make_default`.
// Thread-safe and idempotent: later calls only change the default.
Status register_sqlite_vfs(bool make_default = false);

namespace sqlite {

struct FileLocks;

class SqliteVfs {
 public:
  // Registers a VFS named `name` over `store`. Fails if SQLite refuses it (or a
  // VFS of that name is registered already).
  static Result<std::unique_ptr<SqliteVfs>> create(std::string name,
                                                   std::unique_ptr<ArenaFileStore> store,
                                                   bool make_default);
  ~SqliteVfs();  // unregisters
  SqliteVfs(const SqliteVfs&) = delete;
  SqliteVfs& operator=(const SqliteVfs&) = delete;

  const std::string& name() const { return name_; }
  ArenaFileStore& store() { return *store_; }
  Status make_default();

  // Internal (the C callbacks in sqlite_vfs.cc): the process-local lock state of
  // a file, created on first use.
  FileLocks& locks_for(int file_index);
  sqlite3_vfs* base() const { return base_; }
  int next_temp_id();

  // Existing databases brought in (docs/operations.md, "Protecting a SQLite
  // program"): when on, a main database opened by a name the store does not
  // hold, but that names a file on disk, is first copied into the store whole
  // (ArenaFileStore::create_with). On only in a process that starts the guest
  // fresh (not resumed), unless ROMULUS_SQLITE_IMPORT=0. A database with a WAL
  // or a hot journal beside it on disk is refused, not half imported.
  void set_import_from_disk(bool on) { import_from_disk_ = on; }
  // SQLITE_OK (imported, or nothing to import), or the error to open with.
  int import_if_on_disk(const std::string& name);

 private:
  SqliteVfs(std::string name, std::unique_ptr<ArenaFileStore> store, sqlite3_vfs* base);

  std::string name_;
  std::unique_ptr<ArenaFileStore> store_;
  sqlite3_vfs* base_;  // the default VFS at creation: time, randomness, sleep
  sqlite3_vfs vfs_;
  std::mutex locks_mu_;
  std::map<int, std::unique_ptr<FileLocks>> locks_;
  int temp_id_ = 0;
  bool import_from_disk_ = false;
};

}  // namespace sqlite
}  // namespace romulus::guest
