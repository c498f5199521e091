// The `romulus` SQLite VFS over test arenas: real SQLite (Debian's libsqlite3)
// on an ArenaFileStore in a page-aligned buffer. A "checkpoint" here is a copy
// of the buffer taken between two VFS calls (the store's fault hook, which runs
// where a pause may stop the guest); a "resume" opens a new VFS over the copy,
// mapped at another address, with no locks held, as a resumed process would.
//
// Specification:
//   - both journal modes (rollback journal: delete, truncate, persist; WAL) keep
//     data across close and reopen;
//   - a checkpoint taken between any two VFS calls of a transaction resumes to
//     the state before or after it, never a mix, with integrity_check ok;
//   - a resumed process sees no lock held by the dead one;
//   - overwriting one database page changes exactly one arena page;
//   - a full arena is SQLITE_FULL, and the database is still whole;
//   - connections of one process exclude each other as SQLite expects.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "guest/sqlite/arena_file_store.h"
#include "guest/sqlite/sqlite_vfs.h"
#include "tests/support/status_matchers.h"

namespace romulus::guest::sqlite::sqlite_vfs_test {
namespace {

namespace bip = boost::interprocess;

// A page-aligned buffer holding a managed segment, like the arena.
class TestArena {
 public:
  explicit TestArena(size_t size) : size_(size) {
    mem_ = static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, size));
    std::memset(mem_, 0, size);
    segment_ = std::make_unique<bip::managed_external_buffer>(bip::create_only, mem_, size);
  }
  // A copy of another arena's bytes (a checkpoint image), opened as a resume does.
  TestArena(const std::vector<uint8_t>& image) : size_(image.size()) {
    mem_ = static_cast<uint8_t*>(std::aligned_alloc(kBlockSize, size_));
    std::memcpy(mem_, image.data(), size_);
    segment_ = std::make_unique<bip::managed_external_buffer>(bip::open_only, mem_, size_);
  }
  ~TestArena() {
    segment_.reset();
    std::free(mem_);
  }
  bip::managed_external_buffer& segment() { return *segment_; }
  std::vector<uint8_t> image() const { return {mem_, mem_ + size_}; }
  const uint8_t* bytes() const { return mem_; }
  size_t size() const { return size_; }

 private:
  size_t size_;
  uint8_t* mem_;
  std::unique_ptr<bip::managed_external_buffer> segment_;
};

std::string unique_vfs_name() {
  static int n = 0;
  return "romulus-test-" + std::to_string(++n);
}

// A VFS over an arena; the arena must outlive it.
std::unique_ptr<SqliteVfs> make_vfs(TestArena& arena) {
  auto store = ArenaFileStore::open(arena.segment());
  EXPECT_NE(store, nullptr);
  auto vfs = SqliteVfs::create(unique_vfs_name(), std::move(store), false);
  EXPECT_OK(vfs);
  return std::move(*vfs);
}

struct Db {
  Db(SqliteVfs& vfs, const char* name = "test.db") {
    rc = sqlite3_open_v2(name, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs.name().c_str());
  }
  ~Db() { sqlite3_close(db); }
  int exec(const std::string& sql) {
    return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out = "<error>";
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
      int r = sqlite3_step(st);
      if (r == SQLITE_ROW) {
        auto* t = sqlite3_column_text(st, 0);
        out = t ? reinterpret_cast<const char*>(t) : "<null>";
      } else {
        out = "<" + std::string(sqlite3_errstr(r)) + ">";
      }
    }
    sqlite3_finalize(st);
    return out;
  }
  int64_t integer(const std::string& sql) { return std::atoll(text(sql).c_str()); }
  sqlite3* db = nullptr;
  int rc = SQLITE_ERROR;
};

const char* kModes[] = {"delete", "truncate", "persist", "wal"};

class JournalModeTest : public ::testing::TestWithParam<const char*> {};

// 20 accounts of 100 each: the total is 2000 whatever transfers ran.
void make_bank(Db& d, const char* mode) {
  ASSERT_EQ(d.exec(std::string("PRAGMA journal_mode=") + mode), SQLITE_OK);
  ASSERT_EQ(d.text("PRAGMA journal_mode"), mode);
  ASSERT_EQ(d.exec("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
                   "CREATE TABLE transfers(id INTEGER PRIMARY KEY, payload BLOB);"),
            SQLITE_OK);
  ASSERT_EQ(d.exec("BEGIN"), SQLITE_OK);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(d.exec("INSERT INTO accounts VALUES(" + std::to_string(i) + ", 100)"), SQLITE_OK);
  }
  ASSERT_EQ(d.exec("COMMIT"), SQLITE_OK);
}

// One transfer; the payload makes the transaction span several pages.
int transfer(Db& d, int id, int from, int to, int amount) {
  std::string sql =
      "BEGIN IMMEDIATE;"
      "UPDATE accounts SET balance = balance - " +
      std::to_string(amount) + " WHERE id = " + std::to_string(from) +
      ";"
      "UPDATE accounts SET balance = balance + " +
      std::to_string(amount) + " WHERE id = " + std::to_string(to) +
      ";"
      "INSERT INTO transfers VALUES(" +
      std::to_string(id) +
      ", zeroblob(6000));"
      "COMMIT;";
  return d.exec(sql);
}

TEST_P(JournalModeTest, DataSurvivesCloseAndReopen) {
  TestArena arena(8 << 20);
  auto vfs = make_vfs(arena);
  {
    Db d(*vfs);
    ASSERT_EQ(d.rc, SQLITE_OK);
    make_bank(d, GetParam());
    for (int i = 0; i < 50; ++i) ASSERT_EQ(transfer(d, i, i % 20, (i + 3) % 20, 7), SQLITE_OK);
  }
  Db d(*vfs);
  EXPECT_EQ(d.integer("SELECT sum(balance) FROM accounts"), 2000);
  EXPECT_EQ(d.integer("SELECT count(*) FROM transfers"), 50);
  EXPECT_EQ(d.text("PRAGMA integrity_check"), "ok");
  // Only WAL is a property of the database file; the others are per connection.
  if (std::string(GetParam()) == "wal") {
    EXPECT_EQ(d.text("PRAGMA journal_mode"), "wal");
  }
}

TEST_P(JournalModeTest, CheckpointBetweenAnyTwoVfsCallsResumesToBeforeOrAfterTheTransaction) {
  TestArena arena(8 << 20);
  auto vfs = make_vfs(arena);
  Db d(*vfs);
  ASSERT_EQ(d.rc, SQLITE_OK);
  make_bank(d, GetParam());
  for (int i = 0; i < 5; ++i) ASSERT_EQ(transfer(d, i, i, i + 1, 10), SQLITE_OK);

  std::vector<std::vector<uint8_t>> images;
  vfs->store().set_after_change_hook([&] { images.push_back(arena.image()); });
  images.push_back(arena.image());
  ASSERT_EQ(transfer(d, 100, 3, 4, 55), SQLITE_OK);
  // And a transfer that rolls back after writing.
  ASSERT_EQ(d.exec("BEGIN IMMEDIATE; UPDATE accounts SET balance = balance - 1 WHERE id = 9;"
                   "INSERT INTO transfers VALUES(200, zeroblob(9000)); ROLLBACK;"),
            SQLITE_OK);
  vfs->store().set_after_change_hook(nullptr);
  ASSERT_GT(images.size(), 3u);

  int before = 0, after = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    SCOPED_TRACE("checkpoint after VFS change " + std::to_string(i) + " of " +
                 std::to_string(images.size()));
    TestArena resumed(images[i]);  // another address, no locks: a resumed process
    auto rvfs = make_vfs(resumed);
    Db r(*rvfs);
    ASSERT_EQ(r.rc, SQLITE_OK);
    EXPECT_EQ(r.text("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(r.integer("SELECT sum(balance) FROM accounts"), 2000);
    const int64_t n = r.integer("SELECT count(*) FROM transfers");
    const int64_t b3 = r.integer("SELECT balance FROM accounts WHERE id = 3");
    EXPECT_EQ(r.integer("SELECT count(*) FROM transfers WHERE id = 200"), 0);
    if (n == 5) {
      ++before;
      EXPECT_EQ(b3, 100);  // account 3 got 10 from 2 and gave 10 to 4
    } else {
      ++after;
      EXPECT_EQ(n, 6);
      EXPECT_EQ(b3, 45);
    }
    // The resumed process can write at once: no lock of the dead one survives.
    EXPECT_EQ(transfer(r, 300, 1, 2, 1), SQLITE_OK) << sqlite3_errmsg(r.db);
    EXPECT_EQ(r.text("PRAGMA integrity_check"), "ok");
  }
  EXPECT_GT(before, 0);
  EXPECT_GT(after, 0);
}

TEST_P(JournalModeTest, ResumedProcessSeesNoReservedLockHeldByNobody) {
  TestArena arena(8 << 20);
  auto vfs = make_vfs(arena);
  Db d(*vfs);
  make_bank(d, GetParam());
  ASSERT_EQ(d.exec("BEGIN IMMEDIATE; UPDATE accounts SET balance = 0 WHERE id = 1;"), SQLITE_OK);
  Db other(*vfs);  // the same process: the write lock is held
  other.exec("PRAGMA busy_timeout=0");
  EXPECT_EQ(other.exec("BEGIN IMMEDIATE"), SQLITE_BUSY);

  TestArena resumed(arena.image());
  auto rvfs = make_vfs(resumed);
  Db r(*rvfs);
  r.exec("PRAGMA busy_timeout=0");
  EXPECT_EQ(r.exec("BEGIN IMMEDIATE; UPDATE accounts SET balance = 1 WHERE id = 2; COMMIT;"),
            SQLITE_OK)
      << sqlite3_errmsg(r.db);
  EXPECT_EQ(r.integer("SELECT balance FROM accounts WHERE id = 1"), 100);
  EXPECT_EQ(d.exec("ROLLBACK"), SQLITE_OK);
}

TEST_P(JournalModeTest, FullArenaIsSqliteFullAndTheDatabaseStaysWhole) {
  TestArena arena(2 << 20);
  auto vfs = make_vfs(arena);
  Db d(*vfs);
  make_bank(d, GetParam());
  int rc = SQLITE_OK;
  int i = 0;
  for (; i < 10000 && rc == SQLITE_OK; ++i) rc = transfer(d, 1000 + i, 1, 2, 1);
  EXPECT_EQ(rc, SQLITE_FULL) << sqlite3_errstr(rc);
  d.exec("ROLLBACK");
  EXPECT_EQ(d.text("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(d.integer("SELECT sum(balance) FROM accounts"), 2000);
  EXPECT_EQ(d.integer("SELECT count(*) FROM transfers"), i - 1);
  // And a fresh connection (a restarted program) reads it whole.
  Db again(*vfs);
  EXPECT_EQ(again.text("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(again.integer("SELECT count(*) FROM transfers"), i - 1);
}

TEST_P(JournalModeTest, ThreadsWithTheirOwnConnectionsSerializeTheirTransactions) {
  TestArena arena(32 << 20);
  auto vfs = make_vfs(arena);
  {
    Db d(*vfs);
    make_bank(d, GetParam());
  }
  constexpr int kThreads = 4, kTransfers = 200;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Db d(*vfs);
      d.exec("PRAGMA busy_timeout=10000");
      for (int i = 0; i < kTransfers; ++i) {
        if (transfer(d, t * kTransfers + i, (t + i) % 20, (t + 2 * i + 1) % 20, 1) != SQLITE_OK) {
          ++failures[t];
          d.exec("ROLLBACK");
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  Db d(*vfs);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  EXPECT_EQ(d.integer("SELECT count(*) FROM transfers"), kThreads * kTransfers);
  EXPECT_EQ(d.integer("SELECT sum(balance) FROM accounts"), 2000);
  EXPECT_EQ(d.text("PRAGMA integrity_check"), "ok");
}

INSTANTIATE_TEST_SUITE_P(AllJournalModes, JournalModeTest, ::testing::ValuesIn(kModes),
                         [](const auto& info) { return std::string(info.param); });

TEST(SqliteVfsTest, OverwritingOneDatabasePageChangesExactlyOneArenaPage) {
  TestArena arena(8 << 20);
  auto vfs = make_vfs(arena);
  sqlite3_vfs* v = sqlite3_vfs_find(vfs->name().c_str());
  ASSERT_NE(v, nullptr);
  std::vector<uint8_t> file_mem(v->szOsFile);
  auto* f = reinterpret_cast<sqlite3_file*>(file_mem.data());
  int out = 0;
  ASSERT_EQ(v->xOpen(v, "pages.db", f,
                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MAIN_DB, &out),
            SQLITE_OK);
  std::vector<uint8_t> page(4096, 0xab);
  for (int p = 0; p < 8; ++p) ASSERT_EQ(f->pMethods->xWrite(f, page.data(), 4096, p * 4096), 0);
  std::vector<uint8_t> before = arena.image();
  std::fill(page.begin(), page.end(), 0xcd);
  ASSERT_EQ(f->pMethods->xWrite(f, page.data(), 4096, 5 * 4096), SQLITE_OK);
  size_t changed = 0;
  for (size_t off = 0; off < arena.size(); off += 4096) {
    if (std::memcmp(before.data() + off, arena.bytes() + off, 4096) != 0) ++changed;
  }
  EXPECT_EQ(changed, 1u);
  std::vector<uint8_t> back(4096);
  ASSERT_EQ(f->pMethods->xRead(f, back.data(), 4096, 5 * 4096), SQLITE_OK);
  EXPECT_EQ(back, page);
  f->pMethods->xClose(f);
}

TEST(SqliteVfsTest, ReadPastTheEndIsAShortReadFilledWithZeros) {
  TestArena arena(4 << 20);
  auto vfs = make_vfs(arena);
  sqlite3_vfs* v = sqlite3_vfs_find(vfs->name().c_str());
  std::vector<uint8_t> file_mem(v->szOsFile);
  auto* f = reinterpret_cast<sqlite3_file*>(file_mem.data());
  ASSERT_EQ(v->xOpen(v, "short", f, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
            SQLITE_OK);
  const char text[] = "hello";
  ASSERT_EQ(f->pMethods->xWrite(f, text, 5, 10000), SQLITE_OK);
  std::vector<uint8_t> buf(100, 0xff);
  EXPECT_EQ(f->pMethods->xRead(f, buf.data(), 100, 9990), SQLITE_IOERR_SHORT_READ);
  EXPECT_EQ(std::count(buf.begin(), buf.end(), 0), 95);
  EXPECT_EQ(std::memcmp(buf.data() + 10, text, 5), 0);
  sqlite3_int64 size = 0;
  f->pMethods->xFileSize(f, &size);
  EXPECT_EQ(size, 10005);
  EXPECT_EQ(f->pMethods->xTruncate(f, 10002), SQLITE_OK);
  EXPECT_EQ(f->pMethods->xWrite(f, text, 1, 10100), SQLITE_OK);  // re-extends: the cut bytes are 0
  EXPECT_EQ(f->pMethods->xRead(f, buf.data(), 5, 10000), SQLITE_OK);
  EXPECT_EQ(std::memcmp(buf.data(), "he\0\0\0", 5), 0);
  f->pMethods->xClose(f);
}

TEST(SqliteVfsTest, TemporaryFilesAreDeletedOnCloseAndOrphansOnTheNextRegistration) {
  TestArena arena(8 << 20);
  auto vfs = make_vfs(arena);
  sqlite3_vfs* v = sqlite3_vfs_find(vfs->name().c_str());
  std::vector<uint8_t> file_mem(v->szOsFile);
  auto* f = reinterpret_cast<sqlite3_file*>(file_mem.data());
  ASSERT_EQ(v->xOpen(v, nullptr, f,
                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_DELETEONCLOSE |
                         SQLITE_OPEN_TEMP_JOURNAL,
                     nullptr),
            SQLITE_OK);
  std::vector<uint8_t> page(4096, 1);
  ASSERT_EQ(f->pMethods->xWrite(f, page.data(), 4096, 0), SQLITE_OK);
  EXPECT_EQ(vfs->store().stats().files, 1u);
  {
    TestArena resumed(arena.image());  // a process died with the temp file open
    auto rvfs = make_vfs(resumed);
    EXPECT_EQ(rvfs->store().stats().files, 0u);
  }
  f->pMethods->xClose(f);
  EXPECT_EQ(vfs->store().stats().files, 0u);
}

TEST(SqliteVfsTest, WalReadersKeepTheirSnapshotWhileAWriterCommits) {
  TestArena arena(8 << 20);
  auto vfs = make_vfs(arena);
  Db w(*vfs);
  make_bank(w, "wal");
  Db r(*vfs);
  ASSERT_EQ(r.exec("BEGIN"), SQLITE_OK);
  EXPECT_EQ(r.integer("SELECT balance FROM accounts WHERE id = 1"), 100);
  ASSERT_EQ(transfer(w, 1, 1, 2, 30), SQLITE_OK);
  EXPECT_EQ(r.integer("SELECT balance FROM accounts WHERE id = 1"), 100);
  ASSERT_EQ(r.exec("COMMIT"), SQLITE_OK);
  EXPECT_EQ(r.integer("SELECT balance FROM accounts WHERE id = 1"), 70);
}

TEST(SqliteVfsTest, RandomTransfersThenRandomCheckpointsKeepTheInvariant) {
  const char* env = std::getenv("ROMULUS_TEST_SEED");
  const uint32_t seed = env ? static_cast<uint32_t>(std::atoll(env)) : std::random_device{}();
  std::printf("seed %u (repeat with ROMULUS_TEST_SEED=%u)\n", seed, seed);
  std::mt19937 rng(seed);
  for (const char* mode : kModes) {
    SCOPED_TRACE(mode);
    TestArena arena(8 << 20);
    auto vfs = make_vfs(arena);
    Db d(*vfs);
    make_bank(d, mode);
    std::vector<std::vector<uint8_t>> images;
    int changes = 0;
    vfs->store().set_after_change_hook([&] {
      if (rng() % 40 == 0 && images.size() < 12) images.push_back(arena.image());
      ++changes;
    });
    for (int i = 0; i < 150; ++i) {
      ASSERT_EQ(transfer(d, i, static_cast<int>(rng() % 20), static_cast<int>(rng() % 20),
                         static_cast<int>(rng() % 50)),
                SQLITE_OK);
    }
    vfs->store().set_after_change_hook(nullptr);
    for (auto& image : images) {
      TestArena resumed(image);
      auto rvfs = make_vfs(resumed);
      Db r(*rvfs);
      EXPECT_EQ(r.text("PRAGMA integrity_check"), "ok");
      EXPECT_EQ(r.integer("SELECT sum(balance) FROM accounts"), 2000);
    }
  }
}

}  // namespace
}  // namespace romulus::guest::sqlite::sqlite_vfs_test
