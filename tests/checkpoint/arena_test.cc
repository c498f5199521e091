// SharedMemory (memfd + MAP_SHARED) and the page helpers.
#include "checkpoint/arena.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

namespace romulus::checkpoint {
namespace {

TEST(SharedMemory, CreateGivesZeroedMemoryOfTheRequestedSize) {
  auto m = SharedMemory::create("t", 16 * 4096);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->size(), 16u * 4096);
  EXPECT_EQ(m->pages(), 16u);
  EXPECT_GE(m->fd(), 0);
  for (size_t i = 0; i < m->size(); ++i) ASSERT_EQ(m->data()[i], 0);
}

TEST(SharedMemory, RejectsSizesThatAreNotWholePages) {
  EXPECT_EQ(SharedMemory::create("t", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SharedMemory::create("t", 4097).status().code(), StatusCode::kInvalidArgument);
}

TEST(SharedMemory, TwoMappingsOfOneFdShareBytes) {
  auto a = SharedMemory::create("t", 4 * 4096);
  ASSERT_TRUE(a.is_ok());
  auto b = SharedMemory::adopt(dup(a->fd()));  // size from the file
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->size(), a->size());
  a->data()[5000] = 7;
  EXPECT_EQ(b->data()[5000], 7);
  b->data()[3] = 9;
  EXPECT_EQ(a->data()[3], 9);
}

TEST(SharedMemory, MoveTransfersOwnership) {
  auto a = SharedMemory::create("t", 4096);
  ASSERT_TRUE(a.is_ok());
  uint8_t* data = a->data();
  SharedMemory b = std::move(a).value();
  EXPECT_EQ(b.data(), data);
  SharedMemory c;
  EXPECT_EQ(c.data(), nullptr);
  c = std::move(b);
  EXPECT_EQ(c.data(), data);
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  c.data()[0] = 1;
}

TEST(SharedMemory, AdoptOfABadFdFails) { EXPECT_FALSE(SharedMemory::adopt(-1).is_ok()); }

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

TEST(PageHelpers, PagesEqualDetectsEveryDifferingByte) {
  std::vector<uint8_t> a(4096, 0x11), b(4096, 0x11);
  EXPECT_TRUE(pages_equal(a.data(), b.data()));
  for (size_t i = 0; i < 4096; ++i) {
    b[i] ^= 1;
    ASSERT_FALSE(pages_equal(a.data(), b.data())) << "byte " << i;
    b[i] ^= 1;
  }
}

}  // namespace
}  // namespace romulus::checkpoint
