// ImageCopy: a copy of the backup's committed image exactly as it was at one
// epoch, taken a slice at a time between the backup's other events.
//
// The backup needs whole copies of its image (a new durable base after a full
// sync, a snapshot), but its thread also reads the stream, acknowledges and
// sends heartbeats: copying gigabytes in one go would make it silent long
// enough for the primary to drop it. So the copy advances by step() (a slice
// per event-loop turn), and the pages the backup overwrites meanwhile are
// copied first (before_overwrite(), called by ReplicaState before it applies
// a checkpoint's page): every page of the copy holds its content as of the
// epoch the copy started at. If the image is about to be replaced whole (a new
// full sync commits), finish() completes the copy first.
//
// Not thread-safe: the backup's thread only. The buffer is shared with the
// consumer (storage::ArenaView) once done.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"

namespace romulus::replica {

class ImageCopy {
 public:
  // Bytes copied per step().
  static constexpr size_t kSliceBytes = size_t{8} << 20;

  // A copy of `image` (bytes, whole pages) at `epoch`; nothing copied yet.
  static Result<std::unique_ptr<ImageCopy>> start(const uint8_t* image, size_t bytes,
                                                  uint64_t epoch);
  ~ImageCopy();
  ImageCopy(const ImageCopy&) = delete;
  ImageCopy& operator=(const ImageCopy&) = delete;

  // Copies the next slice; true once the copy is complete.
  bool step();
  // Copies whatever is left now.
  void finish();
  // The image's page `pfn` is about to change: keeps its current content.
  void before_overwrite(uint64_t pfn);

  bool done() const { return next_ >= bytes_; }
  uint64_t epoch() const { return epoch_; }
  size_t bytes() const { return bytes_; }
  // The copy (when done); shared, released when the last holder lets go.
  std::shared_ptr<const uint8_t> data() const { return data_; }

 private:
  ImageCopy(const uint8_t* image, size_t bytes, uint64_t epoch, std::shared_ptr<uint8_t> data)
      : image_(image),
        bytes_(bytes),
        epoch_(epoch),
        data_(std::move(data)),
        early_(bytes / 4096, false) {}
  void copy_page(size_t page);

  const uint8_t* image_;
  size_t bytes_;
  uint64_t epoch_;
  std::shared_ptr<uint8_t> data_;
  size_t next_ = 0;          // bytes [0, next_) copied in order
  std::vector<bool> early_;  // pages at or past next_ copied before they were overwritten
};

}  // namespace romulus::replica
