// ImageCopy: a slice-at-a-time copy of the committed image that keeps every
// page as it was when the copy started, however the image changes meanwhile.
#include "replica/image_copy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::replica::image_copy_test {
namespace {

constexpr size_t kPage = 4096;

TEST(ImageCopy, PagesOverwrittenDuringTheCopyKeepTheirContentAtItsEpoch) {
  // Three slices and a bit, so that overwrites land before, in and after the
  // slice being copied.
  const size_t pages = 3 * ImageCopy::kSliceBytes / kPage + 7;
  std::vector<uint8_t> image(pages * kPage);
  for (size_t p = 0; p < pages; ++p) std::memset(image.data() + p * kPage, int(p % 251), kPage);
  const std::vector<uint8_t> at_start = image;
  auto copy = ImageCopy::start(image.data(), image.size(), 42);
  ASSERT_OK(copy);
  std::mt19937_64 rng(7);
  std::printf("seed 7\n");
  while (!(*copy)->done()) {
    for (int i = 0; i < 200; ++i) {
      const uint64_t pfn = rng() % pages;
      (*copy)->before_overwrite(pfn);  // as ReplicaState does before it applies a page
      std::memset(image.data() + pfn * kPage, 0xEE, kPage);
    }
    (*copy)->step();
  }
  EXPECT_EQ((*copy)->epoch(), 42u);
  EXPECT_EQ(std::memcmp((*copy)->data().get(), at_start.data(), at_start.size()), 0)
      << "the copy is the image as it was at its epoch";
}

TEST(ImageCopy, FinishCopiesTheRestAtOnce) {
  std::vector<uint8_t> image(2 * ImageCopy::kSliceBytes, 0x11);
  auto copy = ImageCopy::start(image.data(), image.size(), 1);
  ASSERT_OK(copy);
  EXPECT_FALSE((*copy)->step());
  (*copy)->finish();
  EXPECT_TRUE((*copy)->done());
  EXPECT_EQ(std::memcmp((*copy)->data().get(), image.data(), image.size()), 0);
}

TEST(ImageCopy, RefusesAnImageOfNoWholePages) {
  std::vector<uint8_t> image(kPage + 1);
  EXPECT_FALSE(ImageCopy::start(image.data(), image.size(), 1).is_ok());
}

}  // namespace
}  // namespace romulus::replica::image_copy_test
