// BufferPool: buffers come back with their memory, and the transport returns them.
#include "checkpoint/buffer_pool.h"

#include <gtest/gtest.h>

#include <memory>

#include "checkpoint/transport.h"
#include "tests/support/status_matchers.h"

namespace romulus::checkpoint::buffer_pool_test {
namespace {

TEST(BufferPool, TakeGivesAnEmptyBufferWithTheCapacityAsked) {
  BufferPool pool;
  protocol::Bytes b = pool.take(1 << 20);
  EXPECT_TRUE(b.empty());
  EXPECT_GE(b.capacity(), size_t{1} << 20);
}

TEST(BufferPool, AGivenBufferIsReusedWithItsMemory) {
  BufferPool pool;
  protocol::Bytes b = pool.take(1 << 20);
  b.assign(1000, 7);
  const uint8_t* mem = b.data();
  pool.give(std::move(b));
  protocol::Bytes again = pool.take(1 << 19);
  EXPECT_EQ(again.data(), mem);
  EXPECT_TRUE(again.empty());
  EXPECT_EQ(pool.stats().reused, 1u);
  EXPECT_EQ(pool.stats().allocated, 1u);
}

TEST(BufferPool, SmallBuffersAreNotKeptAndThePoolIsBounded) {
  BufferPool pool(/*max_buffers=*/2, /*min_keep_bytes=*/4096);
  pool.give(protocol::Bytes(100));
  EXPECT_EQ(pool.pooled(), 0u);
  for (int i = 0; i < 3; ++i) pool.give(protocol::Bytes(8192));
  EXPECT_EQ(pool.pooled(), 2u);
}

TEST(BufferPool, NullTransportGivesSentBuffersBack) {
  auto pool = std::make_shared<BufferPool>();
  NullTransport transport;
  transport.set_buffer_pool(pool);
  protocol::Bytes b = pool->take(1 << 20);
  b.assign(10, 1);
  const uint8_t* mem = b.data();
  ASSERT_OK(transport.send(std::move(b)));
  EXPECT_EQ(transport.bytes(), 10u);
  EXPECT_EQ(pool->take(1 << 20).data(), mem);
}

}  // namespace
}  // namespace romulus::checkpoint::buffer_pool_test
