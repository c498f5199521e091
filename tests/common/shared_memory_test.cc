// SharedMemory (memfd + MAP_SHARED).
#include "common/shared_memory.h"
#include "tests/support/status_matchers.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace romulus::common::shared_memory_test {
namespace {

TEST(SharedMemory, CreateGivesZeroedMemoryOfTheRequestedSize) {
  auto m = SharedMemory::create("t", 16 * 4096);
  ASSERT_OK(m);
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
  ASSERT_OK(a);
  auto b = SharedMemory::adopt(dup(a->fd()));  // size from the file
  ASSERT_OK(b);
  EXPECT_EQ(b->size(), a->size());
  a->data()[5000] = 7;
  EXPECT_EQ(b->data()[5000], 7);
  b->data()[3] = 9;
  EXPECT_EQ(a->data()[3], 9);
}

TEST(SharedMemory, MoveTransfersOwnership) {
  auto a = SharedMemory::create("t", 4096);
  ASSERT_OK(a);
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

}  // namespace
}  // namespace romulus::common::shared_memory_test
