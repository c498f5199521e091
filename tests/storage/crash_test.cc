// Crash tests of the durable image: a sequence of writes (base, checkpoints
// with syncs between them, compactions, one of them beside checkpoints, a new
// base, more checkpoints) is cut
// by a power failure after each of its file-system operations in turn; the
// directory is then opened again and must hold exactly one committed epoch, no
// older than the last one the image reported durable. With every crash mode of
// FaultInjectingFileSystem: unsynced writes dropped, kept with the last one
// torn, or kept at random (out of order, torn at sectors).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "storage/durable_image.h"
#include "storage/fault_injection.h"
#include "tests/storage/storage_test_util.h"
#include "tests/support/status_matchers.h"

namespace romulus::storage::crash_test {
namespace {

using test_util::apply;
using test_util::Checkpoint;
using test_util::kPageSize;
using test_util::random_arena;
using test_util::random_checkpoint;
using CrashMode = FaultInjectingFileSystem::CrashMode;

constexpr uint64_t kPages = 24;
constexpr char kDir[] = "/data";
const ImageIdentity kIdentity{kPages, "pair"};

DurableImage::Options options() {
  DurableImage::Options o;
  o.pages_per_block = 4;
  o.record_pages = 3;  // checkpoints of more pages span several records
  return o;
}

struct Op {
  enum Kind {
    kBase,
    kAppend,
    kSync,
    kCompact,
    kBeginCompaction,
    kRunCompaction,
    kFinishCompaction
  };
  Kind kind = kSync;
  Checkpoint checkpoint;       // kAppend
  std::vector<uint8_t> arena;  // kBase
  uint64_t epoch = 0;          // kBase
};

struct Scenario {
  std::vector<Op> ops;
  std::map<uint64_t, std::vector<uint8_t>> images;  // every epoch the sequence commits
};

Scenario make_scenario(uint64_t seed) {
  std::mt19937_64 rng(seed);
  Scenario s;
  std::vector<uint8_t> arena;
  uint64_t epoch = 0;
  const auto base = [&] {
    arena = random_arena(rng, kPages);
    Op op;
    op.kind = Op::kBase;
    op.arena = arena;
    op.epoch = ++epoch;
    s.ops.push_back(std::move(op));
    s.images[epoch] = arena;
  };
  const auto checkpoint = [&](size_t max_pages) {
    Checkpoint c = random_checkpoint(rng, ++epoch, kPages, max_pages);
    test_util::apply(arena, c);
    s.images[epoch] = arena;
    Op op;
    op.kind = Op::kAppend;
    op.checkpoint = std::move(c);
    s.ops.push_back(std::move(op));
  };
  const auto sync = [&] { s.ops.emplace_back(); };
  const auto step = [&](Op::Kind kind) {
    s.ops.emplace_back();
    s.ops.back().kind = kind;
  };
  base();
  checkpoint(4);
  sync();
  checkpoint(2);
  checkpoint(8);  // split over records
  sync();
  checkpoint(5);
  sync();
  s.ops.emplace_back();
  s.ops.back().kind = Op::kCompact;
  checkpoint(3);
  sync();
  checkpoint(7);
  base();
  checkpoint(4);
  sync();
  checkpoint(6);
  step(Op::kCompact);
  // A compaction that runs beside checkpoints.
  checkpoint(5);
  step(Op::kBeginCompaction);
  checkpoint(3);
  sync();
  step(Op::kRunCompaction);
  checkpoint(2);
  step(Op::kFinishCompaction);
  sync();
  checkpoint(3);  // never synced
  return s;
}

// Runs the sequence until its first error (the process "dies" there); returns
// the newest epoch the image reported durable.
uint64_t run(FileSystem& fs, const Scenario& s) {
  Result<std::unique_ptr<DurableImage>> r = DurableImage::open(fs, kDir, kIdentity, options());
  if (!r.is_ok()) return 0;
  DurableImage& image = **r;
  std::unique_ptr<DurableImage::Compaction> job;
  uint64_t acked = 0;
  for (const Op& op : s.ops) {
    Status st;
    switch (op.kind) {
      case Op::kBeginCompaction: {
        Result<std::unique_ptr<DurableImage::Compaction>> begun = image.begin_compaction();
        st = begun.status();
        if (st.is_ok()) job = std::move(begun).value();
        break;
      }
      case Op::kRunCompaction:
        st = job ? job->run() : Status::invalid_argument("nothing to fold");
        break;
      case Op::kFinishCompaction:
        st = image.finish_compaction(std::move(job));
        break;
      case Op::kBase:
        st = image.write_base(op.epoch, op.arena.data(), op.arena.size());
        break;
      case Op::kAppend:
        st = image.append(op.checkpoint.epoch, op.checkpoint.pfns, op.checkpoint.pages.data());
        break;
      case Op::kSync:
        st = image.sync();
        break;
      case Op::kCompact:
        st = image.compact();
        break;
    }
    if (!st.is_ok()) break;
    if (op.kind != Op::kAppend) acked = image.durable_epoch();
  }
  return acked;
}

// Opens the directory after a crash and checks what it holds.
void check_recovery(FaultInjectingFileSystem& fs, const Scenario& s, uint64_t acked,
                    const std::string& where) {
  SCOPED_TRACE(where);
  Result<std::unique_ptr<DurableImage>> r = DurableImage::open(fs, kDir, kIdentity, options());
  ASSERT_OK(r);
  DurableImage& image = **r;
  const uint64_t e = image.epoch();
  EXPECT_GE(e, acked) << "lost an epoch reported durable";
  if (e == 0) return;
  ASSERT_TRUE(s.images.contains(e)) << "epoch " << e << " was never committed";
  std::vector<uint8_t> arena(kPages * kPageSize);
  ASSERT_OK(image.read_image(arena.data(), arena.size()));
  ASSERT_TRUE(arena == s.images.at(e)) << "the image differs from epoch " << e;
  // The directory goes on from there.
  std::vector<uint8_t> page(kPageSize, 0x77);
  const std::vector<uint64_t> pfn = {1};
  ASSERT_OK(image.append(1000, pfn, page.data()));
  ASSERT_OK(image.sync());
  r->reset();
  r = DurableImage::open(fs, kDir, kIdentity, options());
  ASSERT_OK(r);
  EXPECT_EQ((*r)->epoch(), 1000u);
}

uint64_t count_ops(const Scenario& s) {
  FaultInjectingFileSystem probe;
  run(probe, s);
  return probe.mutating_ops();
}

void crash_at_every_step(CrashMode mode, bool tear, uint64_t seed) {
  const Scenario s = make_scenario(seed);
  const uint64_t total = count_ops(s);
  ASSERT_GT(total, 40u);
  for (uint64_t k = 0; k <= total; ++k) {
    FaultInjectingFileSystem fs;
    fs.cut_power_after(k, tear);
    const uint64_t acked = run(fs, s);
    const std::vector<std::string> log = fs.op_log();
    fs.crash(mode, seed * 1000 + k);
    check_recovery(fs, s, acked,
                   fmt::format("power cut after operation {} of {} ({}), seed {}", k, total,
                               k < log.size() ? log[k] : "end", seed));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(Crash, AtEveryStepUnsyncedWritesDropped) {
  crash_at_every_step(CrashMode::kDropUnsynced, false, 1);
}

TEST(Crash, AtEveryStepUnsyncedWritesKeptAndTheLastOneTorn) {
  crash_at_every_step(CrashMode::kKeepUnsynced, true, 2);
}

TEST(Crash, AtEveryStepUnsyncedWritesKeptAtRandom) {
  const uint64_t seed = test_util::test_seed();
  for (uint64_t i = 0; i < 4 && !HasFatalFailure(); ++i) {
    crash_at_every_step(CrashMode::kRandom, (i & 1) != 0, seed + i);
  }
}

// A crash during the recovery itself (cutting a torn tail, finishing a
// compaction) recovers too.
TEST(Crash, DuringRecoveryAfterACrash) {
  const uint64_t seed = 5;
  const Scenario s = make_scenario(seed);
  const uint64_t total = count_ops(s);
  for (uint64_t k = 0; k <= total; k += 1) {
    for (uint64_t j = 0;; ++j) {
      FaultInjectingFileSystem fs;
      fs.cut_power_after(k, true);
      const uint64_t acked = run(fs, s);
      fs.crash(CrashMode::kKeepUnsynced);
      const uint64_t before = fs.mutating_ops();
      fs.cut_power_after(j, true);
      const bool opened = DurableImage::open(fs, kDir, kIdentity, options()).is_ok();
      const bool cut = fs.power_cut();
      const uint64_t used = fs.mutating_ops() - before;
      fs.crash(CrashMode::kRandom, seed * 7919 + k * 31 + j);
      check_recovery(fs, s, acked,
                     fmt::format("crash after operation {}, then after {} of the "
                                 "recovery's",
                                 k, j));
      if (HasFatalFailure()) return;
      if (opened && !cut && used <= j) break;
    }
  }
}

}  // namespace
}  // namespace romulus::storage::crash_test
