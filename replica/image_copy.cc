#include "replica/image_copy.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace romulus::replica {

namespace {
constexpr size_t kPage = 4096;
}  // namespace

Result<std::unique_ptr<ImageCopy>> ImageCopy::start(const uint8_t* image, size_t bytes,
                                                    uint64_t epoch) {
  if (bytes == 0 || bytes % kPage != 0)
    return Status::invalid_argument("ImageCopy: not whole pages");
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Status::from_errno("a copy of the image: mmap", errno);
  std::shared_ptr<uint8_t> data(static_cast<uint8_t*>(p),
                                [bytes](uint8_t* q) { ::munmap(q, bytes); });
  return std::unique_ptr<ImageCopy>(new ImageCopy(image, bytes, epoch, std::move(data)));
}

ImageCopy::~ImageCopy() = default;

void ImageCopy::copy_page(size_t page) {
  std::memcpy(data_.get() + page * kPage, image_ + page * kPage, kPage);
}

bool ImageCopy::step() {
  const size_t end = std::min(bytes_, next_ + kSliceBytes);
  for (size_t page = next_ / kPage; page < end / kPage; ++page) {
    if (!early_[page]) copy_page(page);
  }
  next_ = end;
  return done();
}

void ImageCopy::finish() {
  while (!step()) {
  }
}

void ImageCopy::before_overwrite(uint64_t pfn) {
  if (pfn * kPage < next_ || pfn >= early_.size() || early_[pfn]) return;
  copy_page(pfn);
  early_[pfn] = true;
}

}  // namespace romulus::replica
