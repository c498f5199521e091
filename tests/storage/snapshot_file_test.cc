#include "storage/snapshot_file.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <random>
#include <vector>

#include "storage/fault_injection.h"
#include "tests/storage/storage_test_util.h"
#include "tests/support/status_matchers.h"

namespace romulus::storage::snapshot_file_test {
namespace {

using test_util::kPageSize;
using test_util::random_arena;
using CrashMode = FaultInjectingFileSystem::CrashMode;

constexpr uint64_t kPages = 12;
constexpr char kPath[] = "/snap";

std::vector<uint8_t> sparse_arena(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> arena = random_arena(rng, kPages);
  std::memset(arena.data() + 2 * kPageSize, 0, 3 * kPageSize);  // a hole for sure
  return arena;
}

SnapshotInfo info(uint64_t epoch) { return {kPages, epoch, "pair-x", 0}; }

TEST(SnapshotFile, RoundTripsAndStoresOnlyNonZeroPages) {
  FaultInjectingFileSystem fs;
  const std::vector<uint8_t> arena = sparse_arena(1);
  ASSERT_OK(write_snapshot(fs, kPath, info(42), arena.data(), arena.size()));
  uint64_t nonzero = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    const uint8_t* page = arena.data() + p * kPageSize;
    nonzero += std::any_of(page, page + kPageSize, [](uint8_t b) { return b != 0; });
  }
  Result<SnapshotInfo> head = read_snapshot_info(fs, kPath);
  ASSERT_OK(head);
  EXPECT_EQ(head->epoch, 42u);
  EXPECT_EQ(head->page_count, kPages);
  EXPECT_EQ(head->pair_id, "pair-x");
  EXPECT_EQ(head->data_pages, nonzero);
  std::vector<uint8_t> back(arena.size(), 0xcc);
  Result<SnapshotInfo> full = read_snapshot(fs, kPath, back.data(), back.size());
  ASSERT_OK(full);
  EXPECT_EQ(back, arena);
  Result<std::vector<uint8_t>> file = fs.contents(kPath);
  ASSERT_OK(file);
  EXPECT_LT(file->size(), (nonzero + 1) * kPageSize);
  EXPECT_FALSE(*fs.exists("/snap.tmp"));
}

TEST(SnapshotFile, AnAllZeroArenaHasNoRuns) {
  FaultInjectingFileSystem fs;
  const std::vector<uint8_t> arena(kPages * kPageSize, 0);
  ASSERT_OK(write_snapshot(fs, kPath, info(1), arena.data(), arena.size()));
  std::vector<uint8_t> back(arena.size(), 1);
  ASSERT_OK(read_snapshot(fs, kPath, back.data(), back.size()));
  EXPECT_EQ(back, arena);
}

TEST(SnapshotFile, AnotherArenaSizeIsRefused) {
  FaultInjectingFileSystem fs;
  const std::vector<uint8_t> arena = sparse_arena(2);
  ASSERT_OK(write_snapshot(fs, kPath, info(3), arena.data(), arena.size()));
  std::vector<uint8_t> other((kPages + 1) * kPageSize);
  const Result<SnapshotInfo> r = read_snapshot(fs, kPath, other.data(), other.size());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("12 pages"), std::string::npos) << r.status().message();
}

TEST(SnapshotFile, EveryFlippedByteAndEveryTruncationIsRefusedAndLeavesAZeroArena) {
  FaultInjectingFileSystem fs;
  const std::vector<uint8_t> arena = sparse_arena(3);
  ASSERT_OK(write_snapshot(fs, kPath, info(5), arena.data(), arena.size()));
  Result<std::vector<uint8_t>> good = fs.contents(kPath);
  ASSERT_OK(good);
  const std::vector<uint8_t> zero(arena.size(), 0);
  std::vector<uint8_t> back(arena.size());
  for (size_t i = 0; i < good->size(); ++i) {
    std::vector<uint8_t> bad = *good;
    bad[i] ^= static_cast<uint8_t>(1u << (i % 8));
    ASSERT_OK(fs.set_contents(kPath, bad));
    const Result<SnapshotInfo> r = read_snapshot(fs, kPath, back.data(), back.size());
    // A flip inside the pair id's bytes changes only the id, and the CRC catches it.
    ASSERT_FALSE(r.is_ok()) << "byte " << i;
    if (r.status().code() != StatusCode::kInvalidArgument) {
      ASSERT_TRUE(back == zero) << "byte " << i;
    }
  }
  for (size_t n = 0; n < good->size(); n += (n < 200 ? 1 : 97)) {
    ASSERT_OK(fs.set_contents(kPath, std::vector<uint8_t>(good->begin(), good->begin() + n)));
    EXPECT_FALSE(read_snapshot(fs, kPath, back.data(), back.size()).is_ok()) << n;
    EXPECT_FALSE(read_snapshot_info(fs, kPath).is_ok()) << n;
  }
}

// A crash at any step of writing a new snapshot over an old one leaves the old
// one or the new one, whole.
TEST(SnapshotFile, ACrashAtAnyStepLeavesTheOldOrTheNewSnapshot) {
  const std::vector<uint8_t> old_arena = sparse_arena(4);
  const std::vector<uint8_t> new_arena = sparse_arena(5);
  const uint64_t seed = test_util::test_seed();
  for (CrashMode mode : {CrashMode::kDropUnsynced, CrashMode::kKeepUnsynced, CrashMode::kRandom}) {
    for (uint64_t k = 0;; ++k) {
      FaultInjectingFileSystem fs;
      ASSERT_OK(write_snapshot(fs, kPath, info(1), old_arena.data(), old_arena.size()));
      fs.cut_power_after(k, /*tear=*/true);
      const Status st = write_snapshot(fs, kPath, info(2), new_arena.data(), new_arena.size());
      fs.crash(mode, seed + k);
      std::vector<uint8_t> back(old_arena.size());
      Result<SnapshotInfo> r = read_snapshot(fs, kPath, back.data(), back.size());
      ASSERT_OK(r) << "step " << k;
      if (st.is_ok()) {
        EXPECT_EQ(r->epoch, 2u) << "written and synced, then lost";
      }
      EXPECT_TRUE(back == (r->epoch == 2 ? new_arena : old_arena)) << "step " << k;
      if (st.is_ok()) break;
    }
  }
}

TEST(SnapshotFile, AFullDiskFailsTheWriteAndLeavesNoPartialFile) {
  FaultInjectingFileSystem fs;
  const std::vector<uint8_t> arena = sparse_arena(6);
  fs.fail_after(1, ENOSPC, FaultInjectingFileSystem::kWriteOps);
  const Status st = write_snapshot(fs, kPath, info(2), arena.data(), arena.size());
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  fs.clear_faults();
  EXPECT_FALSE(*fs.exists(kPath));
  EXPECT_FALSE(*fs.exists("/snap.tmp"));
}

TEST(SnapshotFile, WorksOnTheRealFileSystem) {
  test_util::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string path = tmp.path() + "/pair.snapshot";
  const std::vector<uint8_t> arena = sparse_arena(7);
  ASSERT_OK(write_snapshot(posix_file_system(), path, info(9), arena.data(), arena.size()));
  std::vector<uint8_t> back(arena.size());
  Result<SnapshotInfo> r = read_snapshot(posix_file_system(), path, back.data(), back.size());
  ASSERT_OK(r);
  EXPECT_EQ(r->epoch, 9u);
  EXPECT_EQ(back, arena);
}

}  // namespace
}  // namespace romulus::storage::snapshot_file_test
