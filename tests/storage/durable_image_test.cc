#include "storage/durable_image.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <thread>
#include <vector>

#include "storage/fault_injection.h"
#include "storage/log_format.h"
#include "tests/storage/storage_test_util.h"
#include "tests/support/status_matchers.h"

namespace romulus::storage::durable_image_test {
namespace {

using test_util::apply;
using test_util::Checkpoint;
using test_util::kPageSize;
using test_util::random_arena;
using test_util::random_checkpoint;

constexpr uint64_t kPages = 40;
constexpr char kDir[] = "/data";

DurableImage::Options small_blocks() {
  DurableImage::Options o;
  o.pages_per_block = 4;
  return o;
}

std::unique_ptr<DurableImage> open_ok(FileSystem& fs, DurableImage::Options o = small_blocks(),
                                      const ImageIdentity& id = {kPages, "pair-a"}) {
  Result<std::unique_ptr<DurableImage>> r = DurableImage::open(fs, kDir, id, o);
  EXPECT_OK(r);
  return r.is_ok() ? std::move(r).value() : nullptr;
}

std::vector<uint8_t> read_all(DurableImage& image) {
  std::vector<uint8_t> arena(kPages * kPageSize, 0xee);
  EXPECT_OK(image.read_image(arena.data(), arena.size()));
  return arena;
}

Status append(DurableImage& image, const Checkpoint& c) {
  return image.append(c.epoch, c.pfns, c.pages.data());
}

// An image at epoch 1 and checkpoints 2..n synced, one by one.
struct Fixture {
  FaultInjectingFileSystem fs;
  std::mt19937_64 rng{17};
  std::vector<uint8_t> arena = random_arena(rng, kPages);

  std::unique_ptr<DurableImage> build(uint64_t last_epoch) {
    auto image = open_ok(fs);
    EXPECT_OK(image->write_base(1, arena.data(), arena.size()));
    for (uint64_t e = 2; e <= last_epoch; ++e) {
      const Checkpoint c = random_checkpoint(rng, e, kPages, 6);
      test_util::apply(arena, c);
      EXPECT_OK(append(*image, c));
      EXPECT_OK(image->sync());
    }
    return image;
  }
};

TEST(DurableImage, AnEmptyDirectoryHoldsNoImage) {
  FaultInjectingFileSystem fs;
  auto image = open_ok(fs);
  EXPECT_EQ(image->epoch(), 0u);
  EXPECT_FALSE(image->has_image());
  const Checkpoint c{2, {1}, std::vector<uint8_t>(kPageSize, 1)};
  EXPECT_EQ(append(*image, c).code(), StatusCode::kInvalidArgument);
  std::vector<uint8_t> arena(kPages * kPageSize);
  EXPECT_FALSE(image->read_image(arena.data(), arena.size()).is_ok());
}

TEST(DurableImage, ABaseReadsBackAfterReopenAndZeroPagesAreNotWritten) {
  FaultInjectingFileSystem fs;
  std::vector<uint8_t> arena(kPages * kPageSize, 0);
  std::memset(arena.data() + 3 * kPageSize, 0x5a, kPageSize);
  {
    auto image = open_ok(fs);
    ASSERT_OK(image->write_base(7, arena.data(), arena.size()));
    EXPECT_EQ(image->durable_epoch(), 7u);
    EXPECT_LT(image->stats().bytes_written, 2 * kPageSize);  // one page and meta
  }
  auto image = open_ok(fs);
  EXPECT_EQ(image->epoch(), 7u);
  EXPECT_EQ(read_all(*image), arena);
}

TEST(DurableImage, SyncedCheckpointsAreReplayedAfterReopen) {
  Fixture f;
  f.build(6).reset();
  auto image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 6u);
  EXPECT_EQ(read_all(*image), f.arena);
  EXPECT_TRUE(image->recovery_notes().empty());
}

TEST(DurableImage, ACheckpointWithNoPagesStillAdvancesTheEpoch) {
  Fixture f;
  auto image = f.build(2);
  ASSERT_OK(image->append(3, {}, nullptr));
  ASSERT_OK(image->sync());
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 3u);
  EXPECT_EQ(read_all(*image), f.arena);
}

TEST(DurableImage, UnsyncedCheckpointsAreLostAtACrashAndSyncedOnesAreNot) {
  Fixture f;
  auto image = f.build(3);
  const std::vector<uint8_t> at3 = f.arena;
  const Checkpoint c = random_checkpoint(f.rng, 4, kPages, 6);
  ASSERT_OK(append(*image, c));
  EXPECT_EQ(image->appended_epoch(), 4u);
  EXPECT_EQ(image->durable_epoch(), 3u);
  image.reset();
  f.fs.crash();
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 3u);
  EXPECT_EQ(read_all(*image), at3);
}

TEST(DurableImage, EpochsMustIncreaseAndPfnsMustBeInOrderAndInRange) {
  Fixture f;
  auto image = f.build(3);
  std::vector<uint8_t> page(2 * kPageSize, 1);
  const std::vector<uint64_t> ok = {1, 2}, unordered = {2, 1}, past = {1, kPages};
  EXPECT_EQ(image->append(3, ok, page.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image->append(4, unordered, page.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image->append(4, past, page.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_OK(image->append(4, ok, page.data()));
  EXPECT_EQ(image->write_base(4, f.arena.data(), f.arena.size()).code(),
            StatusCode::kInvalidArgument);
}

TEST(DurableImage, CompactionFoldsTheLogIntoTheBase) {
  Fixture f;
  auto image = f.build(8);
  EXPECT_GT(image->stats().log_bytes, 0u);
  ASSERT_OK(image->compact());
  const DurableImage::Stats s = image->stats();
  EXPECT_EQ(s.base_epoch, 8u);
  EXPECT_EQ(s.log_bytes, 0u);
  EXPECT_EQ(s.compactions, 1u);
  EXPECT_EQ(read_all(*image), f.arena);
  const Checkpoint c = random_checkpoint(f.rng, 9, kPages, 6);
  test_util::apply(f.arena, c);
  ASSERT_OK(append(*image, c));
  ASSERT_OK(image->sync());
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 9u);
  EXPECT_EQ(image->stats().base_epoch, 8u);
  EXPECT_EQ(read_all(*image), f.arena);
  // Only the current files remain.
  Result<std::vector<std::string>> names = f.fs.list(kDir);
  ASSERT_OK(names);
  std::sort(names->begin(), names->end());
  EXPECT_EQ(*names, (std::vector<std::string>{"LOCK", "image.1", "log.2", "meta"}));
}

TEST(DurableImage, ACompactionFoldsOnAnotherThreadWhileCheckpointsGoOn) {
  Fixture f;
  auto image = f.build(5);
  Result<std::unique_ptr<DurableImage::Compaction>> job = image->begin_compaction();
  ASSERT_OK(job);
  ASSERT_NE(*job, nullptr);
  EXPECT_EQ((*job)->target_epoch(), 5u);
  EXPECT_TRUE(image->compaction_running());
  EXPECT_FALSE(image->wants_compaction());
  Status folded;
  std::thread fold([&] { folded = (*job)->run(); });
  for (uint64_t e = 6; e <= 9; ++e) {
    const Checkpoint c = random_checkpoint(f.rng, e, kPages, 6);
    test_util::apply(f.arena, c);
    ASSERT_OK(append(*image, c));
    ASSERT_OK(image->sync());
  }
  fold.join();
  ASSERT_OK(folded);
  std::vector<uint8_t> arena(kPages * kPageSize);
  EXPECT_EQ(image->read_image(arena.data(), arena.size()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image->write_base(10, arena.data(), arena.size()).code(), StatusCode::kInvalidArgument);
  ASSERT_OK(image->finish_compaction(std::move(job).value()));
  EXPECT_FALSE(image->compaction_running());
  EXPECT_EQ(image->stats().base_epoch, 5u);
  EXPECT_EQ(read_all(*image), f.arena);
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 9u);
  EXPECT_EQ(read_all(*image), f.arena);
}

TEST(DurableImage, WantsCompactionOnceTheLogPassesItsThreshold) {
  FaultInjectingFileSystem fs;
  DurableImage::Options o = small_blocks();
  o.compact_log_bytes = 3 * kPageSize;
  o.compress = false;
  auto image = open_ok(fs, o);
  std::vector<uint8_t> arena(kPages * kPageSize, 0);
  ASSERT_OK(image->write_base(1, arena.data(), arena.size()));
  std::vector<uint8_t> page(kPageSize, 3);
  const std::vector<uint64_t> pfn = {5};
  ASSERT_OK(image->append(2, pfn, page.data()));
  EXPECT_FALSE(image->wants_compaction());
  ASSERT_OK(image->append(3, pfn, page.data()));
  ASSERT_OK(image->append(4, pfn, page.data()));
  EXPECT_TRUE(image->wants_compaction());
}

TEST(DurableImage, ANewBaseReplacesImageAndLog) {
  Fixture f;
  auto image = f.build(4);
  std::mt19937_64 rng(99);
  const std::vector<uint8_t> fresh = random_arena(rng, kPages);
  ASSERT_OK(image->write_base(10, fresh.data(), fresh.size()));
  EXPECT_EQ(image->stats().log_bytes, 0u);
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 10u);
  EXPECT_EQ(read_all(*image), fresh);
}

TEST(DurableImage, ACheckpointLargerThanOneRecordIsSplitAndReplayedWhole) {
  FaultInjectingFileSystem fs;
  DurableImage::Options o = small_blocks();
  o.record_pages = 3;
  auto image = open_ok(fs, o);
  std::mt19937_64 rng(8);
  std::vector<uint8_t> arena = random_arena(rng, kPages);
  ASSERT_OK(image->write_base(1, arena.data(), arena.size()));
  const Checkpoint c = random_checkpoint(rng, 2, kPages, 20);
  ASSERT_GT(c.pfns.size(), 6u);
  test_util::apply(arena, c);
  ASSERT_OK(append(*image, c));
  ASSERT_OK(image->sync());
  const std::vector<uint8_t> at2 = arena;
  // A split checkpoint whose last record never landed does not count.
  const Checkpoint d = random_checkpoint(rng, 3, kPages, 20);
  ASSERT_OK(append(*image, d));
  image.reset();
  Result<std::vector<uint8_t>> log = fs.contents("/data/log.1");
  ASSERT_OK(log);
  log->pop_back();  // the last record of epoch 3 is torn; its first ones are whole
  ASSERT_OK(fs.set_contents("/data/log.1", *log));
  image.reset();
  image = open_ok(fs, o);
  EXPECT_EQ(image->epoch(), 2u);
  EXPECT_EQ(read_all(*image), at2);
}

TEST(DurableImage, ADirectoryOfAnotherArenaSizeOrPairIsRefusedUnlessForced) {
  Fixture f;
  f.build(2).reset();
  Result<std::unique_ptr<DurableImage>> r =
      DurableImage::open(f.fs, kDir, {kPages * 2, "pair-a"}, small_blocks());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kRefused);
  EXPECT_NE(r.status().message().find("holds a 40-page image of pair 'pair-a'; this node's arena "
                                      "is 80 pages"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("--force"), std::string::npos);
  r = DurableImage::open(f.fs, kDir, {kPages, "pair-b"}, small_blocks());
  EXPECT_EQ(r.status().code(), StatusCode::kRefused);
  // An unknown pair id accepts any.
  EXPECT_OK(DurableImage::open(f.fs, kDir, {kPages, ""}, small_blocks()));
  DurableImage::Options forced = small_blocks();
  forced.force = true;
  r = DurableImage::open(f.fs, kDir, {kPages, "pair-b"}, forced);
  ASSERT_OK(r);
  EXPECT_EQ((*r)->epoch(), 0u);
  ASSERT_EQ((*r)->recovery_notes().size(), 1u);
  std::vector<uint8_t> arena(kPages * kPageSize, 4);
  ASSERT_OK((*r)->write_base(1, arena.data(), arena.size()));
  r->reset();
  EXPECT_OK(DurableImage::open(f.fs, kDir, {kPages, "pair-b"}, small_blocks()));
}

TEST(DurableImage, ADirectoryInUseIsRefusedUntilItsOwnerCloses) {
  FaultInjectingFileSystem fs;
  auto first = open_ok(fs);
  Result<std::unique_ptr<DurableImage>> second = DurableImage::open(fs, kDir, {kPages, "pair-a"});
  EXPECT_EQ(second.status().code(), StatusCode::kRefused);
  EXPECT_NE(second.status().message().find("in use"), std::string::npos);
  first.reset();
  EXPECT_OK(DurableImage::open(fs, kDir, {kPages, "pair-a"}));
}

TEST(DurableImage, ADirectoryInUseIsRefusedOnTheRealFileSystem) {
  test_util::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  Result<std::unique_ptr<DurableImage>> first =
      DurableImage::open(posix_file_system(), tmp.path(), {kPages, ""});
  ASSERT_OK(first);
  EXPECT_EQ(DurableImage::open(posix_file_system(), tmp.path(), {kPages, ""}).status().code(),
            StatusCode::kRefused);
  first->reset();
  EXPECT_OK(DurableImage::open(posix_file_system(), tmp.path(), {kPages, ""}));
}

TEST(DurableImage, ADirectoryHoldingOtherFilesIsRefused) {
  FaultInjectingFileSystem fs;
  ASSERT_OK(fs.make_dir(kDir));
  ASSERT_OK(fs.set_contents("/data/notes.txt", {1, 2, 3}));
  Result<std::unique_ptr<DurableImage>> r = DurableImage::open(fs, kDir, {kPages, ""});
  EXPECT_EQ(r.status().code(), StatusCode::kRefused);
  EXPECT_NE(r.status().message().find("notes.txt"), std::string::npos);
}

TEST(DurableImage, ATornTailIsCutAndReported) {
  Fixture f;
  auto image = f.build(3);
  const std::vector<uint8_t> at3 = f.arena;
  const Checkpoint c = random_checkpoint(f.rng, 4, kPages, 6);
  ASSERT_OK(append(*image, c));
  image.reset();
  Result<std::vector<uint8_t>> log = f.fs.contents("/data/log.1");
  ASSERT_OK(log);
  log->resize(log->size() - 100);  // the last record lost its end
  ASSERT_OK(f.fs.set_contents("/data/log.1", *log));
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 3u);
  EXPECT_EQ(read_all(*image), at3);
  ASSERT_EQ(image->recovery_notes().size(), 1u);
  EXPECT_NE(image->recovery_notes()[0].find("torn tail"), std::string::npos);
  // And the directory goes on.
  const Checkpoint d = random_checkpoint(f.rng, 5, kPages, 6);
  ASSERT_OK(append(*image, d));
  ASSERT_OK(image->sync());
  image.reset();
  EXPECT_EQ(open_ok(f.fs)->epoch(), 5u);
}

// Byte offset of the record of `epoch` in log.1 (built by Fixture, one record per epoch).
size_t record_offset(const std::vector<uint8_t>& log, uint64_t epoch) {
  size_t pos = kLogHeaderSize;
  while (pos < log.size()) {
    Result<RecordHeader> h =
        decode_record_header(protocol::ByteSpan(log).subspan(pos, kRecordHeaderSize), kPages);
    if (!h.is_ok() || h->epoch == epoch) break;
    pos += h->record_length();
  }
  return pos;
}

TEST(DurableImage, DamageBeforeDurableRecordsIsRefusedAndForceKeepsWhatPrecedesIt) {
  Fixture f;
  f.build(6).reset();
  Result<std::vector<uint8_t>> log = f.fs.contents("/data/log.1");
  ASSERT_OK(log);
  (*log)[record_offset(*log, 4) + kRecordHeaderSize + 10] ^= 1;  // epoch 4's body
  ASSERT_OK(f.fs.set_contents("/data/log.1", *log));
  Result<std::unique_ptr<DurableImage>> r =
      DurableImage::open(f.fs, kDir, {kPages, "pair-a"}, small_blocks());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("after epoch 3"), std::string::npos) << r.status().message();
  DurableImage::Options forced = small_blocks();
  forced.force = true;
  r = DurableImage::open(f.fs, kDir, {kPages, "pair-a"}, forced);
  ASSERT_OK(r);
  EXPECT_EQ((*r)->epoch(), 3u);
  ASSERT_EQ((*r)->recovery_notes().size(), 1u);
  EXPECT_NE((*r)->recovery_notes()[0].find("kept epochs up to 3"), std::string::npos);
}

TEST(DurableImage, EveryFlippedByteOfTheLogIsCaughtNeverServed) {
  Fixture f;
  f.build(4).reset();
  const std::vector<uint8_t> at4 = f.arena;
  Result<std::vector<uint8_t>> log = f.fs.contents("/data/log.1");
  ASSERT_OK(log);
  // Records of epochs 2..4 each hold a few pages; flip one byte at a time at a
  // stride (every byte of the headers, every 61st of the bodies).
  for (size_t i = 0; i < log->size(); i += (i < kLogHeaderSize + kRecordHeaderSize ? 1 : 61)) {
    std::vector<uint8_t> damaged = *log;
    damaged[i] ^= 0x10;
    ASSERT_OK(f.fs.set_contents("/data/log.1", damaged));
    Result<std::unique_ptr<DurableImage>> r =
        DurableImage::open(f.fs, kDir, {kPages, "pair-a"}, small_blocks());
    if (!r.is_ok()) continue;  // refused: fine
    // Accepted only as a torn tail of the last, unsynced-looking record... which
    // here was synced: epoch 4's record is the last, so a flip in it reads as torn.
    std::vector<uint8_t> arena(kPages * kPageSize);
    ASSERT_OK((*r)->read_image(arena.data(), arena.size()));
    EXPECT_GE((*r)->epoch(), 3u) << "byte " << i;
    if ((*r)->epoch() == 4) {
      EXPECT_EQ(arena, at4) << "byte " << i;
    }
  }
}

TEST(DurableImage, ADamagedBlockOfTheBaseIsRefusedAndForceZeroesIt) {
  Fixture f;
  f.build(1).reset();
  Result<std::vector<uint8_t>> img = f.fs.contents("/data/image.1");
  ASSERT_OK(img);
  (*img)[9 * kPageSize + 5] ^= 0xff;  // block 2 (pages 8..11)
  ASSERT_OK(f.fs.set_contents("/data/image.1", *img));
  auto image = open_ok(f.fs);
  std::vector<uint8_t> arena(kPages * kPageSize);
  const Status st = image->read_image(arena.data(), arena.size());
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("pages 8 to 11"), std::string::npos) << st.message();
  DurableImage::Options forced = small_blocks();
  forced.force = true;
  image.reset();
  image = open_ok(f.fs, forced);
  ASSERT_OK(image->read_image(arena.data(), arena.size()));
  std::vector<uint8_t> expected = f.arena;
  std::memset(expected.data() + 8 * kPageSize, 0, 4 * kPageSize);
  EXPECT_EQ(arena, expected);
  EXPECT_EQ(image->recovery_notes().size(), 1u);
}

TEST(DurableImage, ADamagedMetaIsRefused) {
  Fixture f;
  f.build(2).reset();
  Result<std::vector<uint8_t>> meta = f.fs.contents("/data/meta");
  ASSERT_OK(meta);
  (*meta)[20] ^= 1;
  ASSERT_OK(f.fs.set_contents("/data/meta", *meta));
  Result<std::unique_ptr<DurableImage>> r = DurableImage::open(f.fs, kDir, {kPages, "pair-a"});
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("meta"), std::string::npos);
}

TEST(DurableImage, DiskFullOnAppendFailsAndKeepsWhatWasDurable) {
  Fixture f;
  auto image = f.build(3);
  const std::vector<uint8_t> at3 = f.arena;
  f.fs.fail_after(0, ENOSPC, FaultInjectingFileSystem::kWriteOps);
  const Checkpoint c = random_checkpoint(f.rng, 4, kPages, 6);
  const Status st = append(*image, c);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("Free space"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("Epoch 3 is durable"), std::string::npos) << st.message();
  // Sticky: nothing more is written by this object.
  f.fs.clear_faults();
  EXPECT_FALSE(image->sync().is_ok());
  image.reset();
  f.fs.crash();
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 3u);
  EXPECT_EQ(read_all(*image), at3);
}

TEST(DurableImage, AFailedSyncIsNeverRetriedAndKeepsWhatWasDurable) {
  Fixture f;
  auto image = f.build(3);
  const std::vector<uint8_t> at3 = f.arena;
  const Checkpoint c = random_checkpoint(f.rng, 4, kPages, 6);
  ASSERT_OK(append(*image, c));
  f.fs.fail_after(0, EIO, FaultInjectingFileSystem::kSyncOps, /*once=*/true);
  const Status st = image->sync();
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("I/O error"), std::string::npos) << st.message();
  EXPECT_EQ(image->durable_epoch(), 3u);
  EXPECT_FALSE(image->sync().is_ok());  // the fault was once; the object stays failed
  image.reset();
  f.fs.crash();
  image.reset();
  image = open_ok(f.fs);
  EXPECT_EQ(image->epoch(), 3u);
  EXPECT_EQ(read_all(*image), at3);
}

TEST(DurableImage, AnErrorAtAnyStepOfACompactionOrBaseKeepsTheDurableImage) {
  for (int which = 0; which < 2; ++which) {
    for (uint64_t k = 0;; ++k) {
      Fixture f;
      auto image = f.build(5);
      const std::vector<uint8_t> at5 = f.arena;
      std::mt19937_64 rng(5);
      const std::vector<uint8_t> fresh = random_arena(rng, kPages);
      f.fs.fail_after(k, which == 0 ? EIO : ENOSPC);
      const Status st =
          which == 0 ? image->compact() : image->write_base(6, fresh.data(), fresh.size());
      image.reset();
      f.fs.crash();
      image.reset();
      image = open_ok(f.fs);
      ASSERT_TRUE(image != nullptr);
      if (st.is_ok()) {
        EXPECT_EQ(image->epoch(), which == 0 ? 5u : 6u);
        EXPECT_EQ(read_all(*image), which == 0 ? at5 : fresh);
        break;
      }
      EXPECT_EQ(image->epoch(), 5u) << "step " << k;
      EXPECT_EQ(read_all(*image), at5) << "step " << k;
    }
  }
}

TEST(DurableImage, AFullRealDiskFailsAnAppendAndKeepsWhatWasDurable) {
  test_util::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  ErrorInjectingFileSystem fs(posix_file_system());
  std::mt19937_64 rng(12);
  std::vector<uint8_t> arena = random_arena(rng, kPages);
  Result<std::unique_ptr<DurableImage>> r = DurableImage::open(fs, tmp.path(), {kPages, ""});
  ASSERT_OK(r);
  ASSERT_OK((*r)->write_base(1, arena.data(), arena.size()));
  const Checkpoint c = random_checkpoint(rng, 2, kPages, 5);
  test_util::apply(arena, c);
  ASSERT_OK(append(**r, c));
  ASSERT_OK((*r)->sync());
  fs.fail_after(0, ENOSPC, FaultInjectingFileSystem::kWriteOps);
  const Status st = append(**r, random_checkpoint(rng, 3, kPages, 5));
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  r->reset();
  fs.clear_faults();
  r = DurableImage::open(fs, tmp.path(), {kPages, ""});
  ASSERT_OK(r);
  EXPECT_EQ((*r)->epoch(), 2u);
  std::vector<uint8_t> back(arena.size());
  ASSERT_OK((*r)->read_image(back.data(), back.size()));
  EXPECT_EQ(back, arena);
}

TEST(DurableImage, WorksOnTheRealFileSystem) {
  test_util::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string dir = tmp.path() + "/data";
  std::mt19937_64 rng(3);
  std::vector<uint8_t> arena = random_arena(rng, kPages);
  {
    Result<std::unique_ptr<DurableImage>> r =
        DurableImage::open(posix_file_system(), dir, {kPages, "p"}, small_blocks());
    ASSERT_OK(r);
    ASSERT_OK((*r)->write_base(1, arena.data(), arena.size()));
    for (uint64_t e = 2; e <= 5; ++e) {
      const Checkpoint c = random_checkpoint(rng, e, kPages, 5);
      test_util::apply(arena, c);
      ASSERT_OK(append(**r, c));
      ASSERT_OK((*r)->sync());
      if (e == 3) {
        ASSERT_OK((*r)->compact());
      }
    }
  }
  Result<std::unique_ptr<DurableImage>> r =
      DurableImage::open(posix_file_system(), dir, {kPages, "p"}, small_blocks());
  ASSERT_OK(r);
  EXPECT_EQ((*r)->epoch(), 5u);
  std::vector<uint8_t> back(arena.size());
  ASSERT_OK((*r)->read_image(back.data(), back.size()));
  EXPECT_EQ(back, arena);
}

}  // namespace
}  // namespace romulus::storage::durable_image_test
