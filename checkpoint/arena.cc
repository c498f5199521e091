#include "checkpoint/arena.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace romulus::checkpoint {

Result<SharedMemory> SharedMemory::create(const std::string& name, size_t size) {
  if (size == 0 || size % 4096 != 0) {
    return Status::invalid_argument("shared memory size " + std::to_string(size) +
                                    " is not a positive multiple of 4096");
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return Status::from_errno("memfd_create " + name, errno);
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    return Status::from_errno("ftruncate memfd " + name + " to " + std::to_string(size), err);
  }
  return adopt(fd, size);
}

Result<SharedMemory> SharedMemory::adopt(int fd, size_t size) {
  if (fd < 0) return Status::invalid_argument("shared memory: invalid fd");
  if (size == 0) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      int err = errno;
      close(fd);
      return Status::from_errno("fstat shared memory fd", err);
    }
    size = static_cast<size_t>(st.st_size);
    if (size == 0) {
      close(fd);
      return Status::invalid_argument("shared memory fd has size 0");
    }
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return Status::from_errno("mmap shared memory (" + std::to_string(size) + " bytes)", err);
  }
  return SharedMemory(fd, static_cast<uint8_t*>(p), size);
}

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SharedMemory::~SharedMemory() { reset(); }

void SharedMemory::reset() {
  if (data_ != nullptr) munmap(data_, size_);
  if (fd_ >= 0) close(fd_);
  data_ = nullptr;
  fd_ = -1;
  size_ = 0;
}

bool is_zero_page(const uint8_t* page) {
  // OR 64-byte blocks together (the compiler vectorises the word loop), checking
  // each block so a non-zero page usually exits early.
  for (size_t off = 0; off < 4096; off += 64) {
    uint64_t w[8];
    std::memcpy(w, page + off, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  return true;
}

bool pages_equal(const uint8_t* a, const uint8_t* b) {
#if defined(__x86_64__)
  // SSE2 is the x86-64 baseline: compare 64 bytes per step, exit at the first
  // differing block.
  for (size_t off = 0; off < 4096; off += 64) {
    __m128i x0 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + off)),
                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + off)));
    __m128i x1 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + off + 16)),
                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + off + 16)));
    __m128i x2 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + off + 32)),
                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + off + 32)));
    __m128i x3 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + off + 48)),
                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + off + 48)));
    __m128i any = _mm_or_si128(_mm_or_si128(x0, x1), _mm_or_si128(x2, x3));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(any, _mm_setzero_si128())) != 0xFFFF) return false;
  }
  return true;
#else
  return std::memcmp(a, b, 4096) == 0;
#endif
}

}  // namespace romulus::checkpoint
