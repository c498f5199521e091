#include "common/shared_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace romulus::common {

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

}  // namespace romulus::common
