// SQLite on the `romulus` VFS (unprotected: a private arena, no supervisor)
// against SQLite's default VFS on tmpfs with synchronous=OFF: the same work, with
// no durability on either side. One iteration is one bank transfer, a
// transaction of two UPDATEs and one INSERT (the statements romulus-bank runs),
// in each journal mode. Results and the command: docs/performance.md, "SQLite on
// the romulus VFS".
//
//   sqlite_vfs_bench [--benchmark_min_time=2]   (ROMULUS_BENCH_TMPFS: a tmpfs dir, default
//   /dev/shm)
#include <benchmark/benchmark.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/interprocess/managed_external_buffer.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "guest/sqlite/arena_file_store.h"
#include "guest/sqlite/sqlite_vfs.h"

namespace {

namespace bip = boost::interprocess;
using romulus::guest::sqlite::ArenaFileStore;
using romulus::guest::sqlite::SqliteVfs;

constexpr size_t kArenaBytes = size_t{2} << 30;  // MAP_NORESERVE: only what is used is backed
constexpr int kAccounts = 1000;

// A fresh arena and romulus VFS per benchmark run.
struct ArenaVfs {
  ArenaVfs() {
    mem = mmap(nullptr, kArenaBytes, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    segment = std::make_unique<bip::managed_external_buffer>(bip::create_only, mem, kArenaBytes);
    static int n = 0;
    auto v = SqliteVfs::create("romulus-bench-" + std::to_string(++n),
                               ArenaFileStore::open(*segment), false);
    if (!v.is_ok()) std::abort();
    vfs = std::move(*v);
  }
  ~ArenaVfs() {
    vfs.reset();
    segment.reset();
    munmap(mem, kArenaBytes);
  }
  void* mem;
  std::unique_ptr<bip::managed_external_buffer> segment;
  std::unique_ptr<SqliteVfs> vfs;
};

void must(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    std::fprintf(stderr, "sqlite_vfs_bench: %s: %s\n", what, sqlite3_errmsg(db));
    std::abort();
  }
}

// kind 0: romulus VFS; 1: default VFS on tmpfs, synchronous=OFF. mode 0: WAL; 1: DELETE.
void BM_Transfer(benchmark::State& state) {
  const bool romulus = state.range(0) == 0;
  const char* mode = state.range(1) == 0 ? "wal" : "delete";
  std::unique_ptr<ArenaVfs> arena;
  std::string path, vfs_name;
  if (romulus) {
    arena = std::make_unique<ArenaVfs>();
    path = "bench.db";
    vfs_name = arena->vfs->name();
  } else {
    const char* dir = std::getenv("ROMULUS_BENCH_TMPFS");
    path = std::string(dir ? dir : "/dev/shm") + "/romulus-sqlite-bench-" +
           std::to_string(getpid()) + ".db";
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) unlink((path + suffix).c_str());
  }
  sqlite3* db = nullptr;
  must(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                       romulus ? vfs_name.c_str() : nullptr),
       db, "open");
  must(sqlite3_exec(db,
                    (std::string("PRAGMA journal_mode=") + mode +
                     "; PRAGMA synchronous=OFF;"
                     "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
                     "CREATE TABLE transfers(id TEXT PRIMARY KEY, src INTEGER, dst INTEGER, "
                     "amount INTEGER) WITHOUT ROWID;"
                     "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i+1 < " +
                     std::to_string(kAccounts) + ") INSERT INTO accounts SELECT i, 1000 FROM n;")
                        .c_str(),
                    nullptr, nullptr, nullptr),
       db, "schema");
  sqlite3_stmt *begin, *debit, *credit, *record, *commit;
  sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, nullptr);
  sqlite3_prepare_v2(db, "UPDATE accounts SET balance = balance - ?2 WHERE id = ?1", -1, &debit,
                     nullptr);
  sqlite3_prepare_v2(db, "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1", -1, &credit,
                     nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO transfers VALUES(?1, ?2, ?3, ?4)", -1, &record, nullptr);
  sqlite3_prepare_v2(db, "COMMIT", -1, &commit, nullptr);
  uint64_t i = 0, rnd = 88172645463325252ULL;
  char id[32];
  for (auto _ : state) {
    rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
    const int from = static_cast<int>(rnd % kAccounts),
              to = static_cast<int>((rnd >> 20) % kAccounts);
    const int n = std::snprintf(id, sizeof(id), "t-%llu", static_cast<unsigned long long>(i++));
    must(sqlite3_step(begin), db, "begin");
    sqlite3_reset(begin);
    sqlite3_bind_int(debit, 1, from);
    sqlite3_bind_int(debit, 2, 1);
    must(sqlite3_step(debit), db, "debit");
    sqlite3_reset(debit);
    sqlite3_bind_int(credit, 1, to);
    sqlite3_bind_int(credit, 2, 1);
    must(sqlite3_step(credit), db, "credit");
    sqlite3_reset(credit);
    sqlite3_bind_text(record, 1, id, n, SQLITE_STATIC);
    sqlite3_bind_int(record, 2, from);
    sqlite3_bind_int(record, 3, to);
    sqlite3_bind_int(record, 4, 1);
    must(sqlite3_step(record), db, "record");
    sqlite3_reset(record);
    must(sqlite3_step(commit), db, "commit");
    sqlite3_reset(commit);
  }
  state.SetItemsProcessed(state.iterations());
  for (sqlite3_stmt* st : {begin, debit, credit, record, commit}) sqlite3_finalize(st);
  sqlite3_close(db);
  if (!romulus) {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) unlink((path + suffix).c_str());
  }
}

BENCHMARK(BM_Transfer)
    ->ArgNames({"vfs_romulus0_tmpfs1", "wal0_delete1"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
