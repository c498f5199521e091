#include "checkpoint/switching_tracker.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "checkpoint/uffd_sync_tracker.h"
#include "checkpoint/uffd_tracker.h"
#include "guest/linux_abi.h"

namespace romulus::checkpoint {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace

SwitchDecision decide_switch(const SwitchWindow& w, const Measurements& m, uint64_t arena_bytes) {
  SwitchDecision d;
  d.kind = w.current;
  if (w.checkpoints == 0) return d;
  const double n = static_cast<double>(w.checkpoints);
  const double pages = static_cast<double>(w.pages) / n;
  const bool in_sync = w.current == TrackerKind::kUffdSync;
  // uffd: one fault per page written; the scan as measured while it ran.
  const double scan = !in_sync && w.min_collect_us >= 0
                          ? w.min_collect_us
                          : static_cast<double>(arena_bytes) / kGiB * m.scan_us_per_gib;
  // uffd-sync: its own faults and re-protections while it ran, else one per
  // page (a page it keeps unprotected because it is written every epoch
  // costs neither; not knowing which those are, assume none).
  const double faults = in_sync ? static_cast<double>(w.faults) / n : pages;
  const double reprotected = in_sync ? static_cast<double>(w.reprotected) / n : pages;
  const UffdCosts c = model_uffd_costs(m, scan, pages, faults, reprotected);
  d.costs = c;
  // The other tracker must win with its costs raised by the margin.
  UffdCosts biased = c;
  if (in_sync) {
    biased.uffd_us *= kSwitchMargin;
    biased.uffd_pause_us *= kSwitchMargin;
  } else {
    biased.uffd_sync_us *= kSwitchMargin;
    biased.uffd_sync_pause_us *= kSwitchMargin;
  }
  const UffdPick pick = pick_uffd_tracker(biased);
  if (pick.kind != TrackerKind::kUffd && pick.kind != TrackerKind::kUffdSync) return d;
  d.kind = pick.kind;
  if (d.kind != w.current) {
    d.explanation = fmt::format(
        "dirty tracker switched {} -> {}: {:.1f} dirty pages per checkpoint over the last {} "
        "checkpoints; modelled guest time per epoch uffd {:.0f} us (pause {:.0f}), uffd-sync "
        "{:.0f} us (pause {:.0f}){}",
        tracker_kind_name(w.current), tracker_kind_name(d.kind), pages, w.checkpoints, c.uffd_us,
        c.uffd_pause_us, c.uffd_sync_us, c.uffd_sync_pause_us,
        pick.for_the_pause ? "; uffd-sync for its shorter pause" : "");
  }
  return d;
}

SwitchingTracker::SwitchingTracker(Guest g, const uint8_t* arena, size_t bytes,
                                   const Measurements& m, std::function<void(std::string)> log)
    : guest_(g), arena_(arena), bytes_(bytes), m_(m), log_(std::move(log)) {}

Result<std::unique_ptr<SwitchingTracker>> SwitchingTracker::create(
    Guest g, const uint8_t* arena_mapping, size_t arena_bytes, TrackerKind initial,
    const Measurements& m, std::function<void(std::string)> log) {
  std::unique_ptr<SwitchingTracker> t(
      new SwitchingTracker(g, arena_mapping, arena_bytes, m, std::move(log)));
  if (g.async_uffd < 0 || g.sync_uffd < 0) {
    return Status::invalid_argument("switching tracker: both userfaultfds are needed");
  }
  if (initial != TrackerKind::kUffd && initial != TrackerKind::kUffdSync) {
    return Status::invalid_argument("switching tracker: starts as uffd or uffd-sync");
  }
  if (const char* every = std::getenv(kEnvSwitchEvery)) {
    t->switch_every_ = std::strtoull(every, nullptr, 10);
    if (t->switch_every_ > 0 && t->log_) {
      t->log_(
          fmt::format("{}={}: the dirty tracker switches every {} pauses (a test's fault "
                      "injection)",
                      kEnvSwitchEvery, t->switch_every_, t->switch_every_));
    }
  }
  // The guest armed the asynchronous one: uffd-sync starts with a move.
  ROMULUS_RETURN_IF_ERROR(t->start(initial, initial == TrackerKind::kUffdSync));
  t->window_start_ = Clock::now();
  t->last_switch_ = t->window_start_ - kMinDwell;  // the first window may switch
  return t;
}

SwitchingTracker::~SwitchingTracker() {
  current_.reset();  // uffd-sync: stops its handler and lifts every protection
  if (guest_.async_uffd >= 0) close(guest_.async_uffd);
  if (guest_.sync_uffd >= 0) close(guest_.sync_uffd);
}

std::optional<double> SwitchingTracker::write_fault_us() const {
  return kind() == TrackerKind::kUffd ? m_.async_fault_us : m_.sync_fault_us;
}

// Starts `kind` over the arena; with `move`, first moves the arena's
// registration to its userfaultfd from the other one.
Status SwitchingTracker::start(TrackerKind kind, bool move) {
  const bool sync = kind == TrackerKind::kUffdSync;
  if (sync) {
    // The handler first, so that faults on the moved range are resolved at once.
    const int fd = dup(guest_.sync_uffd);
    if (fd < 0) return Status::from_errno("switching tracker: dup of the synchronous uffd", errno);
    ROMULUS_ASSIGN_OR_RETURN(current_,
                             make_uffd_sync_tracker(fd, guest_.arena_addr, arena_, bytes_));
  }
  if (move) {
    const int from = sync ? guest_.async_uffd : guest_.sync_uffd;
    const int to = sync ? guest_.sync_uffd : guest_.async_uffd;
    if (const char* step =
            guest::linux_abi::move_write_protect(from, to, guest_.arena_addr, bytes_)) {
      const int err = errno;
      current_.reset();
      return Status::from_errno(
          fmt::format("moving the arena's write-protect to the {} userfaultfd ({}); restart with "
                      "--tracker {} to keep one tracker",
                      sync ? "synchronous" : "asynchronous", step, tracker_kind_name(kind)),
          err);
    }
  }
  if (!sync) {
    ROMULUS_ASSIGN_OR_RETURN(current_,
                             make_uffd_tracker(guest_.pid, guest_.arena_addr, arena_, bytes_));
  }
  kind_.store(kind, std::memory_order_relaxed);
  return Status::ok();
}

Status SwitchingTracker::switch_to(TrackerKind to) {
  ROMULUS_RETURN_IF_ERROR(current_->finish_rearm());
  faults_before_ += current_->write_faults();
  current_.reset();
  // The pages just reported are copied in this pause, from the arena.
  switched_ = true;
  if (Status st = start(to, true); !st.is_ok()) {
    broken_ = st;
    return st;
  }
  switches_.fetch_add(1, std::memory_order_relaxed);
  return Status::ok();
}

Status SwitchingTracker::collect(std::vector<uint64_t>& pfns) {
  return current_ ? current_->collect(pfns) : broken_;
}

Status SwitchingTracker::finish_rearm() { return current_ ? current_->finish_rearm() : broken_; }

uint64_t SwitchingTracker::write_faults() const {
  return faults_before_ + (current_ ? current_->write_faults() : 0);
}

std::span<const uint64_t> SwitchingTracker::protected_after_resume() const {
  if (switched_ || !current_) return {};
  return current_->protected_after_resume();
}

void SwitchingTracker::begin_copy_before_write(std::span<const uint64_t> pfns,
                                               std::span<uint8_t* const> dst) {
  if (!switched_ && current_) current_->begin_copy_before_write(pfns, dst);
}

uint64_t SwitchingTracker::finish_copy_before_write() {
  return switched_ || !current_ ? 0 : current_->finish_copy_before_write();
}

Status SwitchingTracker::collect_stopped(std::vector<uint64_t>& pfns) {
  if (!current_) return broken_;
  switched_ = false;
  const size_t before = pfns.size();
  const auto t0 = Clock::now();
  ROMULUS_RETURN_IF_ERROR(current_->collect_stopped(pfns));
  const auto now = Clock::now();
  const TrackerKind kind = this->kind();

  window_.current = kind;
  window_.checkpoints += 1;
  window_.pages += pfns.size() - before;
  if (kind == TrackerKind::kUffd) {
    const double us = std::chrono::duration<double, std::micro>(now - t0).count();
    window_.min_collect_us = window_.min_collect_us < 0 ? us : std::min(window_.min_collect_us, us);
  } else {
    window_.reprotected += current_->protected_after_resume().size();
  }

  std::optional<TrackerKind> to = std::exchange(requested_, std::nullopt);
  if (!to && switch_every_ > 0 && ++pauses_ % switch_every_ == 0) {
    to = kind == TrackerKind::kUffd ? TrackerKind::kUffdSync : TrackerKind::kUffd;
  }
  if (!to && window_.checkpoints >= kWindowCheckpoints && now - window_start_ >= kWindow) {
    const uint64_t faults = current_->write_faults();
    window_.faults = faults - std::min(faults, faults_at_window_start_);
    if (now - last_switch_ >= kMinDwell) {
      SwitchDecision d = decide_switch(window_, m_, bytes_);
      if (d.kind != kind) {
        to = d.kind;
        if (log_) log_(std::move(d.explanation));
      }
    }
    if (!to) start_window(now);
  }
  if (!to || *to == kind) return Status::ok();
  ROMULUS_RETURN_IF_ERROR(switch_to(*to));
  last_switch_ = now;
  start_window(Clock::now());
  return Status::ok();
}

void SwitchingTracker::start_window(Clock::time_point now) {
  window_ = SwitchWindow{};
  window_start_ = now;
  faults_at_window_start_ = current_->write_faults();
}

}  // namespace romulus::checkpoint
