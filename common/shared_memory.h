// SharedMemory: a memfd mapped MAP_SHARED read/write into this process.
//
// Used for the guest's arena and control page on the primary (the guest maps the
// same fd, so the supervisor reads guest memory through its own mapping) and for
// the backup's replica image, which becomes the guest's arena at takeover. Owns the fd and the
// mapping: move-only, unmapped and closed by the destructor. data() may be read and written from
// any thread; the object itself is not synchronised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace romulus::common {

class SharedMemory {
 public:
  // memfd_create(name, MFD_CLOEXEC) + ftruncate(size) + mmap. Contents are zero.
  // size must be a positive multiple of 4096.
  static Result<SharedMemory> create(const std::string& name, size_t size);
  // Takes ownership of fd (closed even on error) and maps `size` bytes of it;
  // size 0 means the file's current size.
  static Result<SharedMemory> adopt(int fd, size_t size = 0);

  SharedMemory() = default;  // empty: data() == nullptr
  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  ~SharedMemory();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t pages() const { return size_ / 4096; }
  int fd() const { return fd_; }

 private:
  SharedMemory(int fd, uint8_t* data, size_t size) : fd_(fd), data_(data), size_(size) {}
  void reset();

  int fd_ = -1;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace romulus::common
