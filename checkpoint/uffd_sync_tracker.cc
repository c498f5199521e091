#include "checkpoint/uffd_sync_tracker.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <string>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "guest/linux_abi.h"

namespace romulus::checkpoint {

namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kMessagesPerRead = 64;
// Below this many pages, re-protecting inline is cheaper than waking the handler.
constexpr size_t kInlineRearmPages = 256;
// See reprotect_planned(): merging 10,000 pages spread over 1 GiB into one ioctl
// took the re-protection from ~13 ms to ~1 ms (docs/performance.md).
constexpr uint64_t kMaxGapPages = 128;
// Sticky pages (see the header): how long a promotion lasts, and how many pages
// may be sticky at once (each is copied at every pause: 16,384 pages = 64 MiB,
// the default staging size).
constexpr uint64_t kStickyEpochs = 16;
constexpr size_t kMaxStickyPages = 16384;

}  // namespace

UffdSyncTracker::UffdSyncTracker(int uffd, int stop_fd, int rearm_fd, uint64_t addr,
                                 const uint8_t* arena, size_t bytes)
    : uffd_(uffd),
      stop_fd_(stop_fd),
      rearm_fd_(rearm_fd),
      guest_addr_(addr),
      arena_(arena),
      bytes_(bytes) {}

Result<std::unique_ptr<UffdSyncTracker>> UffdSyncTracker::create(int uffd,
                                                                 uint64_t guest_arena_addr,
                                                                 const uint8_t* arena_mapping,
                                                                 size_t arena_bytes) {
  if (uffd < 0) return Status::invalid_argument("uffd-sync tracker: no userfaultfd given");
  if (guest_arena_addr == 0 || guest_arena_addr % kPage != 0 || arena_bytes == 0 ||
      arena_bytes % kPage != 0) {
    close(uffd);
    return Status::invalid_argument("uffd-sync tracker: arena address/size not page aligned");
  }
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int rearm_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0 || rearm_fd < 0) {
    const int err = errno;
    close(uffd);
    if (stop_fd >= 0) close(stop_fd);
    if (rearm_fd >= 0) close(rearm_fd);
    return Status::from_errno("uffd-sync tracker: eventfd", err);
  }
  std::unique_ptr<UffdSyncTracker> t(
      new UffdSyncTracker(uffd, stop_fd, rearm_fd, guest_arena_addr, arena_mapping, arena_bytes));
  t->handler_ = std::thread([p = t.get()] { p->handle_faults(); });
  return t;
}

UffdSyncTracker::~UffdSyncTracker() {
  Status rearmed = finish_rearm();
  (void)rearmed;
  const uint64_t one = 1;
  ssize_t ignored = write(stop_fd_, &one, sizeof(one));
  (void)ignored;
  if (handler_.joinable()) handler_.join();
  // Nobody resolves faults from now on: lift every protection (and wake any
  // writer still waiting) so the guest keeps running.
  const uint64_t pages = bytes_ / kPage;
  for (uint64_t first = 0; first < pages;) {
    if (!owns(first)) {
      first += chunk_pages_;
      continue;
    }
    uint64_t end = first;
    while (end < pages && owns(end)) end = chunk_pages_ == 0 ? pages : end + chunk_pages_;
    end = std::min(end, pages);
    Status lifted = set_protection(first, end - first, false);
    (void)lifted;
    first = end;
  }
  close(stop_fd_);
  close(rearm_fd_);
  close(uffd_);
}

Status UffdSyncTracker::set_protection(uint64_t pfn, uint64_t count, bool protect) {
  struct uffdio_writeprotect wp;
  std::memset(&wp, 0, sizeof(wp));
  wp.range.start = guest_addr_ + pfn * kPage;
  wp.range.len = count * kPage;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;  // 0: lift and wake the writers
  for (;;) {
    if (ioctl(uffd_, UFFDIO_WRITEPROTECT, &wp) == 0) return Status::ok();
    // EAGAIN: the guest's address space is changing (mmap, fork); try again.
    if (errno != EAGAIN && errno != EINTR) break;
  }
  const int err = errno;
  if (err == ESRCH) return Status::aborted("uffd-sync tracker: the guest's address space is gone");
  return Status::from_errno(protect ? "UFFDIO_WRITEPROTECT (re-protect dirty pages)"
                                    : "UFFDIO_WRITEPROTECT (resolve a write fault)",
                            err);
}

void UffdSyncTracker::handle_faults() {
  Status st = serve();
  std::lock_guard<std::mutex> lock(mu_);
  if (!st.is_ok() && handler_error_.is_ok()) handler_error_ = std::move(st);
  if (rearm_in_flight_) {  // nobody else will finish it
    rearm_status_ = handler_error_.is_ok()
                        ? Status::aborted("uffd-sync tracker: fault handler stopped")
                        : handler_error_;
    rearm_in_flight_ = false;
    rearm_done_.notify_all();
  }
}

Status UffdSyncTracker::serve() {
  struct uffd_msg msgs[kMessagesPerRead];
  struct pollfd fds[3] = {{uffd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}, {rearm_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("uffd-sync tracker: poll", errno);
    }
    if (fds[1].revents != 0) return Status::ok();
    if (fds[2].revents != 0) {
      uint64_t count = 0;
      ssize_t ignored = read(rearm_fd_, &count, sizeof(count));
      (void)ignored;
      std::lock_guard<std::mutex> lock(mu_);
      if (rearm_in_flight_) {
        rearm_status_ = reprotect_planned();
        rearm_in_flight_ = false;
        rearm_done_.notify_all();
      }
    }
    if ((fds[0].revents & POLLERR) != 0) {
      return Status::io_error("uffd-sync tracker: the userfaultfd reports an error");
    }
    if ((fds[0].revents & POLLIN) == 0) continue;
    const ssize_t n = read(uffd_, msgs, sizeof(msgs));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;  // a fault withdrawn by a signal
      return Status::from_errno("uffd-sync tracker: read userfaultfd", errno);
    }
    const size_t count = static_cast<size_t>(n) / sizeof(struct uffd_msg);
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < count; ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      const uint64_t addr = msgs[i].arg.pagefault.address & ~(kPage - 1);
      if (addr < guest_addr_ || addr >= guest_addr_ + bytes_) continue;
      ROMULUS_RETURN_IF_ERROR(resolve_fault((addr - guest_addr_) / kPage));
    }
  }
}

bool UffdSyncTracker::copy_once(size_t i) {
  uint8_t expected = kNotCopied;
  if (cow_state_[i].compare_exchange_strong(expected, kCopying, std::memory_order_acquire)) {
    std::memcpy(cow_dst_[i], arena_ + cow_pfns_[i] * kPage, kPage);
    cow_state_[i].store(kCopied, std::memory_order_release);
    return true;
  }
  // Someone else is copying it (a page takes a microsecond): wait for the end.
  while (cow_state_[i].load(std::memory_order_acquire) != kCopied) std::this_thread::yield();
  return false;
}

Status UffdSyncTracker::resolve_fault(uint64_t pfn) {
  if (!owns(pfn)) return Status::ok();  // stale: see the header, "Chunks"
  if (planning_ && std::binary_search(reprotect_.begin(), reprotect_.end(), pfn)) {
    held_.push_back(pfn);  // its writer stays blocked; released by release_held()
    return Status::ok();
  }
  if (cow_active_) {
    auto it = std::lower_bound(cow_pfns_.begin(), cow_pfns_.end(), pfn);
    if (it != cow_pfns_.end() && *it == pfn) {
      // The checkpoint's copy first, while the page is still protected.
      if (copy_once(static_cast<size_t>(it - cow_pfns_.begin()))) ++cow_on_fault_;
    }
  }
  // Log first, then release the writer: its write is in this epoch's log.
  logged_.push_back(pfn);
  ROMULUS_RETURN_IF_ERROR(set_protection(pfn, 1, false));
  faults_.fetch_add(1, std::memory_order_relaxed);
  return Status::ok();
}

Status UffdSyncTracker::release_held() {
  planning_ = false;
  Status st;
  for (const uint64_t pfn : held_) {
    Status s = resolve_fault(pfn);
    if (st.is_ok()) st = std::move(s);
  }
  held_.clear();
  return st;
}

void UffdSyncTracker::begin_copy_before_write(std::span<const uint64_t> pfns,
                                              std::span<uint8_t* const> dst) {
  std::lock_guard<std::mutex> lock(mu_);
  cow_pfns_.assign(pfns.begin(), pfns.end());
  cow_dst_.assign(dst.begin(), dst.end());
  if (cow_capacity_ < pfns.size()) {
    cow_capacity_ = std::max(pfns.size(), 2 * cow_capacity_);
    cow_state_ = std::make_unique<std::atomic<uint8_t>[]>(cow_capacity_);
  }
  for (size_t i = 0; i < pfns.size(); ++i) cow_state_[i].store(kNotCopied);
  cow_on_fault_ = 0;
  cow_active_ = !pfns.empty();
  Status st = release_held();  // copied first where held
  if (!st.is_ok() && handler_error_.is_ok()) handler_error_ = std::move(st);
}

uint64_t UffdSyncTracker::finish_copy_before_write() {
  // Not under mu_: the handler copies the pages the guest writes meanwhile.
  // The vectors do not change until cow_active_ is cleared below.
  for (size_t i = 0; i < cow_pfns_.size(); ++i) copy_once(i);
  std::lock_guard<std::mutex> lock(mu_);
  cow_active_ = false;
  cow_pfns_.clear();
  cow_dst_.clear();
  return std::exchange(cow_on_fault_, 0);
}

void UffdSyncTracker::last_logged(std::vector<uint64_t>& out) {
  std::lock_guard lock(mu_);
  out.assign(prev_logged_.begin(), prev_logged_.end());
}

void UffdSyncTracker::plan_epoch() {
  taken_.swap(logged_);
  logged_.clear();
  std::sort(taken_.begin(), taken_.end());
  taken_.erase(std::unique(taken_.begin(), taken_.end()), taken_.end());
  ++epoch_;

  // Sticky pages past their term are demoted: re-protected, reported once more.
  kept_.clear();
  reprotect_.clear();
  for (const Sticky& st : sticky_) {
    if (st.until <= epoch_) {
      reprotect_.push_back(st.pfn);
    } else {
      kept_.push_back(st);
    }
  }
  const size_t demoted = reprotect_.size();
  // Logged pages: promoted if also logged last epoch (and there is room), else
  // re-protected. A logged page that is sticky already (a stale fault) stays so.
  auto sticky_has = [this](uint64_t pfn) {
    auto it = std::lower_bound(kept_.begin(), kept_.end(), pfn,
                               [](const Sticky& st, uint64_t p) { return st.pfn < p; });
    return it != kept_.end() && it->pfn == pfn;
  };
  promoted_.clear();
  for (const uint64_t pfn : taken_) {
    if (sticky_has(pfn)) continue;
    if (kept_.size() + promoted_.size() < kMaxStickyPages &&
        std::binary_search(prev_logged_.begin(), prev_logged_.end(), pfn)) {
      promoted_.push_back({pfn, epoch_ + kStickyEpochs});
    } else {
      reprotect_.push_back(pfn);
    }
  }
  std::inplace_merge(reprotect_.begin(), reprotect_.begin() + static_cast<ptrdiff_t>(demoted),
                     reprotect_.end());
  reprotect_.erase(std::unique(reprotect_.begin(), reprotect_.end()), reprotect_.end());
  sticky_.clear();
  std::merge(kept_.begin(), kept_.end(), promoted_.begin(), promoted_.end(),
             std::back_inserter(sticky_),
             [](const Sticky& a, const Sticky& b) { return a.pfn < b.pfn; });

  // Reported: the logged pages, the sticky ones and the demoted ones.
  report_.clear();
  for (const Sticky& st : sticky_) report_.push_back(st.pfn);
  const size_t sticky_end = report_.size();
  report_.insert(report_.end(), taken_.begin(), taken_.end());
  std::inplace_merge(report_.begin(), report_.begin() + static_cast<ptrdiff_t>(sticky_end),
                     report_.end());
  const size_t merged_end = report_.size();
  report_.insert(report_.end(), reprotect_.begin(), reprotect_.end());
  std::inplace_merge(report_.begin(), report_.begin() + static_cast<ptrdiff_t>(merged_end),
                     report_.end());
  report_.erase(std::unique(report_.begin(), report_.end()), report_.end());

  prev_logged_.swap(taken_);
  sticky_count_.store(sticky_.size(), std::memory_order_relaxed);
}

Status UffdSyncTracker::reprotect_planned() {
  const std::vector<uint64_t>& r = reprotect_;
  for (size_t i = 0; i < r.size();) {
    size_t j = i + 1;
    while (j < r.size() && r[j] - r[j - 1] <= kMaxGapPages && owns_all(r[j - 1], r[j])) ++j;
    ROMULUS_RETURN_IF_ERROR(set_protection(r[i], r[j - 1] + 1 - r[i], true));
    i = j;
  }
  return Status::ok();
}

bool UffdSyncTracker::owns_all(uint64_t first, uint64_t last) const {
  if (chunk_pages_ == 0) return true;
  for (uint64_t c = first / chunk_pages_; c <= last / chunk_pages_; ++c) {
    if (!owned_[c]) return false;
  }
  return true;
}

void UffdSyncTracker::enable_chunks(uint64_t chunk_pages) {
  std::lock_guard<std::mutex> lock(mu_);
  chunk_pages_ = chunk_pages;
  owned_.assign((bytes_ / kPage + chunk_pages - 1) / chunk_pages, 0);
}

Status UffdSyncTracker::take_range(uint64_t first_pfn, uint64_t pages, int from) {
  return move_range(first_pfn, pages, from, uffd_, true);
}

Status UffdSyncTracker::give_range(uint64_t first_pfn, uint64_t pages, int to) {
  return move_range(first_pfn, pages, uffd_, to, false);
}

Status UffdSyncTracker::move_range(uint64_t first_pfn, uint64_t pages, int from, int to,
                                   bool here) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t arena_pages = bytes_ / kPage;
  if (chunk_pages_ == 0 || pages == 0 || first_pfn % chunk_pages_ != 0 || first_pfn > arena_pages ||
      pages > arena_pages - first_pfn ||
      (pages % chunk_pages_ != 0 && first_pfn + pages != arena_pages)) {
    return Status::invalid_argument("uffd-sync tracker: a move of whole chunks only");
  }
  if (planning_ || rearm_in_flight_ || cow_active_) {
    return Status::invalid_argument(
        "uffd-sync tracker: a chunk moves only after the pause's re-protection, before "
        "copy-before-write");
  }
  const uint64_t end = first_pfn + pages;
  for (uint64_t c = first_pfn / chunk_pages_; c * chunk_pages_ < end; ++c) {
    if ((owned_[c] != 0) == here) {
      return Status::invalid_argument(
          here ? "uffd-sync tracker: taking a chunk it holds already"
               : "uffd-sync tracker: giving away a chunk it does not hold");
    }
  }
  if (const char* step = guest::linux_abi::move_write_protect(
          from, to, guest_addr_ + first_pfn * kPage, pages * kPage)) {
    const int err = errno;
    return Status::from_errno(
        fmt::format("moving pages {}..{} of the arena {} the synchronous userfaultfd ({})",
                    first_pfn, end - 1, here ? "to" : "from", step),
        err);
  }
  for (uint64_t c = first_pfn / chunk_pages_; c * chunk_pages_ < end; ++c) owned_[c] = here;
  if (here) return Status::ok();
  // Forget the range: its pages were reported by the collect of this pause,
  // and the other userfaultfd tracks them from now on.
  auto inside = [&](uint64_t pfn) { return pfn >= first_pfn && pfn < end; };
  std::erase_if(logged_, inside);
  std::erase_if(prev_logged_, inside);
  std::erase_if(held_, inside);
  std::erase_if(sticky_, [&](const Sticky& st) { return inside(st.pfn); });
  sticky_count_.store(sticky_.size(), std::memory_order_relaxed);
  return Status::ok();
}

Status UffdSyncTracker::finish_rearm() {
  std::unique_lock<std::mutex> lock(mu_);
  rearm_done_.wait(lock, [this] { return !rearm_in_flight_; });
  Status st = std::move(rearm_status_);
  rearm_status_ = Status::ok();
  // Copying is planned by now (in the pause, or begin_copy_before_write()).
  Status released = planning_ ? release_held() : Status::ok();
  if (st.is_ok()) st = std::move(released);
  return st;
}

Status UffdSyncTracker::collect_stopped(std::vector<uint64_t>& pfns) {
  ROMULUS_RETURN_IF_ERROR(finish_rearm());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!handler_error_.is_ok()) return handler_error_;
    plan_epoch();
    pfns.insert(pfns.end(), report_.begin(), report_.end());
    planning_ = true;  // until the engine has planned its copies
    if (reprotect_.size() <= kInlineRearmPages) return reprotect_planned();
    rearm_in_flight_ = true;
  }
  const uint64_t one = 1;
  if (write(rearm_fd_, &one, sizeof(one)) != sizeof(one)) {
    const int err = errno;
    std::lock_guard<std::mutex> lock(mu_);
    rearm_in_flight_ = false;
    return Status::from_errno("uffd-sync tracker: wake the handler to re-protect", err);
  }
  return Status::ok();
}

Status UffdSyncTracker::collect(std::vector<uint64_t>& pfns) {
  ROMULUS_RETURN_IF_ERROR(finish_rearm());
  std::lock_guard<std::mutex> lock(mu_);
  if (!handler_error_.is_ok()) return handler_error_;
  plan_epoch();
  // Re-protect before anyone reads the pages: with the guest running, a write
  // after the copy must fault again to be seen next time. (Sticky pages are
  // reported again next time anyway.)
  ROMULUS_RETURN_IF_ERROR(reprotect_planned());
  pfns.insert(pfns.end(), report_.begin(), report_.end());
  return Status::ok();
}

Result<std::unique_ptr<DirtyTracker>> make_uffd_sync_tracker(int uffd, uint64_t guest_arena_addr,
                                                             const uint8_t* arena_mapping,
                                                             size_t arena_bytes) {
  auto t = UffdSyncTracker::create(uffd, guest_arena_addr, arena_mapping, arena_bytes);
  if (!t.is_ok()) return t.status();
  return std::unique_ptr<DirtyTracker>(std::move(t).value());
}

}  // namespace romulus::checkpoint
