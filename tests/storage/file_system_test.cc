#include "storage/file_system.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "tests/storage/storage_test_util.h"
#include "tests/support/status_matchers.h"

namespace romulus::storage::file_system_test {
namespace {

TEST(PosixFileSystem, WritesReadsTruncatesAndSyncs) {
  test_util::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  FileSystem& fs = posix_file_system();
  const std::string path = join_path(tmp.path(), "f");
  Result<std::unique_ptr<File>> f = fs.open(path, OpenMode::kCreate);
  ASSERT_OK(f);
  const std::vector<uint8_t> data = {1, 2, 3, 4};
  ASSERT_OK((*f)->pwrite(4, data.data(), data.size()));
  EXPECT_EQ(*(*f)->size(), 8u);
  std::vector<uint8_t> back(8);
  ASSERT_OK((*f)->pread(0, back.data(), back.size()));
  EXPECT_EQ(back, (std::vector<uint8_t>{0, 0, 0, 0, 1, 2, 3, 4}));
  const Status past = (*f)->pread(6, back.data(), 4);
  EXPECT_EQ(past.code(), StatusCode::kTruncated) << past.to_string();
  ASSERT_OK((*f)->truncate(2));
  EXPECT_EQ(*(*f)->size(), 2u);
  ASSERT_OK((*f)->sync());
  ASSERT_OK(fs.sync_dir(tmp.path()));
}

TEST(PosixFileSystem, NamesAndDirectories) {
  test_util::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  FileSystem& fs = posix_file_system();
  const std::string dir = join_path(tmp.path(), "d");
  ASSERT_OK(fs.make_dir(dir));
  ASSERT_OK(fs.make_dir(dir));  // already there: fine
  const std::vector<uint8_t> data = {9, 8, 7};
  ASSERT_OK(write_file_atomically(fs, join_path(dir, "a"), data.data(), data.size()));
  EXPECT_EQ(*read_whole_file(fs, join_path(dir, "a")), data);
  ASSERT_OK(fs.rename(join_path(dir, "a"), join_path(dir, "b")));
  EXPECT_FALSE(*fs.exists(join_path(dir, "a")));
  EXPECT_TRUE(*fs.exists(join_path(dir, "b")));
  Result<std::vector<std::string>> names = fs.list(dir);
  ASSERT_OK(names);
  EXPECT_EQ(*names, std::vector<std::string>{"b"});
  ASSERT_OK(fs.remove(join_path(dir, "b")));
  const Status missing = fs.open(join_path(dir, "b"), OpenMode::kRead).status();
  EXPECT_EQ(missing.code(), StatusCode::kIoError);
  EXPECT_NE(missing.message().find("No such file or directory"), std::string::npos)
      << missing.message();
}

TEST(FileSystemPaths, ParentAndJoin) {
  EXPECT_EQ(parent_dir("/a/b/c"), "/a/b");
  EXPECT_EQ(parent_dir("/c"), "/");
  EXPECT_EQ(parent_dir("c"), ".");
  EXPECT_EQ(join_path("/a", "b"), "/a/b");
  EXPECT_EQ(join_path("/a/", "b"), "/a/b");
}

}  // namespace
}  // namespace romulus::storage::file_system_test
