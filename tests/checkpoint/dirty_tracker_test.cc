// Dirty trackers against a real guest process writing a real memfd arena: each
// test runs for the uffd tracker (userfaultfd async WP + PAGEMAP_SCAN), the
// uffd-sync tracker (synchronous WP resolved by a handler thread) and the compare
// tracker (shadow copy), and for the hybrid tracker auto runs, which moves
// chunks of the arena between the guest's two userfaultfds.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "checkpoint/compare_tracker.h"
#include "checkpoint/dirty_tracker.h"
#include "checkpoint/hybrid_tracker.h"
#include "checkpoint/tracker_choice.h"
#include "checkpoint/uffd_sync_tracker.h"
#include "checkpoint/uffd_tracker.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_guest.h"

namespace romulus::checkpoint::dirty_tracker_test {
namespace {

using romulus::testing::TestGuestHarness;
using Pfns = std::vector<uint64_t>;

constexpr size_t kArenaPages = 256;
constexpr size_t kArenaBytes = kArenaPages * 4096;

// "uffd-hybrid" runs a "uffd-switchable" guest.
std::string guest_tracker(const std::string& kind) {
  return kind == "uffd-hybrid" ? "uffd-switchable" : kind;
}

// The hybrid with chunks of 16 pages that move at the first sign (one busy
// pause, two clean ones): the tests' small arenas get many chunks and moves.
constexpr HybridTuning kRestlessHybrid{
    .chunk_pages = 16, .hot_pauses = 1, .cold_pauses = 2, .max_moved_pages = 1 << 20};

// A hybrid over the harness's "uffd-switchable" guest.
Result<std::unique_ptr<HybridTracker>> hybrid_for(TestGuestHarness& h, const Measurements& m,
                                                  HybridTuning tuning) {
  ROMULUS_ASSIGN_OR_RETURN(GuestProcess::SwitchableUffds fds,
                           h.guest->take_guest_switchable_uffds());
  return HybridTracker::create(HybridTracker::Guest{.pid = h.guest->pid(),
                                                    .arena_addr = h.guest->guest_arena_addr(),
                                                    .async_uffd = fds.async_fd,
                                                    .sync_uffd = fds.sync_fd},
                               h.arena.data(), h.arena.size(), m, tuning);
}

// One epoch of a hybrid test: the guest writes `pages`, then a pause collects.
Pfns hybrid_epoch(TestGuestHarness& h, DirtyTracker& t, const std::vector<uint64_t>& pages) {
  for (uint64_t p : pages) EXPECT_EQ(h.write(p * 4096 + 9, 1, static_cast<int>(p)), "ok");
  EXPECT_OK(h.guest->pause(std::chrono::seconds(30)));
  Pfns pfns;
  EXPECT_OK(t.collect_stopped(pfns));
  EXPECT_OK(t.finish_rearm());
  EXPECT_OK(h.guest->resume());
  return pfns;
}

Result<std::unique_ptr<DirtyTracker>> tracker_for(const std::string& kind, TestGuestHarness& h) {
  if (kind == "uffd-hybrid") {
    ROMULUS_ASSIGN_OR_RETURN(auto t, hybrid_for(h, measure_tracker_costs(), kRestlessHybrid));
    return std::unique_ptr<DirtyTracker>(std::move(t));
  }
  if (kind == "uffd") {
    return make_uffd_tracker(h.guest->pid(), h.guest->guest_arena_addr(), h.arena.data(),
                             h.arena.size());
  }
  if (kind == "uffd-sync") {
    ROMULUS_ASSIGN_OR_RETURN(int uffd, h.guest->take_guest_uffd());
    return make_uffd_sync_tracker(uffd, h.guest->guest_arena_addr(), h.arena.data(),
                                  h.arena.size());
  }
  return make_compare_tracker(h.arena.data(), h.arena.size());
}

// Empty if this kernel can run the tracker, else why not.
std::string unsupported_reason(const std::string& kind) {
  if (kind == "uffd") {
    Status probe = probe_uffd_wp_async();
    return probe.is_ok() ? "" : probe.to_string();
  }
  if (kind == "uffd-sync" || kind == "uffd-hybrid") {
    Measurements m = measure_tracker_costs();
    if (!m.uffd_ok) return m.uffd_reason;
    return m.uffd_sync_ok ? "" : m.uffd_sync_reason;
  }
  return "";
}

class DirtyTrackerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string why_not = unsupported_reason(GetParam());
    if (!why_not.empty()) GTEST_SKIP() << why_not;
    ASSERT_OK(h_.start(guest_tracker(GetParam()), kArenaBytes));
    auto t = tracker_for(GetParam(), h_);
    ASSERT_OK(t);
    tracker_ = std::move(t).value();
  }

  // Pauses the guest, collects, resumes.
  Pfns collect_paused() {
    Pfns pfns;
    EXPECT_OK(h_.guest->pause(std::chrono::seconds(30)));
    Status s = tracker_->collect(pfns);
    EXPECT_OK(s);
    EXPECT_TRUE(std::is_sorted(pfns.begin(), pfns.end()));
    EXPECT_OK(h_.guest->resume());
    return pfns;
  }

  TestGuestHarness h_;
  std::unique_ptr<DirtyTracker> tracker_;
};

TEST_P(DirtyTrackerTest, NameMatchesKind) { EXPECT_EQ(tracker_->name(), GetParam()); }

TEST_P(DirtyTrackerTest, NoWritesReportNothing) { EXPECT_EQ(collect_paused(), Pfns{}); }

TEST_P(DirtyTrackerTest, SingleByteWriteReportsExactlyItsPage) {
  ASSERT_EQ(h_.write(17 * 4096 + 100, 1, 0xAB), "ok");
  EXPECT_EQ(collect_paused(), Pfns{17});
}

TEST_P(DirtyTrackerTest, FirstAndLastByteOfPagesAreSeen) {
  // 0xC3: a value the guest SDK's segment header (page 0) does not hold there.
  ASSERT_EQ(h_.write(5 * 4096, 1, 0xC3), "ok");
  ASSERT_EQ(h_.write(9 * 4096 + 4095, 1, 0xC3), "ok");
  ASSERT_EQ(h_.write(0, 1, 0xC3), "ok");
  ASSERT_EQ(h_.write(kArenaBytes - 1, 1, 0xC3), "ok");
  EXPECT_EQ(collect_paused(), (Pfns{0, 5, 9, kArenaPages - 1}));
}

TEST_P(DirtyTrackerTest, WriteAcrossPageBoundaryReportsBothPages) {
  ASSERT_EQ(h_.write(30 * 4096 - 1, 2, 3), "ok");
  EXPECT_EQ(collect_paused(), (Pfns{29, 30}));
}

TEST_P(DirtyTrackerTest, WholeArenaWriteReportsEveryPage) {
  ASSERT_EQ(h_.write(0, kArenaBytes, 0x5A), "ok");
  Pfns all(kArenaPages);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(collect_paused(), all);
}

// The stopped-fraction budget counts the guest's write faults: one per page
// per epoch on its first write for the write-protect trackers (twice the
// same page in an epoch is one fault), none for compare.
TEST_P(DirtyTrackerTest, WriteFaultsCountEachFirstWriteToAPageInAnEpoch) {
  const uint64_t before = tracker_->write_faults();
  for (uint64_t p = 10; p < 20; ++p) ASSERT_EQ(h_.write(p * 4096 + 8, 8, 1), "ok");
  ASSERT_EQ(h_.write(12 * 4096 + 100, 8, 2), "ok");
  EXPECT_EQ(collect_paused().size(), 10u);
  const uint64_t expected = GetParam() == "compare" ? 0 : 10;
  EXPECT_EQ(tracker_->write_faults() - before, expected);
  // Re-armed: the same pages fault again in the next epoch.
  for (uint64_t p = 10; p < 13; ++p) ASSERT_EQ(h_.write(p * 4096, 8, 3), "ok");
  EXPECT_EQ(collect_paused().size(), 3u);
  EXPECT_EQ(tracker_->write_faults() - before, GetParam() == "compare" ? 0u : 13u);
}

TEST_P(DirtyTrackerTest, CollectRearmsTracking) {
  ASSERT_EQ(h_.write(3 * 4096, 64, 9), "ok");
  EXPECT_EQ(collect_paused(), Pfns{3});
  EXPECT_EQ(collect_paused(), Pfns{});
  ASSERT_EQ(h_.write(3 * 4096 + 8, 1, 10), "ok");
  EXPECT_EQ(collect_paused(), Pfns{3});
}

TEST_P(DirtyTrackerTest, CollectWorksWhileTheGuestRuns) {
  // Pre-copy rounds collect with the guest running.
  Pfns pfns;
  ASSERT_EQ(h_.write(40 * 4096, 1, 1), "ok");
  ASSERT_OK(tracker_->collect(pfns));
  EXPECT_EQ(pfns, Pfns{40});
  pfns.clear();
  ASSERT_EQ(h_.write(41 * 4096, 1, 1), "ok");  // between two collects, guest running
  ASSERT_OK(tracker_->collect(pfns));
  EXPECT_EQ(pfns, Pfns{41});
}

TEST_P(DirtyTrackerTest, NeverTouchedPagesWrittenAfterTrackingStartsAreReported) {
  // The arena memfd is fresh: page 200 was never populated before the tracker
  // existed (for uffd this is what the WP markers on unpopulated PTEs are for).
  ASSERT_EQ(h_.write(200 * 4096 + 7, 1, 1), "ok");
  ASSERT_EQ(h_.write(201 * 4096, 4096, 2), "ok");
  EXPECT_EQ(collect_paused(), (Pfns{200, 201}));
}

// Reclaim, or the guest's own madvise(), can drop a page's page-table entry
// between a write and the next collect. The write must still be reported, and
// tracking of that page must go on (issue 23: the asynchronous userfaultfd
// tracker read such a page as a hole, i.e. not written, and lost the write).
TEST_P(DirtyTrackerTest, AWrittenPageWhosePageTableEntryWasDroppedIsStillReported) {
  ASSERT_EQ(h_.write(17 * 4096 + 100, 1, 0xAB), "ok");
  ASSERT_EQ(h_.write(18 * 4096, 4096, 0xCD), "ok");
  ASSERT_EQ(h_.command(fmt::format("zap {} {}", 17 * 4096, 2 * 4096)), "ok");
  EXPECT_EQ(collect_paused(), (Pfns{17, 18}));
  EXPECT_EQ(h_.command(fmt::format("r {}", 17 * 4096 + 100)), "ok 171");  // the bytes stayed
  // Tracked on: nothing more until it is written again, then that write.
  EXPECT_EQ(collect_paused(), Pfns{});
  ASSERT_EQ(h_.write(17 * 4096, 1, 0x11), "ok");
  EXPECT_EQ(collect_paused(), Pfns{17});
}

TEST_P(DirtyTrackerTest, AProtectedPageWhosePageTableEntryWasDroppedIsTrackedOn) {
  ASSERT_EQ(h_.command(fmt::format("zap {} {}", 30 * 4096, 4096)), "ok");
  const Pfns after_zap = collect_paused();  // a tracker may report it once, conservatively
  EXPECT_TRUE(after_zap.empty() || after_zap == Pfns{30}) << ::testing::PrintToString(after_zap);
  ASSERT_EQ(h_.write(30 * 4096 + 5, 1, 0x42), "ok");
  EXPECT_EQ(collect_paused(), Pfns{30});
}

TEST_P(DirtyTrackerTest, PageSourceHoldsTheWrittenBytes) {
  ASSERT_EQ(h_.write(12 * 4096 + 10, 20, 0x77), "ok");
  ASSERT_OK(h_.guest->pause(std::chrono::seconds(30)));
  Pfns pfns;
  ASSERT_OK(tracker_->collect(pfns));
  ASSERT_EQ(pfns, Pfns{12});
  const uint8_t* page = tracker_->page_source(12);
  EXPECT_EQ(std::memcmp(page, h_.arena.data() + 12 * 4096, 4096), 0);
  EXPECT_EQ(page[10], 0x77);
  EXPECT_EQ(page[29], 0x77);
  EXPECT_EQ(page[30], 0);
  ASSERT_OK(h_.guest->resume());
}

// GoogleTest names allow no '-'.
std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param;
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
}

INSTANTIATE_TEST_SUITE_P(Trackers, DirtyTrackerTest,
                         ::testing::Values("uffd", "uffd-sync", "compare", "uffd-hybrid"),
                         param_name);

// The differential test with writes racing the pause: guest threads write random
// pages outside any Update, so each pause stops them at arbitrary instructions
// (uffd-sync: often blocked in a write-protect fault). Each epoch, with the guest
// stopped, (1) every page the compare tracker saw change is reported by the
// tracker under test, and (2) a replica built only from the reported pages equals
// the arena byte for byte: no write is ever lost. Collection goes as in the
// engine: collect_stopped(), copy, finish_rearm(), resume; every tenth epoch runs
// the guest longer, so that uffd-sync re-protects on its handler thread too.
class RacingWritesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RacingWritesTest, NoWriteIsLostOverThousandsOfEpochs) {
  const std::string why_not = unsupported_reason(GetParam());
  if (!why_not.empty()) GTEST_SKIP() << why_not;
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  constexpr int kEpochs = 2000;
  constexpr uint64_t kFirst = 8;  // the scribblers leave the segment header alone
  // uffd-sync needs more than 256 pages in some epochs to re-protect on its
  // handler thread; the async tracker, which sees every page the scribblers
  // touch, gets a smaller arena to keep the test short under sanitizers.
  const size_t kBytes = (GetParam() == "uffd" ? 256 : 512) * 4096;
  TestGuestHarness h;
  ASSERT_OK(h.start(guest_tracker(GetParam()), kBytes));
  auto t = tracker_for(GetParam(), h);
  ASSERT_OK(t);
  auto* hybrid = dynamic_cast<HybridTracker*>(t->get());
  ASSERT_OK(h.guest->pause(std::chrono::seconds(30)));
  auto shadow = make_compare_tracker(h.arena.data(), h.arena.size());
  ASSERT_OK(shadow);
  Pfns pfns;
  ASSERT_OK((*t)->collect(pfns));
  std::vector<uint8_t> replica(h.arena.data(), h.arena.data() + kBytes);
  ASSERT_OK(h.guest->resume());
  ASSERT_EQ(h.command("scribble 2 " + std::to_string(kFirst) + " " + std::to_string(seed)), "ok");

  uint64_t reported = 0, changed = 0, over = 0, most = 0;
  for (int epoch = 1; epoch <= kEpochs; ++epoch) {
    std::this_thread::sleep_for(std::chrono::microseconds(epoch % 10 == 0 ? 3000 : rng() % 400));
    ASSERT_OK(h.guest->pause(std::chrono::seconds(30)));
    if (hybrid && rng() % 4 == 0) {
      // Chunks moved either way in this pause, beside those their streaks move.
      for (int k = 0; k < 4; ++k) hybrid->request_move(rng() % hybrid->chunks());
    }
    Pfns got, truth;
    Status s = (*t)->collect_stopped(got);
    ASSERT_OK(s) << s.to_string() << " epoch " << epoch << " seed " << seed;
    for (uint64_t pfn : got) {
      std::memcpy(replica.data() + pfn * 4096, h.arena.data() + pfn * 4096, 4096);
    }
    s = (*t)->finish_rearm();
    ASSERT_OK(s) << s.to_string() << " epoch " << epoch << " seed " << seed;
    ASSERT_OK((*shadow)->collect(truth));
    ASSERT_TRUE(std::is_sorted(got.begin(), got.end()));
    ASSERT_TRUE(std::includes(got.begin(), got.end(), truth.begin(), truth.end()))
        << "a changed page was not reported; epoch " << epoch << " seed " << seed;
    ASSERT_EQ(std::memcmp(replica.data(), h.arena.data(), kBytes), 0)
        << "replica differs from the arena; epoch " << epoch << " seed " << seed;
    reported += got.size();
    changed += truth.size();
    over += got.size() - truth.size();
    most = std::max<uint64_t>(most, got.size());
    ASSERT_OK(h.guest->resume());
  }
  ASSERT_EQ(h.command("stopthreads"), "ok");
  std::printf(
      "%d epochs: %llu pages changed, %llu reported (%llu over-reported), at most %llu in "
      "one epoch\n",
      kEpochs, static_cast<unsigned long long>(changed), static_cast<unsigned long long>(reported),
      static_cast<unsigned long long>(over), static_cast<unsigned long long>(most));
  EXPECT_GT(changed, 0u);
  if (hybrid) {
    std::printf("%llu chunk moves\n", static_cast<unsigned long long>(hybrid->chunk_moves()));
    EXPECT_GT(hybrid->chunk_moves(), 100u);
  }
}

// Regression: with the guest running (pre-copy rounds), PAGEMAP_SCAN can end a
// call with a walk_end below regions it already reported, and the rescan from
// there reported pages again out of order; the backup then refused the round
// ("PFN 2002 after PFN 2047"), failing the initial sync of a busy guest on a
// loaded host. Every collect must give each page once, in increasing order.
TEST_P(RacingWritesTest, CollectWhileTheGuestWritesReportsEachPageOnceInOrder) {
  const std::string why_not = unsupported_reason(GetParam());
  if (!why_not.empty()) GTEST_SKIP() << why_not;
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  // Until this many collects found writes (the scribblers may start late on
  // a loaded machine), within a deadline that only a hang reaches.
  constexpr int kBusyCollects = 2000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  constexpr uint64_t kFirst = 8;
  TestGuestHarness h;
  ASSERT_OK(h.start(guest_tracker(GetParam()), 4096 * 4096));
  auto t = tracker_for(GetParam(), h);
  ASSERT_OK(t);
  ASSERT_EQ(h.command("scribble 2 " + std::to_string(kFirst) + " " + std::to_string(seed)), "ok");
  int busy = 0;
  for (int i = 1; busy < kBusyCollects && std::chrono::steady_clock::now() < deadline; ++i) {
    Pfns got;
    ASSERT_OK((*t)->collect(got)) << "collect " << i << " seed " << seed;
    for (size_t k = 1; k < got.size(); ++k) {
      ASSERT_LT(got[k - 1], got[k]) << "collect " << i << " seed " << seed;
    }
    if (!got.empty()) ++busy;
  }
  ASSERT_EQ(h.command("stopthreads"), "ok");
  EXPECT_GT(busy, 0) << "the guest never wrote while collects ran; test too weak";
}

INSTANTIATE_TEST_SUITE_P(Trackers, RacingWritesTest,
                         ::testing::Values("uffd", "uffd-sync", "uffd-hybrid"), param_name);

// Chunks move both ways on their streaks: each pause reports exactly the
// pages written since the last, whichever userfaultfd held their chunk, and
// a write after a move faults on the new one.
TEST(HybridTracker, ChunksMoveOnTheirStreaksAndEachPauseReportsExactlyItsWrites) {
  if (!unsupported_reason("uffd-hybrid").empty()) {
    GTEST_SKIP() << unsupported_reason("uffd-hybrid");
  }
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd-switchable", kArenaBytes));
  auto made = tracker_for("uffd-hybrid", h);
  ASSERT_OK(made);
  auto* t = static_cast<HybridTracker*>(made.value().get());
  EXPECT_EQ(t->async_chunks(), 0u);  // it starts all synchronous
  auto epoch = [&](const std::vector<uint64_t>& pages) { return hybrid_epoch(h, *t, pages); };
  // Chunk 1 (pages 16..31) busy for one pause: it goes asynchronous.
  EXPECT_EQ(epoch({17, 20}), (Pfns{17, 20}));
  EXPECT_EQ(t->async_chunks(), 1u);
  EXPECT_TRUE(t->protected_after_resume().empty());  // the moving pause copied everything
  const uint64_t moves = t->chunk_moves();
  // Written on the asynchronous userfaultfd, beside a synchronous chunk.
  EXPECT_EQ(epoch({17, 31, 32}), (Pfns{17, 31, 32}));
  EXPECT_EQ(t->async_chunks(), 2u);  // chunk 2 busy too
  EXPECT_EQ(epoch({}), Pfns{});
  EXPECT_EQ(epoch({}), Pfns{});  // two clean pauses: both back to synchronous
  EXPECT_EQ(t->async_chunks(), 0u);
  EXPECT_EQ(t->chunk_moves(), moves + 3);
  const uint64_t faults = t->write_faults();
  EXPECT_EQ(epoch({18, 33}), (Pfns{18, 33}));  // faults on the synchronous uffd again
  EXPECT_GE(t->write_faults(), faults + 2);
  // Destroyed with chunks on both, the guest writes on.
  EXPECT_EQ(t->async_chunks(), 2u);
  made.value().reset();
  EXPECT_EQ(h.write(7 * 4096, 1, 1), "ok");
  EXPECT_EQ(h.write(18 * 4096, 1, 1), "ok");
}

// The stopped-fraction budget charges the faults before each pause at the
// cost of the userfaultfd that took them.
TEST(HybridTracker, EachFaultIsChargedAtItsUserfaultfdsCost) {
  if (!unsupported_reason("uffd-hybrid").empty()) {
    GTEST_SKIP() << unsupported_reason("uffd-hybrid");
  }
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd-switchable", kArenaBytes));
  Measurements m;
  m.async_fault_us = 1;
  m.sync_fault_us = 10;
  auto t = hybrid_for(h, m, kRestlessHybrid);
  ASSERT_OK(t);
  auto epoch = [&](const std::vector<uint64_t>& pages) { return hybrid_epoch(h, **t, pages); };
  EXPECT_EQ(epoch({17}), Pfns{17});  // a synchronous fault; chunk 1 goes asynchronous
  EXPECT_EQ((*t)->write_fault_us(), 10.0);
  EXPECT_EQ(epoch({17, 18}), (Pfns{17, 18}));  // two asynchronous ones
  EXPECT_EQ((*t)->write_fault_us(), 1.0);
  EXPECT_EQ(epoch({17, 40}), (Pfns{17, 40}));  // one of each
  EXPECT_EQ((*t)->write_fault_us(), 5.5);
}

// With the default streaks (on 16-page chunks): a chunk whose hot page is
// written every pause goes sticky on the synchronous userfaultfd after two
// faults and stays there (it costs no fault and no scan); a chunk whose writes
// move to a new page every pause faults every pause and goes asynchronous.
TEST(HybridTracker, StickyHotPagesKeepTheirChunkSynchronousWanderingWritesMoveIt) {
  if (!unsupported_reason("uffd-hybrid").empty()) {
    GTEST_SKIP() << unsupported_reason("uffd-hybrid");
  }
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd-switchable", kArenaBytes));
  HybridTuning tuning;
  tuning.chunk_pages = 16;
  ASSERT_EQ(tuning.hot_pauses, 3u) << "the test follows the default streak";
  auto t = hybrid_for(h, measure_tracker_costs(), tuning);
  ASSERT_OK(t);
  auto epoch = [&](const std::vector<uint64_t>& pages) { return hybrid_epoch(h, **t, pages); };
  // Page 20 (chunk 1) every pause, for longer than a sticky term (16 pauses):
  // reported every time, its chunk never moved.
  for (int i = 0; i < 40; ++i) {
    const Pfns got = epoch({20});
    EXPECT_NE(std::find(got.begin(), got.end(), 20u), got.end()) << "pause " << i;
    EXPECT_EQ((*t)->async_chunks(), 0u) << "pause " << i;
  }
  EXPECT_EQ((*t)->chunk_moves(), 0u);
  // Chunk 2 (pages 32..47): a new page every pause (page 20, sticky, is
  // still reported beside them). The third pause that faulted in it moves it.
  EXPECT_EQ(epoch({33}), (Pfns{20, 33}));
  EXPECT_EQ(epoch({34}), (Pfns{20, 34}));
  EXPECT_EQ((*t)->async_chunks(), 0u);
  EXPECT_EQ(epoch({35}), (Pfns{20, 35}));
  EXPECT_EQ((*t)->async_chunks(), 1u);
  EXPECT_EQ(epoch({36, 37}), (Pfns{20, 36, 37}));  // 36 and 37 found by the scan now
}

// Without a baseline (a VM's takeover) the shadow starts zero: the first
// collect() reports exactly the pages that are not zero, after which only
// changes are reported, as with a baseline.
TEST(CompareTracker, WithoutABaselineTheFirstCollectReportsThePagesThatAreNotZero) {
  std::vector<uint8_t> arena(16 * 4096, 0);
  arena[3 * 4096 + 100] = 1;
  arena[9 * 4096] = 2;
  auto t = make_compare_tracker(arena.data(), arena.size(), /*baseline=*/false);
  ASSERT_OK(t);
  Pfns first;
  ASSERT_OK((*t)->collect(first));
  EXPECT_EQ(first, (Pfns{3, 9}));
  Pfns none;
  ASSERT_OK((*t)->collect(none));
  EXPECT_EQ(none, Pfns{});
  arena[5 * 4096 + 7] = 3;
  Pfns next;
  ASSERT_OK((*t)->collect(next));
  EXPECT_EQ(next, (Pfns{5}));
  EXPECT_EQ((*t)->page_source(5)[7], 3);
}

TEST(UffdSyncTracker, DestroyingTheTrackerLetsTheGuestWriteOn) {
  if (!unsupported_reason("uffd-sync").empty()) GTEST_SKIP();
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd-sync", kArenaBytes));
  auto t = tracker_for("uffd-sync", h);
  ASSERT_OK(t);
  ASSERT_EQ(h.write(20 * 4096, 1, 1), "ok");
  t.value().reset();
  ASSERT_EQ(h.write(21 * 4096, 1, 1), "ok");  // would block forever if still protected
  ASSERT_EQ(h.write(20 * 4096, 1, 2), "ok");
}

TEST(UffdSyncTracker, PagesWrittenInConsecutiveEpochsGoStickyThenAreDemoted) {
  if (!unsupported_reason("uffd-sync").empty()) GTEST_SKIP();
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd-sync", kArenaBytes));
  auto made = tracker_for("uffd-sync", h);
  ASSERT_OK(made);
  auto* t = static_cast<UffdSyncTracker*>(made.value().get());
  auto epoch = [&](int page) {
    if (page >= 0) {
      EXPECT_EQ(h.write(static_cast<uint64_t>(page) * 4096, 1, 1 + page % 7), "ok");
    }
    Pfns pfns;
    EXPECT_OK(h.guest->pause(std::chrono::seconds(30)));
    EXPECT_OK(t->collect_stopped(pfns));
    EXPECT_OK(t->finish_rearm());
    EXPECT_OK(h.guest->resume());
    return pfns;
  };
  EXPECT_EQ(epoch(30), Pfns{30});
  EXPECT_EQ(epoch(30), Pfns{30});  // logged twice in a row: now sticky
  EXPECT_EQ(t->sticky_pages(), 1u);
  const uint64_t faults = t->faults();
  EXPECT_EQ(epoch(30), Pfns{30});  // written without a fault
  EXPECT_EQ(t->faults(), faults);
  EXPECT_EQ(epoch(40), (Pfns{30, 40}));  // reported while sticky, written or not
  for (int i = 0; i < 14; ++i) epoch(-1);
  EXPECT_EQ(t->sticky_pages(), 0u);  // 16 epochs later: demoted (reported that once more)
  EXPECT_EQ(epoch(-1), Pfns{});
  EXPECT_EQ(epoch(30), Pfns{30});  // protected again: the write faults
  EXPECT_EQ(t->faults(), faults + 2);
}

TEST(UffdSyncTracker, TakingTheUffdOfAnAsyncGuestIsRefused) {
  if (!probe_uffd_wp_async().is_ok()) GTEST_SKIP();
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd", kArenaBytes));
  EXPECT_FALSE(h.guest->take_guest_uffd().is_ok());
}

TEST(UffdTracker, ProbeSucceedsOnThisKernel) {
  Status s = probe_uffd_wp_async();
  EXPECT_OK(s);
}

TEST(UffdTracker, GuestReportsArenaAddressAndUffdFeatures) {
  if (!probe_uffd_wp_async().is_ok()) GTEST_SKIP();
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd", kArenaBytes));
  const guest::ControlPage* cp = h.guest->control();
  EXPECT_EQ(cp->tracker_state.load(), static_cast<uint32_t>(guest::TrackerState::kUffd));
  EXPECT_NE(h.guest->guest_arena_addr(), 0u);
  EXPECT_EQ(cp->arena_size.load(), kArenaBytes);
  EXPECT_EQ(cp->guest_pid.load(), static_cast<uint32_t>(h.guest->pid()));
  EXPECT_NE(cp->uffd_features.load() & UFFD_FEATURE_WP_ASYNC, 0u);
  std::printf("uffd features the kernel returned: 0x%llx\n",
              static_cast<unsigned long long>(cp->uffd_features.load()));
}

TEST(UffdTracker, AgreesWithCompareTrackerOnRandomWrites) {
  if (!probe_uffd_wp_async().is_ok()) GTEST_SKIP();
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd", kArenaBytes));
  auto uffd = make_uffd_tracker(h.guest->pid(), h.guest->guest_arena_addr(), h.arena.data(),
                                h.arena.size());
  auto compare = make_compare_tracker(h.arena.data(), h.arena.size());
  ASSERT_OK(uffd);
  ASSERT_OK(compare);
  for (unsigned round = 1; round <= 20; ++round) {
    // Every write in round r stores value r, which no earlier round stored, so each
    // written page really changes (compare only sees changes; uffd sees writes).
    // Pages 0..3 are left alone: the segment header there holds arbitrary bytes.
    int writes = static_cast<int>(rng() % 20);
    for (int i = 0; i < writes; ++i) {
      uint64_t off = 4 * 4096 + rng() % (kArenaBytes - 4 * 4096);
      uint64_t len = 1 + rng() % std::min<uint64_t>(3 * 4096, kArenaBytes - off);
      ASSERT_EQ(h.write(off, len, round), "ok") << "seed " << seed;
    }
    ASSERT_OK(h.guest->pause(std::chrono::seconds(30)));
    Pfns a, b;
    ASSERT_OK((*uffd)->collect(a));
    ASSERT_OK((*compare)->collect(b));
    EXPECT_EQ(a, b) << "round " << round << " seed " << seed;
    ASSERT_OK(h.guest->resume());
  }
}

TEST(UffdTracker, TrackingSurvivesManyEpochs) {
  if (!probe_uffd_wp_async().is_ok()) GTEST_SKIP();
  TestGuestHarness h;
  ASSERT_OK(h.start("uffd", kArenaBytes));
  auto t = make_uffd_tracker(h.guest->pid(), h.guest->guest_arena_addr(), h.arena.data(),
                             h.arena.size());
  ASSERT_OK(t);
  for (uint64_t epoch = 0; epoch < 100; ++epoch) {
    uint64_t pfn = (epoch * 37) % kArenaPages;
    ASSERT_EQ(h.write(pfn * 4096 + epoch % 4096, 1, 1 + epoch % 200), "ok");
    ASSERT_OK(h.guest->pause(std::chrono::seconds(30)));
    Pfns pfns;
    ASSERT_OK((*t)->collect(pfns));
    EXPECT_EQ(pfns, Pfns{pfn}) << "epoch " << epoch;
    ASSERT_OK(h.guest->resume());
  }
}

TEST(CompareTracker, IgnoresWritesThatLeaveBytesUnchanged) {
  TestGuestHarness h;
  ASSERT_OK(h.start("compare", kArenaBytes));
  auto t = make_compare_tracker(h.arena.data(), h.arena.size());
  ASSERT_OK(t);
  ASSERT_EQ(h.write(4 * 4096, 100, 0), "ok");  // zeros over zeros
  Pfns pfns;
  ASSERT_OK((*t)->collect(pfns));
  EXPECT_EQ(pfns, Pfns{});
}

TEST(CompareTracker, RejectsUnalignedSize) {
  std::vector<uint8_t> buf(5000);
  EXPECT_FALSE(make_compare_tracker(buf.data(), buf.size()).is_ok());
}

}  // namespace
}  // namespace romulus::checkpoint::dirty_tracker_test
