// The epoch engine end to end against an in-process receiver: a real guest
// process (romulus-dirtier / romulus-counter), real memfd, real trackers, the
// real chunk stream decoded by the backup's ReplicaState. After every
// checkpoint the receiver's committed image must be byte-identical to the
// guest's arena as it was at that pause.
#include "checkpoint/epoch_engine.h"

#include <gtest/gtest.h>

#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/offset_ptr.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <thread>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/guest_pause.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/tracker_choice.h"
#include "common/shared_memory.h"
#include "protocol/checkpoint_reader.h"
#include "replica/replica_state.h"
#include "tests/support/guest_paths.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_guest.h"

namespace romulus::checkpoint::engine_to_replica_test {
namespace {

using namespace std::chrono_literals;

// The counter guest's state, as examples/counter/counter.cc lays it out.
struct CounterState {
  boost::interprocess::offset_ptr<uint8_t> pages;
  uint64_t counters;
};

// Reads the counters from an image of the counter guest's arena.
std::vector<uint64_t> read_counters(uint8_t* image, size_t size) {
  namespace bip = boost::interprocess;
  bip::managed_external_buffer segment(bip::open_only, image, size);
  auto [state, n] = segment.find<CounterState>("romulus-counter");
  std::vector<uint64_t> values;
  if (state == nullptr || n != 1) return values;
  for (uint64_t i = 0; i < state->counters; ++i) {
    uint64_t v;
    std::memcpy(&v, state->pages.get() + i * protocol::kPageSize, sizeof v);
    values.push_back(v);
  }
  return values;
}

// Decodes everything it is given at once into a ReplicaState.
class LoopbackTransport final : public CheckpointTransport {
 public:
  explicit LoopbackTransport(uint64_t pages) : state(pages), reader(pages, &state) {}
  Status send(protocol::Bytes bytes) override {
    bytes_ += bytes.size();
    return reader.feed(bytes);
  }
  Status flush() override { return Status::ok(); }
  void end_of_checkpoint(uint64_t) override {}

  replica::ReplicaState state;
  protocol::CheckpointReader reader;
  uint64_t bytes_ = 0;
};

struct Harness {
  static constexpr size_t kArenaBytes = 16u << 20;
  common::SharedMemory arena, control;
  std::optional<GuestProcess> guest;
  std::unique_ptr<DirtyTracker> tracker;

  void start(const std::string& tracker_name, std::vector<std::string> argv) {
    arena = std::move(common::SharedMemory::create("test-arena", kArenaBytes)).value();
    control = std::move(common::SharedMemory::create("test-control", 4096)).value();
    GuestSpec spec;
    spec.argv = std::move(argv);
    spec.arena_fd = arena.fd();
    spec.arena_size = arena.size();
    spec.control_fd = control.fd();
    spec.tracker = tracker_name;
    auto g = GuestProcess::start(spec);
    ASSERT_OK(g);
    guest.emplace(std::move(g).value());
    ASSERT_OK(guest->wait_attached(10s));
    TrackerDecision d;
    d.kind = tracker_name == "uffd"        ? TrackerKind::kUffd
             : tracker_name == "uffd-sync" ? TrackerKind::kUffdSync
                                           : TrackerKind::kCompare;
    auto t = make_tracker(d, *guest, arena.data(), arena.size());
    ASSERT_OK(t);
    tracker = std::move(t).value();
  }
};

// A copy of the arena taken at every pause (EpochEngine::on_paused), to check
// that the receiver's committed image is exactly the arena of that pause.
class PauseSnapshot {
 public:
  PauseSnapshot(EpochEngine& engine, const uint8_t* arena, size_t size) : image_(size) {
    engine.on_paused = [this, arena](uint64_t epoch) {
      std::memcpy(image_.data(), arena, image_.size());
      epoch_ = epoch;
    };
  }
  ::testing::AssertionResult matches(replica::ReplicaState& state) const {
    if (state.committed_epoch() != epoch_) {
      return ::testing::AssertionFailure() << "committed epoch " << state.committed_epoch()
                                           << ", last pause was epoch " << epoch_;
    }
    if (std::memcmp(state.committed_image().data(), image_.data(), image_.size()) != 0) {
      return ::testing::AssertionFailure() << "image differs from the arena at epoch " << epoch_;
    }
    return ::testing::AssertionSuccess();
  }

 private:
  std::vector<uint8_t> image_;
  uint64_t epoch_ = 0;
};

class EpochEngineTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EpochEngineTest, ReceiverImageEqualsArenaAtEveryPause) {
  Harness h;
  ASSERT_NO_FATAL_FAILURE(h.start(GetParam(), {romulus::testing::dirtier_path(), "--pages-per-sec",
                                               "20000", "--span", "2048", "--pattern", "sparse"}));
  const uint64_t pages = Harness::kArenaBytes / protocol::kPageSize;
  LoopbackTransport transport(pages);
  StatsRecorder stats;
  GuestPause pause(*h.guest);
  EngineOptions opts;
  opts.staging_bytes = 64 * protocol::kPageSize;  // small: forces sends while paused
  opts.encoder_threads = 2;
  opts.arena_fd = h.arena.fd();
  EpochEngine engine(pause, *h.tracker, pages, &transport, stats, opts);

  PauseSnapshot snapshot(engine, h.arena.data(), Harness::kArenaBytes);
  ASSERT_OK(engine.initial_sync());
  ASSERT_TRUE(transport.state.has_committed());
  uint64_t largest_dirty_set = 0;
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(5ms);
    ASSERT_OK(engine.checkpoint());
    ASSERT_TRUE(snapshot.matches(transport.state));
    largest_dirty_set = std::max(largest_dirty_set, stats.snapshot().last.dirty_pages);
  }
  const auto s = stats.snapshot();
  EXPECT_GT(s.dirty_pages_total, 0u);
  EXPECT_GT(largest_dirty_set, 64u) << "no dirty set exceeded the staging size; test too weak";
  if (h.tracker->pages_stable_until_next_collect()) {
    // Sent from the tracker's stable copy after resume, in batches: never while paused.
    EXPECT_EQ(s.overflowed_staging, 0u);
  } else {
    EXPECT_GT(s.overflowed_staging, 0u) << "the staging buffer never overflowed; test too weak";
  }
}

TEST_P(EpochEngineTest, CheckpointsNeverSplitAnUpdate) {
  Harness h;
  ASSERT_NO_FATAL_FAILURE(h.start(GetParam(), {romulus::testing::counter_path()}));
  const uint64_t pages = Harness::kArenaBytes / protocol::kPageSize;
  LoopbackTransport transport(pages);
  StatsRecorder stats;
  GuestPause pause(*h.guest);
  EngineOptions opts;
  EpochEngine engine(pause, *h.tracker, pages, &transport, stats, opts);
  ASSERT_OK(engine.initial_sync());
  uint64_t last_value = 0;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(2ms);
    ASSERT_OK(engine.checkpoint());
    auto values = read_counters(transport.state.committed_image().data(),
                                transport.state.committed_image().size());
    ASSERT_FALSE(values.empty());
    for (uint64_t v : values) ASSERT_EQ(v, values.front()) << "a checkpoint split an Update";
    EXPECT_GE(values.front(), last_value);
    last_value = values.front();
  }
  EXPECT_GT(last_value, 0u);
}

TEST_P(EpochEngineTest, GuestExitIsReportedNotHungOn) {
  Harness h;
  ASSERT_NO_FATAL_FAILURE(h.start(GetParam(), {romulus::testing::dirtier_path(), "--pages-per-sec",
                                               "1000", "--seconds", "0.2"}));
  const uint64_t pages = Harness::kArenaBytes / protocol::kPageSize;
  LoopbackTransport transport(pages);
  StatsRecorder stats;
  GuestPause pause(*h.guest);
  EpochEngine engine(pause, *h.tracker, pages, &transport, stats, EngineOptions{});
  // The guest may exit during the initial sync or during a later checkpoint;
  // either way the engine must say the guest is gone, not hang or succeed.
  // Checkpoints go on until it does (the guest's 0.2 s may start late on a
  // loaded machine), within a deadline that only a hang reaches.
  Status st = engine.initial_sync();
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (st.is_ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    st = engine.checkpoint();
  }
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st.to_string();
}

INSTANTIATE_TEST_SUITE_P(Trackers, EpochEngineTest,
                         ::testing::Values("uffd", "uffd-sync", "compare"));

// Hands every chunk to a LoopbackTransport; while the engine encodes with the
// guest running (between resume() and the next pause()), calls on_send_running
// first, so a test can change the arena under the encoders.
class ScribblingTransport final : public CheckpointTransport {
 public:
  explicit ScribblingTransport(uint64_t pages) : inner(pages) {}
  Status send(protocol::Bytes bytes) override {
    if (guest_running && on_send_running) on_send_running();
    return inner.send(std::move(bytes));
  }
  Status flush() override { return inner.flush(); }
  void end_of_checkpoint(uint64_t epoch) override { inner.end_of_checkpoint(epoch); }

  LoopbackTransport inner;
  bool guest_running = true;
  std::function<void()> on_send_running;
};

// Tells the transport whether the guest is stopped.
class TrackingPauseControl final : public PauseControl {
 public:
  TrackingPauseControl(GuestProcess& g, ScribblingTransport& t) : g_(g), t_(t) {}
  Status pause(std::chrono::milliseconds timeout) override {
    Status st = g_.pause(timeout);
    if (st.is_ok()) t_.guest_running = false;
    return st;
  }
  Status resume() override {
    t_.guest_running = true;
    return g_.resume();
  }
  std::optional<std::string> exited() override { return g_.poll_exit(); }

 private:
  GuestProcess& g_;
  ScribblingTransport& t_;
};

// The compare tracker's pages go from its shadow, after resume, in batches of the
// staging size: a dirty set many times the staging size still arrives whole and
// exact, on several encoder threads, and nothing is sent while the guest is paused.
TEST(CompareTrackerEngineTest, DirtySetLargerThanStagingArrivesExactly) {
  Harness h;
  ASSERT_NO_FATAL_FAILURE(h.start("compare", {romulus::testing::dirtier_path(), "--span", "2048",
                                              "--pattern", "sparse"}));  // as fast as it can
  ASSERT_TRUE(h.tracker->pages_stable_until_next_collect());
  const uint64_t pages = Harness::kArenaBytes / protocol::kPageSize;
  LoopbackTransport transport(pages);
  StatsRecorder stats;
  GuestPause pause(*h.guest);
  EngineOptions opts;
  opts.staging_bytes = 16 * protocol::kPageSize;
  opts.encoder_threads = 3;
  opts.arena_fd = h.arena.fd();
  EpochEngine engine(pause, *h.tracker, pages, &transport, stats, opts);

  PauseSnapshot snapshot(engine, h.arena.data(), Harness::kArenaBytes);
  ASSERT_OK(engine.initial_sync());
  uint64_t largest_dirty_set = 0;
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(5ms);
    ASSERT_OK(engine.checkpoint());
    ASSERT_TRUE(snapshot.matches(transport.state));
    largest_dirty_set = std::max(largest_dirty_set, stats.snapshot().last.dirty_pages);
  }
  EXPECT_GT(largest_dirty_set, 16u * 8) << "dirty sets stayed small; test too weak";
  const auto s = stats.snapshot();
  EXPECT_EQ(s.overflowed_staging, 0u);
}

// Pages the guest (and anyone else) writes while the previous checkpoint is being
// encoded must not leak into it: the encoders read the compare tracker's shadow,
// which only the next collect() changes. Here the guest dirties pages as fast as
// it can, and in addition every chunk handed to the transport after resume is
// preceded by a scribble over pages that are in the dirty set being encoded, so
// every batch after the first is encoded after its pages changed in the arena.
TEST(CompareTrackerEngineTest, PagesWrittenDuringEncodingDoNotLeakIntoTheCheckpoint) {
  Harness h;
  // The dirtier's span sits at the start of the segment; the scribbled region is
  // near the end of the arena, which the guest never uses (its last page holds
  // the segment allocator's end marker, so it is left alone).
  ASSERT_NO_FATAL_FAILURE(h.start(
      "compare", {romulus::testing::dirtier_path(), "--span", "1024", "--pattern", "sparse"}));
  const uint64_t pages = Harness::kArenaBytes / protocol::kPageSize;
  constexpr uint64_t kScribbled = 256;
  const uint64_t first_scribbled = pages - 1 - kScribbled;
  ScribblingTransport transport(pages);
  StatsRecorder stats;
  TrackingPauseControl pause(*h.guest, transport);
  EngineOptions opts;
  opts.staging_bytes = 32 * protocol::kPageSize;
  opts.encoder_threads = 2;
  opts.arena_fd = h.arena.fd();
  EpochEngine engine(pause, *h.tracker, pages, &transport, stats, opts);

  uint64_t scribbles = 0;
  transport.on_send_running = [&] {
    ++scribbles;
    for (uint64_t p = first_scribbled; p < first_scribbled + kScribbled; ++p) {
      uint8_t* page = h.arena.data() + p * protocol::kPageSize;
      std::memcpy(page + (scribbles % 512) * 8, &scribbles, sizeof scribbles);
    }
  };
  PauseSnapshot snapshot(engine, h.arena.data(), Harness::kArenaBytes);
  ASSERT_OK(engine.initial_sync());
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(2ms);
    ASSERT_OK(engine.checkpoint());
    ASSERT_TRUE(snapshot.matches(transport.inner.state));
    // The scribbled pages were dirty at this pause (scribbled during the last
    // encoding), so this checkpoint carried them in several batches.
    if (i > 0) {
      ASSERT_GE(stats.snapshot().last.dirty_pages, kScribbled);
    }
  }
  // Sanity: the scribbles did land in the arena (so a leak would have shown).
  EXPECT_GT(scribbles, 20u * (kScribbled / 32));
  EXPECT_NE(std::memcmp(h.arena.data() + first_scribbled * protocol::kPageSize,
                        transport.inner.state.committed_image().data() +
                            first_scribbled * protocol::kPageSize,
                        kScribbled * protocol::kPageSize),
            0);
}

// Copy-before-write (uffd-sync): the pages a checkpoint re-protects are copied
// after the guest resumes, and a guest write to one of them first has it
// copied. Each round the guest fills a fresh range of pages (so that they are
// dirty in this epoch only, not sticky, hence left for after resume), the
// engine checkpoints, and, with the guest running again but before the engine
// copies anything, the guest overwrites every page of the range (all of
// them, half, or none, by round). The backup's image must equal the arena as
// it was at the pause, byte for byte, every round.
class CopyBeforeWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Measurements m = measure_tracker_costs();
    if (!m.uffd_sync_ok) GTEST_SKIP() << m.uffd_sync_reason;
  }

  // The test guest on a uffd-sync arena of `bytes`, and an engine that copies
  // after resume whatever it can (at least one page), into a receiver, with a
  // copy of the arena taken at every pause.
  void start(size_t bytes, unsigned encoder_threads = 1) {
    ASSERT_OK(h_.start("uffd-sync", bytes));
    TrackerDecision d;
    d.kind = TrackerKind::kUffdSync;
    auto tracker = make_tracker(d, *h_.guest, h_.arena.data(), h_.arena.size());
    ASSERT_OK(tracker);
    tracker_ = std::move(tracker).value();
    const uint64_t pages = bytes / protocol::kPageSize;
    transport_.emplace(pages);
    pause_.emplace(*h_.guest);
    EngineOptions opts;
    opts.copy_after_resume_min_pages = 1;
    opts.encoder_threads = encoder_threads;
    opts.arena_fd = h_.arena.fd();
    engine_.emplace(*pause_, *tracker_, pages, &*transport_, stats_, opts);
    snapshot_.emplace(*engine_, h_.arena.data(), bytes);
  }

  romulus::testing::TestGuestHarness h_;
  std::unique_ptr<DirtyTracker> tracker_;
  std::optional<LoopbackTransport> transport_;
  StatsRecorder stats_;
  std::optional<GuestPause> pause_;
  std::optional<EpochEngine> engine_;
  std::optional<PauseSnapshot> snapshot_;
};

TEST_F(CopyBeforeWriteTest, PagesWrittenDuringTheCopyArriveAsTheyWereAtThePause) {
  constexpr size_t kArenaBytes = 16u << 20;
  constexpr uint64_t kRange = 96;  // pages per round
  constexpr uint64_t kFirst = 64;  // clear of the segment header
  constexpr int kRounds = 30;
  ASSERT_NO_FATAL_FAILURE(start(kArenaBytes));
  auto& h = h_;
  auto& engine = *engine_;
  auto& transport = *transport_;
  auto& stats = stats_;
  auto& snapshot = *snapshot_;
  ASSERT_OK(engine.initial_sync());

  uint64_t range_offset = 0;
  uint64_t rewrite_pages = 0;  // what the hook rewrites this round
  size_t left_for_after = 0;
  engine.on_resumed_before_copy = [&](uint64_t, size_t n) {
    left_for_after = n;
    if (rewrite_pages == 0) return;
    // The guest runs; the engine has copied none of these pages yet.
    ASSERT_EQ(h.write(range_offset, rewrite_pages * protocol::kPageSize, 0xEE), "ok");
  };
  uint64_t on_write_total = 0;
  for (int round = 0; round < kRounds; ++round) {
    range_offset = (kFirst + round * kRange) * protocol::kPageSize;
    ASSERT_EQ(h.write(range_offset, kRange * protocol::kPageSize, 1 + round % 200), "ok");
    rewrite_pages = round % 3 == 0 ? kRange : round % 3 == 1 ? kRange / 2 : 0;
    left_for_after = 0;
    ASSERT_OK(engine.checkpoint());
    ASSERT_TRUE(snapshot.matches(transport.state)) << "round " << round;
    const EpochRecord last = stats.snapshot().last;
    // The fresh range was dirty in this epoch only: every page of it was
    // left protected and copied after resume; the rewritten ones on the
    // guest's write, before it (nothing else copies them meanwhile).
    ASSERT_GE(left_for_after, kRange) << "round " << round;
    ASSERT_EQ(last.copied_after_resume, left_for_after);
    ASSERT_GE(last.copied_on_write, rewrite_pages) << "round " << round;
    on_write_total += last.copied_on_write;
  }
  // The rewrites reach the backup with the next checkpoint.
  rewrite_pages = 0;
  ASSERT_OK(engine.checkpoint());
  ASSERT_TRUE(snapshot.matches(transport.state));
  EXPECT_GE(on_write_total, (kRounds / 3) * kRange * 3 / 2);
  EXPECT_EQ(stats.snapshot().copied_on_write_total, on_write_total);
}

// The same with writers racing everything: two guest threads increment random
// words all over the arena while checkpoints are taken back to back with
// copy-before-write on every one; every committed image is the arena at its
// pause.
TEST_F(CopyBeforeWriteTest, RacingWritersNeverLeakIntoACheckpoint) {
  ASSERT_NO_FATAL_FAILURE(start(4u << 20, /*encoder_threads=*/2));
  auto& h = h_;
  auto& engine = *engine_;
  auto& transport = *transport_;
  auto& stats = stats_;
  auto& snapshot = *snapshot_;
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  ASSERT_EQ(h.command("scribble 2 8 " + std::to_string(seed)), "ok");
  ASSERT_OK(engine.initial_sync());
  // Until enough pages went through copy-before-write, within a deadline
  // that only a machine too loaded to run the guest reaches.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  int rounds = 0;
  while (std::chrono::steady_clock::now() < deadline &&
         (rounds < 200 || stats.snapshot().copied_on_write_total < 100)) {
    std::this_thread::sleep_for(std::chrono::microseconds(200 * (rounds % 5)));
    ASSERT_OK(engine.checkpoint());
    ASSERT_TRUE(snapshot.matches(transport.state)) << "round " << rounds << " seed " << seed;
    ++rounds;
  }
  ASSERT_EQ(h.command("stopthreads"), "ok");
  const auto s = stats.snapshot();
  std::printf("%d checkpoints: %llu pages copied after resume, %llu of them on a write\n", rounds,
              static_cast<unsigned long long>(s.copied_after_resume_total),
              static_cast<unsigned long long>(s.copied_on_write_total));
  EXPECT_GT(s.copied_on_write_total, 0u) << "no page was copied on a write; test too weak";
}

}  // namespace
}  // namespace romulus::checkpoint::engine_to_replica_test
