#include "cli/sqlite_export.h"

#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/managed_external_buffer.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "guest/sqlite/arena_file_store.h"
#include "protocol/page.h"
#include "storage/file_system.h"
#include "storage/snapshot_file.h"

namespace romulus::cli {

namespace {

namespace bip = boost::interprocess;
using guest::sqlite::ArenaFileStore;

// Private anonymous memory for the snapshot's image, unmapped on scope exit.
struct Mapping {
  uint8_t* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr) ::munmap(data, size);
  }
};

// One file of the store, whole, written to `path` (which must not exist).
Status copy_out(ArenaFileStore& store, const std::string& name, const std::string& path) {
  int index = -1;
  if (store.open_file(name, false, false, false, &index) != guest::sqlite::StoreError::kOk) {
    return Status::invalid_argument(fmt::format("no file '{}' in the arena", name));
  }
  std::vector<uint8_t> bytes(store.size(index));
  store.read(index, 0, bytes);
  std::FILE* f = std::fopen(path.c_str(), "wbx");
  if (f == nullptr) {
    return Status::io_error(
        fmt::format("cannot create {}: {} (it must not exist)", path, std::strerror(errno)));
  }
  const size_t n = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool ok = n == bytes.size() && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) return Status::io_error(fmt::format("writing {}: {}", path, std::strerror(errno)));
  return Status::ok();
}

// Runs `sql` on `db`; the first column of each row goes to `rows`.
Status exec(sqlite3* db, const char* sql, std::vector<std::string>* rows = nullptr) {
  char* err = nullptr;
  auto collect = [](void* out, int n, char** values, char**) -> int {
    if (out != nullptr && n > 0) {
      static_cast<std::vector<std::string>*>(out)->emplace_back(values[0] ? values[0] : "NULL");
    }
    return 0;
  };
  const int rc = sqlite3_exec(db, sql, collect, rows, &err);
  if (rc != SQLITE_OK) {
    std::string why = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return Status::io_error(fmt::format("{}: {}", sql, why));
  }
  return Status::ok();
}

}  // namespace

Result<SqliteExport> sqlite_export(const std::string& snapshot, const std::string& database,
                                   const std::string& out) {
  storage::FileSystem& fs = storage::posix_file_system();
  ROMULUS_ASSIGN_OR_RETURN(const storage::SnapshotInfo info,
                           storage::read_snapshot_info(fs, snapshot));
  Mapping m;
  m.size = info.page_count * protocol::kPageSize;
  void* p = ::mmap(nullptr, m.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return Status::io_error(
        fmt::format("no memory for a {} MiB image: {}", m.size >> 20, std::strerror(errno)));
  }
  m.data = static_cast<uint8_t*>(p);
  auto read = storage::read_snapshot(fs, snapshot, m.data, m.size);
  if (!read.is_ok()) return read.status().context(snapshot);

  std::unique_ptr<bip::managed_external_buffer> segment;
  try {
    segment = std::make_unique<bip::managed_external_buffer>(bip::open_only, m.data, m.size);
  } catch (const std::exception&) {
    return Status::invalid_argument(fmt::format(
        "{} holds no guest segment (the guest never attached, or is not an SDK guest)", snapshot));
  }
  if (segment->find<char>(guest::sqlite::kStoreObjectName).first == nullptr) {
    return Status::invalid_argument(fmt::format(
        "{} holds no SQLite databases (the guest never used the romulus VFS)", snapshot));
  }
  auto store = ArenaFileStore::open(*segment);
  if (!store)
    return Status::corrupt(fmt::format("{}: the arena's file table is damaged", snapshot));

  SqliteExport result;
  result.epoch = read->epoch;
  result.names = store->names();
  if (database.empty()) return result;
  if (!store->exists(database)) {
    std::string names;
    for (const auto& n : result.names) names += (names.empty() ? "" : ", ") + n;
    return Status::invalid_argument(fmt::format("no database '{}' in {} (it holds: {})", database,
                                                snapshot, names.empty() ? "nothing" : names));
  }
  struct stat st {};
  if (::stat(out.c_str(), &st) == 0) {
    return Status::invalid_argument(fmt::format("{} exists: export to a new file", out));
  }
  ROMULUS_RETURN_IF_ERROR(copy_out(*store, database, out));
  // What a checkpoint may hold beside the database: SQLite recovers from it.
  for (const char* beside : {"-journal", "-wal"}) {
    if (store->exists_nonempty(database + beside)) {
      ROMULUS_RETURN_IF_ERROR(copy_out(*store, database + beside, out + beside));
    }
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(out.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    const std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::io_error(fmt::format("opening the exported {}: {}", out, why));
  }
  std::vector<std::string> check;
  Status s = exec(db, "PRAGMA journal_mode=DELETE");
  if (s.is_ok()) s = exec(db, "PRAGMA integrity_check", &check);
  sqlite3_close(db);
  ROMULUS_RETURN_IF_ERROR(s);
  if (check.empty() || check.front() != "ok") {
    return Status::corrupt(fmt::format("the exported {} fails SQLite's integrity check: {}", out,
                                       check.empty() ? "no answer" : check.front()));
  }
  if (::stat(out.c_str(), &st) == 0) result.bytes = static_cast<uint64_t>(st.st_size);
  return result;
}

}  // namespace romulus::cli
