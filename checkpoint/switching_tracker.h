// SwitchingTracker: `--tracker auto` re-decided at run time, between the
// asynchronous (uffd) and synchronous (uffd-sync) userfaultfd trackers, from
// what the running guest dirties.
//
// At start, auto has to guess the dirty pages per epoch (tracker_choice.h);
// which tracker is cheaper depends on exactly that: uffd's pause scans the
// whole arena but its faults are the kernel's, uffd-sync's pause follows the
// dirty set but each first write is a round trip through the supervisor. So
// one client sending one write at a time wants uffd-sync, and 128 clients
// writing random keys want uffd, on the same arena.
//
// How: the guest was started "uffd-switchable" (guest/control_page.h): it
// armed asynchronous write-protect over its arena on one userfaultfd and
// created a second, synchronous one registered over nothing. The supervisor
// holds copies of both (pidfd_getfd). In a pause (the guest is stopped), after
// the current tracker's collect, a switch ends the current tracker (uffd-sync
// lifts its protections and stops its handler) and moves the arena's
// registration to the other userfaultfd, write-protecting every page there
// (linux_abi::move_write_protect); then the new tracker starts with nothing
// dirty. What the guest wrote before the switch was just reported, and its
// pages are copied in this pause (copy-before-write is skipped for it), so
// nothing is lost at the seam. A guest write blocked on the old userfaultfd
// when the guest stopped is woken by the unregistration and, after resume,
// faults on the new one.
//
// When: every window of at least kWindowCheckpoints checkpoints and
// kWindow, the tracker models both trackers' cost per epoch with the same
// formulas and rule as the start-up choice (pick_uffd_tracker), fed with
// what it measured in the window instead of guesses: the dirty pages per
// checkpoint, uffd's scan time (its fastest collect), uffd-sync's faults and
// re-protected pages per checkpoint. The other tracker must win even with its
// costs raised by kSwitchMargin, and no switch follows another within
// kMinDwell, so a workload near the boundary does not flap (the first window
// may switch at once: the start-up choice was a guess).
//
// Threads: like every tracker, one thread (the epoch engine); name() and
// switches() from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/tracker_choice.h"
#include "checkpoint/tracker_kind.h"

namespace romulus::checkpoint {

// The window and the margins (see above).
inline constexpr uint64_t kWindowCheckpoints = 32;
inline constexpr std::chrono::milliseconds kWindow{250};
inline constexpr double kSwitchMargin = 1.3;
inline constexpr std::chrono::seconds kMinDwell{1};

// What a window measured, per checkpoint, and the decision from it.
struct SwitchWindow {
  TrackerKind current = TrackerKind::kUffd;  // kUffd or kUffdSync
  uint64_t checkpoints = 0;
  uint64_t pages = 0;          // reported by the collects
  uint64_t faults = 0;         // write faults the current tracker counted
  uint64_t reprotected = 0;    // uffd-sync: pages it write-protected again
  double min_collect_us = -1;  // uffd: its fastest collect (the scan), -1 if none
};
struct SwitchDecision {
  TrackerKind kind = TrackerKind::kUffd;  // what to run next (== current: stay)
  UffdCosts costs;                        // the modelled costs, unbiased
  std::string explanation;                // one line, for a switch
};
// Pure: the modelled costs of both trackers from the window (uffd-sync's
// faults and re-protections counted as one per page when they were not
// measured; uffd's scan from the measurements when it was not), and the
// rule with the margin against leaving the current tracker.
SwitchDecision decide_switch(const SwitchWindow& w, const Measurements& m, uint64_t arena_bytes);

class SwitchingTracker final : public DirtyTracker {
 public:
  struct Guest {
    pid_t pid = -1;
    uint64_t arena_addr = 0;  // the arena's address in the guest
    int async_uffd = -1;      // taken over: closed by the tracker, also on error
    int sync_uffd = -1;       // the same
  };
  // Starts as `initial` (kUffd or kUffdSync). Starting as uffd-sync moves the
  // arena to the synchronous userfaultfd at once, while the guest may be
  // running: writes made during the move are not reported, as with any
  // tracker's creation.
  static Result<std::unique_ptr<SwitchingTracker>> create(Guest g, const uint8_t* arena_mapping,
                                                          size_t arena_bytes, TrackerKind initial,
                                                          const Measurements& m,
                                                          std::function<void(std::string)> log);
  ~SwitchingTracker() override;

  std::string_view name() const override {
    return tracker_kind_name(kind_.load(std::memory_order_relaxed));
  }
  Status collect(std::vector<uint64_t>& pfns) override;
  // The current tracker's collect, then, when a window ends, the decision,
  // and the switch if it says so.
  Status collect_stopped(std::vector<uint64_t>& pfns) override;
  Status finish_rearm() override;
  const uint8_t* page_source(uint64_t pfn) const override { return arena_ + pfn * 4096; }
  bool pages_stable_until_next_collect() const override { return false; }
  uint64_t write_faults() const override;
  std::span<const uint64_t> protected_after_resume() const override;
  void begin_copy_before_write(std::span<const uint64_t> pfns,
                               std::span<uint8_t* const> dst) override;
  uint64_t finish_copy_before_write() override;
  // What one write fault of the current tracker costs the guest (µs, measured
  // at start), for the engine's stopped-fraction budget.
  std::optional<double> write_fault_us() const override;

  TrackerKind kind() const { return kind_.load(std::memory_order_relaxed); }
  uint64_t switches() const { return switches_.load(std::memory_order_relaxed); }
  // Tests: switch to `kind` at the next collect_stopped(), whatever the
  // window says (kMinDwell does not apply).
  void request_switch(TrackerKind kind) { requested_ = kind; }
  // Fault injection for end-to-end tests: with ROMULUS_TEST_TRACKER_SWITCH_EVERY=N
  // in the environment (N > 0), a switch every N pauses besides the windows'
  // decisions (tests/e2e/test_kill.py kills primaries in the middle of them).
  static constexpr const char* kEnvSwitchEvery = "ROMULUS_TEST_TRACKER_SWITCH_EVERY";

 private:
  SwitchingTracker(Guest g, const uint8_t* arena, size_t bytes, const Measurements& m,
                   std::function<void(std::string)> log);
  // Ends the current tracker and starts `to` on the other userfaultfd.
  Status switch_to(TrackerKind to);
  Status start(TrackerKind kind, bool move);
  // A new window from `now`, counting the current tracker's faults from here.
  void start_window(std::chrono::steady_clock::time_point now);

  Guest guest_;
  const uint8_t* arena_;
  size_t bytes_;
  Measurements m_;
  std::function<void(std::string)> log_;
  // Null only after a switch failed (broken_ says why): every call then
  // fails with that, and the engine ends the protection.
  std::unique_ptr<DirtyTracker> current_;
  Status broken_;
  std::atomic<TrackerKind> kind_{TrackerKind::kUffd};
  std::atomic<uint64_t> switches_{0};
  uint64_t faults_before_ = 0;  // write faults of the trackers before current_
  bool switched_ = false;       // in this pause: copy everything in it
  std::optional<TrackerKind> requested_;
  uint64_t switch_every_ = 0;  // kEnvSwitchEvery, 0: off
  uint64_t pauses_ = 0;
  SwitchWindow window_;
  std::chrono::steady_clock::time_point window_start_, last_switch_;
  uint64_t faults_at_window_start_ = 0;
};

}  // namespace romulus::checkpoint
