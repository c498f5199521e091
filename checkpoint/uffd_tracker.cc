#include "checkpoint/uffd_tracker.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace romulus::checkpoint {

namespace {

constexpr size_t kRegionsPerScan = 4096;
constexpr uint64_t kPage = 4096;

// One PAGEMAP_SCAN pass over [start, end) of the process behind fd: appends the
// written pages (as PFNs relative to base, strictly increasing) and
// write-protects them again.
//
// The kernel may report regions beyond the walk_end it returns (seen on 6.18
// with the guest running: regions up to page 2048, walk_end at page 1978).
// The next call must start at walk_end, since nothing says the pages between
// were examined, and it may report again a page the guest wrote after the
// first report re-protected it. So the appended PFNs are sorted and made
// unique when a region starts below one already reported; nothing is dropped,
// since a page reported twice is one dirty page, and skipping the second
// report instead would lose a page first reported by the rescan (its write is
// consumed by the re-protection).
Status scan_written(int fd, uint64_t base, uint64_t start, uint64_t end,
                    std::vector<page_region>& regions, std::vector<uint64_t>& pfns,
                    uint64_t& scans) {
  const size_t first = pfns.size();
  uint64_t reported_until = start;  // end of the highest region reported so far
  bool in_order = true;
  uint64_t cur = start;
  while (cur < end) {
    struct pm_scan_arg arg;
    std::memset(&arg, 0, sizeof(arg));
    arg.size = sizeof(arg);
    arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
    arg.start = cur;
    arg.end = end;
    arg.vec = reinterpret_cast<uintptr_t>(regions.data());
    arg.vec_len = regions.size();
    arg.category_mask = PAGE_IS_WRITTEN;
    arg.return_mask = PAGE_IS_WRITTEN;
    int n = ioctl(fd, PAGEMAP_SCAN, &arg);
    ++scans;
    if (n < 0) {
      int err = errno;
      if (err == ENOTTY || err == EINVAL) {
        return Status::unsupported("PAGEMAP_SCAN ioctl failed (" + std::string(strerror(err)) +
                                   "): kernel lacks it (needs Linux 6.7+) or the range is not "
                                   "registered for async write-protect");
      }
      if (err == EPERM) {
        return Status::from_errno(
            "PAGEMAP_SCAN: a page of the arena is not under async write-protect", err);
      }
      return Status::from_errno("PAGEMAP_SCAN", err);
    }
    for (int i = 0; i < n; ++i) {
      const page_region& r = regions[static_cast<size_t>(i)];
      if (r.start < cur || r.end > end || r.start >= r.end || (r.start - base) % kPage != 0) {
        return Status::corrupt("PAGEMAP_SCAN returned a region outside the arena");
      }
      if (r.start < reported_until) in_order = false;
      reported_until = std::max<uint64_t>(reported_until, r.end);
      for (uint64_t a = r.start; a < r.end; a += kPage) pfns.push_back((a - base) / kPage);
    }
    if (arg.walk_end <= cur) {
      if (n == 0) return Status::io_error("PAGEMAP_SCAN made no progress");
      cur = regions[static_cast<size_t>(n) - 1].end;
    } else {
      cur = arg.walk_end;
    }
  }
  if (!in_order) {
    const auto from = pfns.begin() + static_cast<std::ptrdiff_t>(first);
    std::sort(from, pfns.end());
    pfns.erase(std::unique(from, pfns.end()), pfns.end());
  }
  return Status::ok();
}

}  // namespace

UffdTracker::UffdTracker(int pagemap_fd, pid_t guest, uint64_t addr, const uint8_t* arena,
                         size_t bytes)
    : pagemap_fd_(pagemap_fd),
      guest_(guest),
      guest_addr_(addr),
      arena_(arena),
      bytes_(bytes),
      regions_(kRegionsPerScan) {}

UffdTracker::~UffdTracker() { close(pagemap_fd_); }

Result<std::unique_ptr<UffdTracker>> UffdTracker::create(pid_t guest, uint64_t guest_arena_addr,
                                                         const uint8_t* arena_mapping,
                                                         size_t arena_bytes) {
  if (guest_arena_addr == 0 || guest_arena_addr % kPage != 0 || arena_bytes == 0 ||
      arena_bytes % kPage != 0) {
    return Status::invalid_argument("uffd tracker: arena address/size not page aligned");
  }
  std::string path = "/proc/" + std::to_string(guest) + "/pagemap";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::from_errno("open " + path, errno);
  std::unique_ptr<UffdTracker> t(
      new UffdTracker(fd, guest, guest_arena_addr, arena_mapping, arena_bytes));
  // Re-arm: creation is the starting point of tracking.
  std::vector<uint64_t> discard;
  ROMULUS_RETURN_IF_ERROR(t->collect(discard).context("uffd tracker initial scan"));
  t->reported_ = 0;  // writes before tracking began took no fault of ours
  return t;
}

Status UffdTracker::collect(std::vector<uint64_t>& pfns) {
  return collect_range(0, bytes_ / kPage, pfns);
}

Status UffdTracker::collect_range(uint64_t first_pfn, uint64_t pages, std::vector<uint64_t>& pfns) {
  if (first_pfn > bytes_ / kPage || pages > bytes_ / kPage - first_pfn) {
    return Status::invalid_argument("uffd tracker: a scan beyond the arena");
  }
  const size_t before = pfns.size();
  const uint64_t start = guest_addr_ + first_pfn * kPage;
  ROMULUS_RETURN_IF_ERROR(
      scan_written(pagemap_fd_, guest_addr_, start, start + pages * kPage, regions_, pfns, scans_)
          .context("uffd tracker (guest pid " + std::to_string(guest_) + ")"));
  reported_ += pfns.size() - before;
  return Status::ok();
}

Result<std::unique_ptr<DirtyTracker>> make_uffd_tracker(pid_t guest, uint64_t guest_arena_addr,
                                                        const uint8_t* arena_mapping,
                                                        size_t arena_bytes) {
  auto t = UffdTracker::create(guest, guest_arena_addr, arena_mapping, arena_bytes);
  if (!t.is_ok()) return t.status();
  return std::unique_ptr<DirtyTracker>(std::move(t).value());
}

Status probe_uffd_wp_async() {
  // 1. Is userfaultfd allowed, and which features does the kernel offer?
  int qfd = guest::linux_abi::userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (qfd < 0) {
    int err = errno;
    if (err == ENOSYS) return Status::unsupported("kernel lacks userfaultfd (ENOSYS)");
    return Status::unsupported(
        "userfaultfd not permitted: " + std::string(strerror(err)) +
        (err == EPERM ? " (see /proc/sys/vm/unprivileged_userfaultfd)" : ""));
  }
  struct uffdio_api api;
  std::memset(&api, 0, sizeof(api));
  api.api = UFFD_API;
  int rc = ioctl(qfd, UFFDIO_API, &api);
  int err = errno;
  close(qfd);
  if (rc != 0) return Status::unsupported("UFFDIO_API failed: " + std::string(strerror(err)));
  if ((api.features & UFFD_FEATURE_WP_ASYNC) == 0) {
    return Status::unsupported("kernel lacks UFFD_FEATURE_WP_ASYNC (needs Linux 6.7+)");
  }
  if ((api.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) == 0) {
    return Status::unsupported(
        "kernel lacks UFFD_FEATURE_WP_HUGETLBFS_SHMEM (write-protect on memfd memory)");
  }

  // 2. Try the real thing on a small memfd mapping in this process.
  constexpr size_t kPages = 16;
  int mfd = memfd_create("romulus-uffd-probe", MFD_CLOEXEC);
  if (mfd < 0) return Status::from_errno("probe: memfd_create", errno);
  if (ftruncate(mfd, kPages * kPage) != 0) {
    err = errno;
    close(mfd);
    return Status::from_errno("probe: ftruncate", err);
  }
  void* mem = mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  close(mfd);
  if (mem == MAP_FAILED) return Status::from_errno("probe: mmap", errno);
  auto* base = static_cast<uint8_t*>(mem);
  int ufd = guest::linux_abi::userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  int pfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  Status result = [&]() -> Status {
    if (ufd < 0)
      return Status::unsupported("userfaultfd not permitted: " + std::string(strerror(errno)));
    if (pfd < 0)
      return Status::unsupported("cannot open /proc/self/pagemap: " + std::string(strerror(errno)));
    if (const char* step = guest::linux_abi::arm_write_protect(
            ufd, base, kPages * kPage, guest::linux_abi::kUffdWantedFeatures)) {
      return Status::unsupported(
          std::strcmp(step, "UFFDIO_API") == 0
              ? "UFFDIO_API refused WP_ASYNC|WP_UNPOPULATED|WP_HUGETLBFS_SHMEM: " +
                    std::string(strerror(errno))
              : std::string(step) + " on memfd memory failed: " + strerror(errno));
    }
    base[3 * kPage + 7] = 1;  // never-touched page: must be reported
    std::vector<page_region> regions(8);
    std::vector<uint64_t> pfns;
    uint64_t scans = 0;
    Status s =
        scan_written(pfd, reinterpret_cast<uintptr_t>(base), reinterpret_cast<uintptr_t>(base),
                     reinterpret_cast<uintptr_t>(base) + kPages * kPage, regions, pfns, scans);
    if (!s.is_ok()) {
      if (s.code() == StatusCode::kUnsupported)
        return Status::unsupported("PAGEMAP_SCAN ioctl missing");
      return Status::unsupported("PAGEMAP_SCAN probe failed: " + s.message());
    }
    if (pfns != std::vector<uint64_t>{3}) {
      return Status::unsupported("PAGEMAP_SCAN did not report exactly the written page");
    }
    pfns.clear();
    s = scan_written(pfd, reinterpret_cast<uintptr_t>(base), reinterpret_cast<uintptr_t>(base),
                     reinterpret_cast<uintptr_t>(base) + kPages * kPage, regions, pfns, scans);
    if (!s.is_ok() || !pfns.empty()) {
      return Status::unsupported("PAGEMAP_SCAN did not re-arm write-protect");
    }
    return Status::ok();
  }();
  if (pfd >= 0) close(pfd);
  if (ufd >= 0) close(ufd);
  munmap(mem, kPages * kPage);
  return result;
}

}  // namespace romulus::checkpoint
