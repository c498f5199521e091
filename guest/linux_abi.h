// Linux ABI that Debian's 6.1 kernel headers lack: userfaultfd write-protect in
// asynchronous mode (Linux 6.7+) and the PAGEMAP_SCAN ioctl on /proc/PID/pagemap
// (Linux 6.7+), plus the futex calls Romulus uses on its shared control page.
//
// Values and layouts are copied from the kernel's include/uapi/linux/userfaultfd.h
// and include/uapi/linux/fs.h (and checked against the ioctl_pagemap_scan(2) man
// page). Each definition is guarded so that newer system headers win. Header-only,
// no state; every function here is a thin syscall wrapper safe from any thread.
// guest/ and checkpoint/ both include this file (checkpoint/ may include guest/).
#pragma once

#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>

// ---- userfaultfd (include/uapi/linux/userfaultfd.h) ----
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)  // Linux 5.19: WP on shmem/memfd and hugetlbfs
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)  // Linux 6.4: WP markers on never-touched anon PTEs
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)  // Linux 6.7: the kernel resolves WP faults itself
#endif

// ---- PAGEMAP_SCAN (include/uapi/linux/fs.h, Linux 6.7) ----
#ifndef PAGEMAP_SCAN
// Categories: bits in pm_scan_arg masks and in page_region.categories.
#define PAGE_IS_WPALLOWED (1 << 0)  // async write-protect is armed on the page
#define PAGE_IS_WRITTEN (1 << 1)    // written since it was last write-protected
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

// One output run of pages sharing the same (return_mask-filtered) categories.
struct page_region {
  __u64 start;  // first byte
  __u64 end;    // one past the last byte
  __u64 categories;
};

// Flags.
#define PM_SCAN_WP_MATCHING (1 << 0)    // write-protect (re-arm) the pages that matched
#define PM_SCAN_CHECK_WPASYNC (1 << 1)  // fail if a page in range lacks async WP

struct pm_scan_arg {
  __u64 size;   // sizeof(struct pm_scan_arg)
  __u64 flags;  // PM_SCAN_*
  __u64 start;  // range, page aligned
  __u64 end;
  __u64 walk_end;             // out: where the walk stopped (== end when complete)
  __u64 vec;                  // struct page_region* output
  __u64 vec_len;              // entries in vec
  __u64 max_pages;            // 0 = no limit
  __u64 category_inverted;    // categories that match when 0
  __u64 category_mask;        // all of these must match
  __u64 category_anyof_mask;  // at least one of these must match (0 = no test)
  __u64 return_mask;          // categories reported in page_region.categories
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

namespace romulus::guest::linux_abi {

// The features Romulus requests from UFFDIO_API for its arena (a MAP_SHARED memfd):
// WP_ASYNC so writes never block on a reader, WP_HUGETLBFS_SHMEM because the arena is
// shmem, WP_UNPOPULATED so never-touched pages are tracked too (required for anonymous
// memory, harmless for shmem, where the kernel always installs markers).
inline constexpr uint64_t kUffdWantedFeatures =
    UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

// Synchronous write-protect (the uffd-sync tracker): the same without WP_ASYNC, so a
// first write blocks until the supervisor resolves it.
inline constexpr uint64_t kUffdSyncWantedFeatures =
    UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

inline int userfaultfd(int flags) { return static_cast<int>(::syscall(SYS_userfaultfd, flags)); }

// How Romulus arms write-protection on a range: arm_write_protect() is
// UFFDIO_API with `features` (uffd_api), UFFDIO_REGISTER in write-protect mode
// and UFFDIO_WRITEPROTECT of the whole range (register_write_protect). `fd` is
// an open userfaultfd. Each returns nullptr on success (uffd_api with the
// kernel's answered features in *features_out, if given), else the step that
// failed, with errno set. The caller owns (and closes) fd.
inline const char* uffd_api(int fd, uint64_t features, uint64_t* features_out = nullptr) {
  struct uffdio_api api {};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd, UFFDIO_API, &api) != 0) return "UFFDIO_API";
  if (features_out) *features_out = api.features;
  return nullptr;
}

// UFFDIO_REGISTER in write-protect mode and UFFDIO_WRITEPROTECT of the whole
// range, on a userfaultfd whose UFFDIO_API is done. `addr` is an address in
// the userfaultfd's own process, whoever calls: the supervisor may call it
// on a guest's userfaultfd taken with pidfd_getfd().
inline const char* register_write_protect(int fd, uint64_t addr, size_t len) {
  struct uffdio_register reg {};
  reg.range.start = addr;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0) return "UFFDIO_REGISTER (write-protect mode)";
  struct uffdio_writeprotect wp {};
  wp.range = reg.range;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (::ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0) return "UFFDIO_WRITEPROTECT";
  return nullptr;
}

inline const char* arm_write_protect(int fd, void* addr, size_t len, uint64_t features,
                                     uint64_t* features_out = nullptr) {
  if (const char* step = uffd_api(fd, features, features_out)) return step;
  return register_write_protect(fd, reinterpret_cast<uintptr_t>(addr), len);
}

// Moves write-protect tracking of a range from one userfaultfd of a process
// to another of the same process (one asynchronous, one synchronous: a
// range is registered with one userfaultfd at a time, and the mode is fixed
// at UFFDIO_API): UFFDIO_UNREGISTER on `from` (which lifts its protection
// and wakes any writer waiting on it), then register_write_protect() on
// `to`. Every page of the range is write-protected on `to` afterwards. Call
// it with the process stopped, or writes made between the two steps go
// unseen. Returns nullptr, or the failed step with errno set.
inline const char* move_write_protect(int from, int to, uint64_t addr, size_t len) {
  struct uffdio_range range {};
  range.start = addr;
  range.len = len;
  if (::ioctl(from, UFFDIO_UNREGISTER, &range) != 0) return "UFFDIO_UNREGISTER";
  return register_write_protect(to, addr, len);
}

// Cross-process (shared) futexes: no FUTEX_PRIVATE_FLAG, the word lives in a
// MAP_SHARED mapping. std::atomic<uint32_t> is layout-compatible with uint32_t here.
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
static_assert(std::atomic<uint32_t>::is_always_lock_free);

inline uint32_t* futex_word(std::atomic<uint32_t>* a) { return reinterpret_cast<uint32_t*>(a); }

// Sleeps while *word == expected, at most `timeout` (negative = forever). Returns 0 when
// woken, or -1 with errno EAGAIN (value differed), ETIMEDOUT or EINTR; callers re-check.
inline int futex_wait(std::atomic<uint32_t>* word, uint32_t expected,
                      std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1)) {
  struct timespec ts;
  struct timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
    tsp = &ts;
  }
  return static_cast<int>(
      ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT, expected, tsp, nullptr, 0));
}

inline int futex_wake(std::atomic<uint32_t>* word, int count = INT32_MAX) {
  return static_cast<int>(
      ::syscall(SYS_futex, futex_word(word), FUTEX_WAKE, count, nullptr, nullptr, 0));
}

}  // namespace romulus::guest::linux_abi
