#include "storage/fault_injection.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::storage::fault_injection_test {
namespace {

using CrashMode = FaultInjectingFileSystem::CrashMode;

std::vector<uint8_t> bytes(std::initializer_list<uint8_t> b) { return b; }

Status write(File& f, uint64_t offset, const std::vector<uint8_t>& b) {
  return f.pwrite(offset, b.data(), b.size());
}

TEST(FaultInjection, ReadsSeeWritesAndAReadPastTheEndIsTruncated) {
  FaultInjectingFileSystem fs;
  ASSERT_OK(fs.make_dir("/d"));
  Result<std::unique_ptr<File>> f = fs.open("/d/a", OpenMode::kCreate);
  ASSERT_OK(f);
  ASSERT_OK(write(**f, 2, bytes({7, 8})));
  std::vector<uint8_t> back(4);
  ASSERT_OK((*f)->pread(0, back.data(), 4));
  EXPECT_EQ(back, bytes({0, 0, 7, 8}));
  EXPECT_EQ((*f)->pread(1, back.data(), 4).code(), StatusCode::kTruncated);
  EXPECT_FALSE(fs.open("/d/missing", OpenMode::kRead).is_ok());
}

TEST(FaultInjection, ACrashDropsWhatNoSyncCovered) {
  FaultInjectingFileSystem fs;
  ASSERT_OK(fs.make_dir("/d"));
  ASSERT_OK(fs.sync_dir("/"));
  {
    Result<std::unique_ptr<File>> f = fs.open("/d/a", OpenMode::kCreate);
    ASSERT_OK(f);
    ASSERT_OK(write(**f, 0, bytes({1, 2, 3})));
    ASSERT_OK((*f)->sync());
    ASSERT_OK(write(**f, 3, bytes({4})));
    Result<std::unique_ptr<File>> g = fs.open("/d/b", OpenMode::kCreate);
    ASSERT_OK(g);
    ASSERT_OK((*g)->sync());
  }
  fs.crash();
  // Neither name was made durable by sync_dir.
  EXPECT_FALSE(*fs.exists("/d/a"));
  EXPECT_TRUE(*fs.exists("/d"));
  {
    Result<std::unique_ptr<File>> f = fs.open("/d/a", OpenMode::kCreate);
    ASSERT_OK(f);
    ASSERT_OK(write(**f, 0, bytes({1, 2, 3})));
    ASSERT_OK((*f)->sync());
    ASSERT_OK(fs.sync_dir("/d"));
    ASSERT_OK(write(**f, 3, bytes({4})));
  }
  fs.crash();
  EXPECT_EQ(*fs.contents("/d/a"), bytes({1, 2, 3}));
}

TEST(FaultInjection, ARenameIsDurableOnlyAfterSyncDirAndAtomicPerName) {
  FaultInjectingFileSystem fs;
  ASSERT_OK(fs.set_contents("/m", bytes({1})));
  ASSERT_OK(fs.set_contents("/m.tmp", bytes({2})));
  ASSERT_OK(fs.rename("/m.tmp", "/m"));
  fs.crash();
  EXPECT_EQ(*fs.contents("/m"), bytes({1}));
  ASSERT_OK(fs.rename("/m.tmp", "/m"));
  ASSERT_OK(fs.sync_dir("/"));
  fs.crash();
  EXPECT_EQ(*fs.contents("/m"), bytes({2}));
  EXPECT_FALSE(*fs.exists("/m.tmp"));
}

TEST(FaultInjection, APowerCutStopsEverythingAndCanTearTheWriteInFlight) {
  FaultInjectingFileSystem fs;
  ASSERT_OK(fs.set_contents("/a", {}));
  Result<std::unique_ptr<File>> f = fs.open("/a", OpenMode::kReadWrite);
  ASSERT_OK(f);
  fs.cut_power_after(1, /*tear=*/true);
  ASSERT_OK(write(**f, 0, std::vector<uint8_t>(10, 1)));
  EXPECT_EQ(write(**f, 10, std::vector<uint8_t>(2048, 2)).code(), StatusCode::kIoError);
  EXPECT_TRUE(fs.power_cut());
  EXPECT_FALSE((*f)->sync().is_ok());
  fs.crash(CrashMode::kKeepUnsynced);
  Result<std::vector<uint8_t>> c = fs.contents("/a");
  ASSERT_OK(c);
  EXPECT_EQ(c->size(), 10u + 1024u);  // the torn write: its first half
  EXPECT_FALSE((*f)->sync().is_ok()) << "a File from before the crash is stale";
}

TEST(FaultInjection, InjectedErrorsCarryTheErrnoText) {
  FaultInjectingFileSystem fs;
  ASSERT_OK(fs.set_contents("/a", {}));
  Result<std::unique_ptr<File>> f = fs.open("/a", OpenMode::kReadWrite);
  ASSERT_OK(f);
  fs.fail_after(1, ENOSPC, FaultInjectingFileSystem::kWriteOps);
  ASSERT_OK(write(**f, 0, bytes({1})));
  ASSERT_OK((*f)->sync());  // syncs are not writes
  const Status st = write(**f, 1, bytes({2}));
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  EXPECT_OK(fs.remove("/a"));  // deleting frees space
  fs.clear_faults();
  fs.fail_after(0, EIO, FaultInjectingFileSystem::kSyncOps, /*once=*/true);
  EXPECT_FALSE(fs.sync_dir("/").is_ok());
  EXPECT_OK(fs.sync_dir("/"));
}

TEST(FaultInjection, RandomCrashesKeepOnlyStatesADiskCouldHold) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    FaultInjectingFileSystem fs;
    ASSERT_OK(fs.set_contents("/a", std::vector<uint8_t>(1024, 1)));
    Result<std::unique_ptr<File>> f = fs.open("/a", OpenMode::kReadWrite);
    ASSERT_OK(f);
    ASSERT_OK(write(**f, 1024, std::vector<uint8_t>(2048, 2)));
    fs.crash(CrashMode::kRandom, seed);
    Result<std::vector<uint8_t>> c = fs.contents("/a");
    ASSERT_OK(c);
    ASSERT_GE(c->size(), 1024u) << seed;
    EXPECT_TRUE(std::all_of(c->begin(), c->begin() + 1024, [](uint8_t b) { return b == 1; }));
    EXPECT_TRUE(std::all_of(c->begin() + 1024, c->end(), [](uint8_t b) { return b == 2; }));
    EXPECT_EQ(c->size() % 512, 0u) << "torn at a sector";
  }
}

}  // namespace
}  // namespace romulus::storage::fault_injection_test
