// The page predicates every layer uses: pages_equal and is_zero_page.
#include <gtest/gtest.h>

#include <vector>

#include "protocol/page_compare.h"

namespace romulus::protocol::page_predicates_test {
namespace {

TEST(PageHelpers, ZeroPageDetectsEveryNonZeroByte) {
  std::vector<uint8_t> page(4096 + 1, 0);
  for (size_t misalign = 0; misalign < 2; ++misalign) {
    uint8_t* p = page.data() + misalign;
    EXPECT_TRUE(is_zero_page(p));
    for (size_t i = 0; i < 4096; ++i) {
      p[i] = 0x80;
      ASSERT_FALSE(is_zero_page(p)) << "byte " << i;
      p[i] = 0;
    }
  }
}

TEST(PageHelpers, PagesEqualDetectsEveryDifferingByteAtAnyAlignment) {
  std::vector<uint8_t> abuf(4096 + 1, 0x11), bbuf(4096 + 1, 0x11);
  for (size_t misalign = 0; misalign < 2; ++misalign) {
    const uint8_t* a = abuf.data() + misalign;
    uint8_t* b = bbuf.data() + misalign;
    EXPECT_TRUE(pages_equal(a, b));
    for (size_t i = 0; i < 4096; ++i) {
      b[i] ^= 1;
      ASSERT_FALSE(pages_equal(a, b)) << "byte " << i << " misalign " << misalign;
      b[i] ^= 1;
    }
  }
}

}  // namespace
}  // namespace romulus::protocol::page_predicates_test
