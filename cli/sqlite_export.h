// `romulus sqlite-export`: a SQLite database kept in the arena (the `romulus`
// VFS, guest/sqlite/) taken out as a plain file that the sqlite3 shell opens.
//
// The source is a snapshot file (storage/snapshot_file.h: `romulus snapshot`
// writes one from a running pair's backup). The snapshot is read into private
// memory, the arena's file store is found in it, and the database with the
// rollback journal or WAL beside it (a snapshot is a checkpoint: a transaction
// may be in flight) is written out; SQLite itself then recovers it (rolls the
// hot journal back, or checkpoints the WAL into the database), switches it to
// a rollback journal, and checks its integrity. Nothing is written into the
// snapshot. Blocking; the caller's thread.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::cli {

struct SqliteExport {
  uint64_t epoch = 0;              // of the snapshot
  uint64_t bytes = 0;              // of the exported database
  std::vector<std::string> names;  // the arena's files (for --list)
};

// Exports `database` (its name as the program opened it) from `snapshot` to
// `out` (which must not exist). With an empty `database`, lists the files.
Result<SqliteExport> sqlite_export(const std::string& snapshot, const std::string& database,
                                   const std::string& out);

}  // namespace romulus::cli
