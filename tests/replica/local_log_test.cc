// The primary's own durable log (replica/local_log.h) fed by the real epoch
// engine over a real guest: what it leaves on disk is the guest's arena at
// the last acknowledged epoch; under --durable sync no ACK leaves before the
// fdatasync that covers it, and none after the writer failed; ACKs wait for
// before_first_ack. The disk is FaultInjectingFileSystem (or a gate over it).
#include "replica/local_log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_pause.h"
#include "checkpoint/stats.h"
#include "checkpoint/tracker_choice.h"
#include "storage/durable_image.h"
#include "storage/fault_injection.h"
#include "tests/support/guest_paths.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_guest.h"

namespace romulus::replica::local_log_test {
namespace {

using namespace std::chrono_literals;
using checkpoint::EpochEngine;
using storage::FaultInjectingFileSystem;

constexpr size_t kArenaBytes = 8u << 20;
constexpr uint64_t kPages = kArenaBytes / protocol::kPageSize;
constexpr char kDir[] = "/data";
// How long a test waits for something the writer does on its own thread: far
// more than it takes, so that only a hang fails the wait (no timing asserted).
constexpr auto kPatience = 30s;

// A file system whose syncs (File::sync, sync_dir) wait while the gate is
// closed: an fdatasync that takes as long as the test wants.
class GatedFileSystem final : public storage::FileSystem {
 public:
  explicit GatedFileSystem(storage::FileSystem& base) : base_(base) {}

  void close_gate() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void open_gate() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void pass() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

  Result<std::unique_ptr<storage::File>> open(const std::string& path,
                                              storage::OpenMode mode) override {
    ROMULUS_ASSIGN_OR_RETURN(auto file, base_.open(path, mode));
    return std::unique_ptr<storage::File>(std::make_unique<GatedFile>(*this, std::move(file)));
  }
  Status rename(const std::string& from, const std::string& to) override {
    return base_.rename(from, to);
  }
  Status remove(const std::string& path) override { return base_.remove(path); }
  Status sync_dir(const std::string& dir) override {
    pass();
    return base_.sync_dir(dir);
  }
  Result<bool> exists(const std::string& path) override { return base_.exists(path); }
  Status make_dir(const std::string& dir) override { return base_.make_dir(dir); }
  Result<std::vector<std::string>> list(const std::string& dir) override { return base_.list(dir); }
  Result<std::unique_ptr<storage::FileLock>> lock(const std::string& path) override {
    return base_.lock(path);
  }

 private:
  class GatedFile final : public storage::File {
   public:
    GatedFile(GatedFileSystem& fs, std::unique_ptr<storage::File> file)
        : fs_(fs), file_(std::move(file)) {}
    Status pwrite(uint64_t offset, const uint8_t* data, size_t n) override {
      return file_->pwrite(offset, data, n);
    }
    Status pread(uint64_t offset, uint8_t* data, size_t n) override {
      return file_->pread(offset, data, n);
    }
    Result<uint64_t> size() override { return file_->size(); }
    Status truncate(uint64_t size) override { return file_->truncate(size); }
    Status sync() override {
      fs_.pass();
      return file_->sync();
    }

   private:
    GatedFileSystem& fs_;
    std::unique_ptr<storage::File> file_;
  };

  storage::FileSystem& base_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
};

// What the log acknowledged and reported, as its hooks saw it.
struct Acks {
  std::mutex mu;
  std::condition_variable changed;
  std::vector<uint64_t> epochs;
  std::vector<std::string> disk_errors;

  checkpoint::LocalLogHooks hooks() {
    checkpoint::LocalLogHooks h;
    h.on_ack = [this](uint64_t e) {
      std::lock_guard lock(mu);
      epochs.push_back(e);
      changed.notify_all();
    };
    h.on_disk_error = [this](const std::string& line) {
      std::lock_guard lock(mu);
      disk_errors.push_back(line);
      changed.notify_all();
    };
    return h;
  }
  uint64_t last() {
    std::lock_guard lock(mu);
    return epochs.empty() ? 0 : epochs.back();
  }
  size_t count() {
    std::lock_guard lock(mu);
    return epochs.size();
  }
  // Waits (bounded by kPatience) until `done` holds; returns whether it did.
  template <typename Pred>
  bool wait(Pred done) {
    std::unique_lock lock(mu);
    return changed.wait_for(lock, kPatience, [&] { return done(); });
  }
};

// A guest that keeps writing pages, its tracker and an engine whose
// transport is a LocalLog; a copy of the arena at every pause.
struct Fixture {
  romulus::testing::TestGuestHarness guest;
  std::unique_ptr<checkpoint::DirtyTracker> tracker;
  std::unique_ptr<checkpoint::GuestPause> pause;
  checkpoint::StatsRecorder stats;
  std::unique_ptr<EpochEngine> engine;
  std::vector<uint8_t> at_pause = std::vector<uint8_t>(kArenaBytes);
  uint64_t pause_epoch = 0;

  void start() {
    ASSERT_OK(guest.start("compare", kArenaBytes,
                          {romulus::testing::dirtier_path(), "--pages-per-sec", "5000", "--span",
                           "1024", "--pattern", "sparse"}));
    checkpoint::TrackerDecision d;
    d.kind = checkpoint::TrackerKind::kCompare;
    auto t = checkpoint::make_tracker(d, *guest.guest, guest.arena.data(), guest.arena.size());
    ASSERT_OK(t);
    tracker = std::move(t).value();
    pause = std::make_unique<checkpoint::GuestPause>(*guest.guest);
    checkpoint::EngineOptions opts;
    opts.arena_fd = guest.arena.fd();
    engine = std::make_unique<EpochEngine>(*pause, *tracker, kPages, nullptr, stats, opts);
    engine->on_paused = [this](uint64_t epoch) {
      std::memcpy(at_pause.data(), guest.arena.data(), at_pause.size());
      pause_epoch = epoch;
    };
  }
  // The initial sync and `n` checkpoints into `log`.
  void run(checkpoint::CheckpointTransport& log, int n) {
    engine->set_transport(&log);
    ASSERT_OK(engine->initial_sync());
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(2ms);
      ASSERT_OK(engine->checkpoint());
    }
  }
};

LocalLogOptions options(storage::FileSystem& fs, storage::DurableMode mode) {
  LocalLogOptions o;
  o.durable.data_dir = kDir;
  o.durable.mode = mode;
  o.page_count = kPages;
  o.fs = &fs;
  return o;
}

TEST(LocalLog, LeavesTheArenaOfTheLastAcknowledgedEpochOnDisk) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.start());
  FaultInjectingFileSystem fs;
  Acks acks;
  auto log = LocalLog::open(options(fs, storage::DurableMode::kSync), acks.hooks());
  ASSERT_OK(log);
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 20));
  (*log)->stop();  // drains: every checkpoint durable, and acknowledged
  EXPECT_EQ(acks.last(), f.pause_epoch);
  EXPECT_EQ((*log)->report(std::chrono::steady_clock::now()).durable_epoch, f.pause_epoch);
  log->reset();

  // The power goes: what was acknowledged was synced, so it is all there.
  fs.crash(FaultInjectingFileSystem::CrashMode::kDropUnsynced);
  auto image = storage::DurableImage::open(fs, kDir, {kPages, ""});
  ASSERT_OK(image);
  EXPECT_EQ((*image)->epoch(), f.pause_epoch);
  std::vector<uint8_t> read(kArenaBytes);
  ASSERT_OK((*image)->read_image(read.data(), read.size()));
  EXPECT_TRUE(read == f.at_pause) << "the image on disk differs from the arena at epoch "
                                  << f.pause_epoch;
}

TEST(LocalLog, AcknowledgesNothingBeforeTheFdatasyncUnderSync) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.start());
  FaultInjectingFileSystem disk;
  GatedFileSystem fs(disk);
  Acks acks;
  auto log = LocalLog::open(options(fs, storage::DurableMode::kSync), acks.hooks());
  ASSERT_OK(log);
  fs.close_gate();  // every fdatasync from now on waits
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 10));
  // Every checkpoint is committed in memory and handed to the writer, none is
  // on disk: none is acknowledged.
  EXPECT_EQ((*log)->replica().committed_epoch(), f.pause_epoch);
  EXPECT_EQ(acks.count(), 0u);
  EXPECT_EQ((*log)->report(std::chrono::steady_clock::now()).durable_epoch, 0u);
  fs.open_gate();
  EXPECT_TRUE(acks.wait([&] {
    return !acks.epochs.empty() && acks.epochs.back() == f.pause_epoch;
  })) << "the last checkpoint was never acknowledged once the disk synced it";
  (*log)->stop();
}

TEST(LocalLog, AcknowledgesOnceCommittedInMemoryUnderAsync) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.start());
  FaultInjectingFileSystem disk;
  GatedFileSystem fs(disk);
  Acks acks;
  auto log = LocalLog::open(options(fs, storage::DurableMode::kAsync), acks.hooks());
  ASSERT_OK(log);
  fs.close_gate();
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 10));
  EXPECT_EQ(acks.last(), f.pause_epoch);  // written behind: acknowledged all the same
  EXPECT_GT((*log)->report(std::chrono::steady_clock::now()).lag_epochs, 0u);
  fs.open_gate();
  (*log)->stop();
}

TEST(LocalLog, AWriterErrorHoldsEveryLaterAckUnderSync) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.start());
  FaultInjectingFileSystem fs;
  Acks acks;
  auto log = LocalLog::open(options(fs, storage::DurableMode::kSync), acks.hooks());
  ASSERT_OK(log);
  fs.fail_after(0, EIO, FaultInjectingFileSystem::kSyncOps);  // every sync fails from now on
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 5));
  EXPECT_TRUE(acks.wait([&] { return !acks.disk_errors.empty(); })) << "no disk error reported";
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 5));  // the engine goes on; the log takes no more
  fs.clear_faults();
  (*log)->stop();
  EXPECT_EQ(acks.count(), 0u) << "acknowledged " << acks.last() << " after a failed fdatasync";
  const auto r = (*log)->report(std::chrono::steady_clock::now());
  EXPECT_TRUE(r.acks_held);
  EXPECT_NE(r.error.find("writing the durable image in --data-dir /data failed"), std::string::npos)
      << r.error;
  ASSERT_EQ(acks.disk_errors.size(), 1u);  // said once
}

TEST(LocalLog, AWriterErrorUnderAsyncEndsItsAcksAndSaysTheGuestIsUnprotected) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.start());
  FaultInjectingFileSystem fs;
  Acks acks;
  auto log = LocalLog::open(options(fs, storage::DurableMode::kAsync), acks.hooks());
  ASSERT_OK(log);
  fs.fail_after(0, EIO, FaultInjectingFileSystem::kSyncOps);
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 3));
  EXPECT_TRUE(acks.wait([&] { return !acks.disk_errors.empty(); })) << "no disk error reported";
  const size_t before = acks.count();
  ASSERT_NO_FATAL_FAILURE(f.run(**log, 5));
  EXPECT_EQ(acks.count(), before) << "acknowledged from a log whose disk failed";
  fs.clear_faults();
  (*log)->stop();
  ASSERT_EQ(acks.disk_errors.size(), 1u);
  EXPECT_NE(acks.disk_errors[0].find("the guest runs UNPROTECTED (--durable async"),
            std::string::npos)
      << acks.disk_errors[0];
}

TEST(LocalLog, HoldsAcksWhileBeforeFirstAckRefuses) {
  Fixture f;
  ASSERT_NO_FATAL_FAILURE(f.start());
  FaultInjectingFileSystem fs;
  Acks acks;
  checkpoint::LocalLogHooks hooks = acks.hooks();
  std::atomic<int> asked{0};
  std::atomic<uint64_t> base{0};
  hooks.before_first_ack = [&](uint64_t base_epoch) {
    base.store(base_epoch);
    return ++asked <= 2 ? Status::unavailable("the witness is unreachable") : Status::ok();
  };
  auto log = LocalLog::open(options(fs, storage::DurableMode::kAsync), std::move(hooks));
  ASSERT_OK(log);
  f.engine->set_transport(log->get());
  ASSERT_OK(f.engine->initial_sync());
  const uint64_t first = f.pause_epoch;
  EXPECT_EQ(acks.count(), 0u);  // refused once
  EXPECT_TRUE((*log)->report(std::chrono::steady_clock::now()).acks_held);
  ASSERT_OK(f.engine->checkpoint());
  EXPECT_EQ(acks.count(), 0u);  // refused twice
  ASSERT_OK(f.engine->checkpoint());
  EXPECT_EQ(acks.last(), f.pause_epoch);  // allowed: the newest epoch covers the held ones
  ASSERT_OK(f.engine->checkpoint());
  EXPECT_EQ(asked.load(), 3);  // asked before the first ACK only
  EXPECT_EQ(base.load(), first);
  EXPECT_FALSE((*log)->report(std::chrono::steady_clock::now()).acks_held);
  (*log)->stop();
}

}  // namespace
}  // namespace romulus::replica::local_log_test
