// The --tracker decision rule (checkpoint/tracker_choice.h): pure tests with given
// numbers, then the measurement and the factory against this kernel and a real
// guest (no assertion on any measured value beyond "was measured").
#include "checkpoint/tracker_choice.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "checkpoint/uffd_tracker.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_guest.h"

namespace romulus::checkpoint::tracker_choice_test {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

// Numbers of the kind this VM class showed (docs/performance.md).
Measurements typical() {
  Measurements m;
  m.uffd_ok = true;
  m.uffd_sync_ok = true;
  m.async_fault_us = 1.0;
  m.sync_fault_us = 15.0;
  m.scan_us_per_gib = 900.0;
  m.reprotect_us_per_page = 1.0;
  m.compare_us_per_gib = 100'000.0;
  m.copy_us_per_page = 0.5;
  return m;
}

TrackerDecision decide(TrackerKind requested, uint64_t arena_bytes, uint64_t dirty,
                       const Measurements& m) {
  auto d = choose_tracker(requested, ArenaFacts{arena_bytes, dirty}, m);
  EXPECT_OK(d);
  return d.is_ok() ? d.value() : TrackerDecision{};
}

TEST(ChooseTracker, IdleLargeArenaTakesUffdSync) {
  EXPECT_EQ(decide(TrackerKind::kAuto, 16 * kGiB, 100, typical()).kind, TrackerKind::kUffdSync);
}

TEST(ChooseTracker, SmallArenaTakesAsyncUffd) {
  EXPECT_EQ(decide(TrackerKind::kAuto, 64 * kMiB, 100, typical()).kind, TrackerKind::kUffd);
}

TEST(ChooseTracker, BusyGuestTakesAsyncUffdEvenOnALargeArena) {
  // 10,000 first writes at 15 us cost more than a 16 GiB scan.
  EXPECT_EQ(decide(TrackerKind::kAuto, 16 * kGiB, 10'000, typical()).kind, TrackerKind::kUffd);
}

TEST(ChooseTracker, CheapFaultsMoveTheBreakEven) {
  // The same arena and dirty rate; only the measured sync fault cost differs.
  // (Slow enough that even the pause rule below does not pay for it.)
  Measurements slow = typical(), fast = typical();
  slow.sync_fault_us = 60.0;
  fast.sync_fault_us = 2.0;
  EXPECT_EQ(decide(TrackerKind::kAuto, 2 * kGiB, 100, slow).kind, TrackerKind::kUffd);
  EXPECT_EQ(decide(TrackerKind::kAuto, 2 * kGiB, 100, fast).kind, TrackerKind::kUffdSync);
}

TEST(ChooseTracker, ALargeArenasPauseFollowsTheDirtySetThoughAsyncIsCheaper) {
  // 2 GiB, 100 pages: uffd costs the guest 1,950 us per epoch, 1,850 of them in
  // the pause (the scan); uffd-sync 2,650 us, of which 150 in the pause.
  Measurements m = typical();
  m.sync_fault_us = 25.0;
  const auto d = decide(TrackerKind::kAuto, 2 * kGiB, 100, m);
  EXPECT_GT(d.uffd_sync_us, d.uffd_us);
  EXPECT_DOUBLE_EQ(d.uffd_pause_us, 1'850);
  EXPECT_DOUBLE_EQ(d.uffd_sync_pause_us, 150);
  EXPECT_EQ(d.kind, TrackerKind::kUffdSync);
  EXPECT_TRUE(d.for_the_pause);
  EXPECT_NE(d.explanation.find("uffd-sync for its pause: modelled pause 150 us against uffd's "
                               "1850 us"),
            std::string::npos)
      << d.explanation;
}

TEST(ChooseTracker, ThePauseRuleCostsTheGuestAtMostTwiceAsyncsTime) {
  Measurements m = typical();
  m.sync_fault_us = 45.0;  // uffd-sync: 4,650 us against 1,950: more than twice
  const auto d = decide(TrackerKind::kAuto, 2 * kGiB, 100, m);
  EXPECT_EQ(d.kind, TrackerKind::kUffd);
  EXPECT_FALSE(d.for_the_pause);
}

TEST(ChooseTracker, AnEagerEpochIsExpectedToBeSmallerThanAnInterval) {
  EXPECT_LT(expected_dirty_pages(CommitMode::kEager), expected_dirty_pages(CommitMode::kInterval));
  // What that changes: at 2 GiB with this VM's costs of 2026-12-06 (async
  // faults 14.8 us, sync 20.9 us, re-protect 17.6 us/page, scan 532 us/GiB),
  // an interval's 100 pages take uffd, an eager epoch's 25 uffd-sync.
  Measurements m = typical();
  m.async_fault_us = 14.8;
  m.sync_fault_us = 20.9;
  m.reprotect_us_per_page = 17.6;
  m.scan_us_per_gib = 532;
  m.copy_us_per_page = 0.21;
  EXPECT_EQ(
      decide(TrackerKind::kAuto, 2 * kGiB, expected_dirty_pages(CommitMode::kInterval), m).kind,
      TrackerKind::kUffd);
  EXPECT_EQ(decide(TrackerKind::kAuto, 2 * kGiB, expected_dirty_pages(CommitMode::kEager), m).kind,
            TrackerKind::kUffdSync);
  // And a small arena keeps uffd under either.
  EXPECT_EQ(
      decide(TrackerKind::kAuto, 256 * kMiB, expected_dirty_pages(CommitMode::kEager), m).kind,
      TrackerKind::kUffd);
}

TEST(ChooseTracker, ASmallArenasShortScanKeepsAsyncUffd) {
  // 256 MiB: uffd's pause is 275 us, within the budget.
  Measurements m = typical();
  m.sync_fault_us = 25.0;
  const auto d = decide(TrackerKind::kAuto, 256 * kMiB, 100, m);
  EXPECT_EQ(d.kind, TrackerKind::kUffd);
  EXPECT_FALSE(d.for_the_pause);
}

TEST(ChooseTracker, FastCompareWinsWhenWriteProtectIsDear) {
  Measurements m = typical();
  m.compare_us_per_gib = 50.0;
  EXPECT_EQ(decide(TrackerKind::kAuto, 64 * kMiB, 1000, m).kind, TrackerKind::kCompare);
}

TEST(ChooseTracker, OnATakeoverCompareIsLeftOutWhileAUffdTrackerWorks) {
  Measurements m = typical();
  m.compare_us_per_gib = 50.0;  // compare would win the model
  ArenaFacts takeover{64 * kMiB, 1000};
  takeover.takeover = true;
  auto d = choose_tracker(TrackerKind::kAuto, takeover, m);
  ASSERT_OK(d);
  EXPECT_NE(d->kind, TrackerKind::kCompare);
  EXPECT_NE(d->explanation.find("compare left out on a takeover"), std::string::npos);
  // Only compare works: it is still chosen.
  m.uffd_ok = m.uffd_sync_ok = false;
  d = choose_tracker(TrackerKind::kAuto, takeover, m);
  ASSERT_OK(d);
  EXPECT_EQ(d->kind, TrackerKind::kCompare);
  // Asked for by name: honoured.
  m = typical();
  d = choose_tracker(TrackerKind::kCompare, takeover, m);
  ASSERT_OK(d);
  EXPECT_EQ(d->kind, TrackerKind::kCompare);
}

TEST(ChooseTracker, WithoutUffdAutoFallsBackToCompare) {
  Measurements m = typical();
  m.uffd_ok = m.uffd_sync_ok = false;
  m.uffd_reason = m.uffd_sync_reason = "kernel lacks userfaultfd (ENOSYS)";
  TrackerDecision d = decide(TrackerKind::kAuto, 16 * kGiB, 100, m);
  EXPECT_EQ(d.kind, TrackerKind::kCompare);
  EXPECT_LT(d.uffd_us, 0);
  EXPECT_NE(d.explanation.find("ENOSYS"), std::string::npos) << d.explanation;
}

TEST(ChooseTracker, ExplicitRequestIsHonouredWhateverTheCosts) {
  EXPECT_EQ(decide(TrackerKind::kCompare, 16 * kGiB, 100, typical()).kind, TrackerKind::kCompare);
  EXPECT_EQ(decide(TrackerKind::kUffd, 16 * kGiB, 100, typical()).kind, TrackerKind::kUffd);
  EXPECT_EQ(decide(TrackerKind::kUffdSync, 64 * kMiB, 10'000, typical()).kind,
            TrackerKind::kUffdSync);
}

TEST(ChooseTracker, ExplicitRequestTheKernelCannotDoIsRefusedWithTheReason) {
  Measurements m = typical();
  m.uffd_sync_ok = false;
  m.uffd_sync_reason = "pidfd_getfd not permitted";
  auto d = choose_tracker(TrackerKind::kUffdSync, ArenaFacts{kGiB, 100}, m);
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(d.status().message().find("pidfd_getfd not permitted"), std::string::npos);
  EXPECT_NE(d.status().message().find("--tracker compare"), std::string::npos);
}

TEST(ChooseTracker, ExplanationCarriesTheNumbers) {
  TrackerDecision d = decide(TrackerKind::kAuto, 16 * kGiB, 100, typical());
  EXPECT_NE(d.explanation.find("dirty tracker uffd-sync (auto)"), std::string::npos);
  EXPECT_NE(d.explanation.find("16384 MiB"), std::string::npos);
  EXPECT_NE(d.explanation.find("900 us/GiB"), std::string::npos);
  EXPECT_NE(d.explanation.find("15.00 us sync"), std::string::npos);
  // The break-even: 16 GiB * 900 us / (15 + 1 - 1) us = 960 pages.
  EXPECT_NE(d.explanation.find("below 960 dirty pages"), std::string::npos) << d.explanation;
}

TEST(ChooseTracker, EmptyArenaIsAnError) {
  EXPECT_FALSE(choose_tracker(TrackerKind::kAuto, ArenaFacts{0, 100}, typical()).is_ok());
}

TEST(ChooseTracker, GuestTrackerNamesWhatTheGuestArms) {
  TrackerDecision d;
  d.kind = TrackerKind::kUffdSync;
  EXPECT_STREQ(d.guest_tracker(), "uffd-sync");
  d.kind = TrackerKind::kUffd;
  EXPECT_STREQ(d.guest_tracker(), "uffd");
  d.kind = TrackerKind::kCompare;
  EXPECT_STREQ(d.guest_tracker(), "compare");
  d.kind = TrackerKind::kUffdHybrid;
  EXPECT_STREQ(d.guest_tracker(), "uffd-switchable");
}

TEST(ChooseTracker, AutoTakesTheHybridOnlyForAGuestThatCanHoldBothUffds) {
  ArenaFacts facts{256 * kMiB, 25};
  EXPECT_NE(choose_tracker(TrackerKind::kAuto, facts, typical())->kind, TrackerKind::kUffdHybrid);
  facts.two_uffds = true;
  for (uint64_t bytes : {kMiB, 256 * kMiB, 16 * kGiB}) {
    facts.arena_bytes = bytes;
    auto d = choose_tracker(TrackerKind::kAuto, facts, typical());
    ASSERT_OK(d);
    EXPECT_EQ(d->kind, TrackerKind::kUffdHybrid) << bytes;
    EXPECT_STREQ(d->guest_tracker(), "uffd-switchable");
    EXPECT_NE(d->explanation.find("chunk by chunk"), std::string::npos) << d->explanation;
  }
  // An explicit tracker stays that tracker; without uffd-sync there is no hybrid.
  EXPECT_EQ(choose_tracker(TrackerKind::kUffd, facts, typical())->kind, TrackerKind::kUffd);
  Measurements no_sync = typical();
  no_sync.uffd_sync_ok = false;
  no_sync.uffd_sync_reason = "test";
  EXPECT_EQ(choose_tracker(TrackerKind::kAuto, facts, no_sync)->kind, TrackerKind::kUffd);
}

TEST(ChooseTracker, AnExplicitHybridNeedsBothUffdsAndAGuestThatHoldsThem) {
  ArenaFacts facts{256 * kMiB, 25};
  facts.two_uffds = true;
  auto d = choose_tracker(TrackerKind::kUffdHybrid, facts, typical());
  ASSERT_OK(d);
  EXPECT_EQ(d->kind, TrackerKind::kUffdHybrid);
  facts.two_uffds = false;  // a VM
  auto vm = choose_tracker(TrackerKind::kUffdHybrid, facts, typical());
  EXPECT_EQ(vm.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(vm.status().message().find("two userfaultfds"), std::string::npos)
      << vm.status().to_string();
  Measurements no_sync = typical();
  no_sync.uffd_sync_ok = false;
  no_sync.uffd_sync_reason = "no synchronous write-protect here";
  facts.two_uffds = true;
  auto refused = choose_tracker(TrackerKind::kUffdHybrid, facts, no_sync);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(refused.status().message().find("no synchronous write-protect here"), std::string::npos)
      << refused.status().to_string();
}

TEST(MeasureTrackerCosts, MeasuresEverythingThisKernelOffers) {
  Measurements m = measure_tracker_costs();
  EXPECT_GT(m.compare_us_per_gib, 0);
  EXPECT_GT(m.copy_us_per_page, 0);
  if (probe_uffd_wp_async().is_ok()) {
    EXPECT_TRUE(m.uffd_ok) << m.uffd_reason;
    EXPECT_TRUE(m.uffd_sync_ok) << m.uffd_sync_reason;
    EXPECT_GT(m.async_fault_us, 0);
    EXPECT_GT(m.sync_fault_us, 0);
    EXPECT_GT(m.scan_us_per_gib, 0);
    EXPECT_GT(m.reprotect_us_per_page, 0);
  }
  auto d = choose_tracker(TrackerKind::kAuto, ArenaFacts{16 * kGiB}, m);
  ASSERT_OK(d);
  std::printf("%s\n", d->explanation.c_str());
}

TEST(MakeTracker, BuildsTheDecidedTrackerForARealGuest) {
  Measurements m = measure_tracker_costs();
  for (TrackerKind kind : {TrackerKind::kUffd, TrackerKind::kUffdSync, TrackerKind::kCompare,
                           TrackerKind::kUffdHybrid, TrackerKind::kAuto}) {
    // auto: the hybrid, when this kernel has both userfaultfd trackers.
    auto d = choose_tracker(kind, ArenaFacts{.arena_bytes = kMiB, .two_uffds = true}, m);
    if (!d.is_ok()) continue;  // this kernel cannot: the refusal is tested above
    if (kind == TrackerKind::kAuto) kind = d->kind;
    romulus::testing::TestGuestHarness h;
    ASSERT_OK(h.start(d->guest_tracker(), kMiB));
    auto t = make_tracker(*d, *h.guest, h.arena.data(), h.arena.size(), m);
    ASSERT_OK(t);
    EXPECT_EQ((*t)->name(), tracker_kind_name(kind));
    ASSERT_EQ(h.write(9 * 4096, 1, 7), "ok");
    ASSERT_OK(h.guest->pause(std::chrono::seconds(30)));
    std::vector<uint64_t> pfns;
    ASSERT_OK((*t)->collect(pfns));
    EXPECT_EQ(pfns, std::vector<uint64_t>{9}) << tracker_kind_name(kind);
    ASSERT_OK(h.guest->resume());
  }
}

}  // namespace
}  // namespace romulus::checkpoint::tracker_choice_test
