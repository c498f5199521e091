// The guest SDK without a supervisor: a private arena, so the program runs alone.
// (attach() is once per process: the ROMULUS_ARENA_SIZE case runs a child guest.)
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "guest/guest.h"
#include "guest/romulus_guest.h"
#include "tests/support/guest_paths.h"
#include "tests/support/status_matchers.h"

namespace romulus::guest::private_arena_test {
namespace {

TEST(PrivateArena, AttachWithoutSupervisorGivesAPrivateArena) {
  ASSERT_EQ(std::getenv(kEnvArenaFd), nullptr) << "run this test outside a supervisor";
  auto arena = attach();
  ASSERT_OK(arena);
  EXPECT_FALSE(arena->supervised());
  EXPECT_FALSE(arena->resumed());
  EXPECT_FALSE(arena->resumed_epoch().has_value());
  EXPECT_EQ(arena->tracker(), "none");
  EXPECT_EQ(arena->size(), kPrivateArenaDefaultSize);
  arena->base()[arena->size() - 1] = 1;  // the whole range is usable
}

TEST(PrivateArena, AttachIsIdempotent) {
  auto a = attach();
  auto b = attach();
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_EQ(a->base(), b->base());
}

TEST(PrivateArena, SegmentAllocatesNamedObjects) {
  auto arena = attach();
  ASSERT_OK(arena);
  auto* v = arena->segment().find_or_construct<uint64_t>("answer")(42);
  EXPECT_EQ(*arena->segment().find<uint64_t>("answer").first, 42u);
  EXPECT_GE(reinterpret_cast<uint8_t*>(v), arena->base());
  EXPECT_LT(reinterpret_cast<uint8_t*>(v), arena->base() + arena->size());
}

TEST(PrivateArena, UpdatesNestAndCostNothingAlone) {
  ASSERT_OK(attach());
  for (int i = 0; i < 1000; ++i) {
    Update outer;
    Update inner;
  }
  update_begin();
  update_begin();
  update_end();
  update_end();
}

TEST(PrivateArena, CInterfaceSeesTheSameArena) {
  ASSERT_EQ(romulus_attach(), 0);
  auto arena = attach();
  ASSERT_OK(arena);
  EXPECT_EQ(romulus_arena_base(), arena->base());
  EXPECT_EQ(romulus_arena_size(), arena->size());
  EXPECT_EQ(romulus_resumed(), 0);
  romulus_update_begin();
  romulus_update_end();
}

TEST(PrivateArena, ArenaSizeComesFromTheEnvironment) {
  std::string cmd = "printf 'info\\nw 0 4096 1\\n' | ROMULUS_ARENA_SIZE=1048576 '" +
                    romulus::testing::testguest_path() + "'";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[256] = {0};
  ASSERT_NE(std::fgets(line, sizeof(line), p), nullptr);
  std::string info = line;
  EXPECT_NE(info.find("size=1048576 resumed=0 tracker=none"), std::string::npos) << info;
  ASSERT_NE(std::fgets(line, sizeof(line), p), nullptr);
  EXPECT_EQ(std::string(line), "ok\n");
  EXPECT_EQ(pclose(p), 0);
}

TEST(PrivateArena, ExampleGuestsRunAlone) {
  std::string cmd = "'" + romulus::testing::counter_path() + "' --max 1000";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[256] = {0};
  ASSERT_NE(std::fgets(line, sizeof(line), p), nullptr);
  EXPECT_EQ(std::string(line), "romulus-counter: value 1000\n");
  EXPECT_EQ(pclose(p), 0);
  cmd = "'" + romulus::testing::dirtier_path() + "' --seconds 0.1 --span 64 --update";
  p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  ASSERT_NE(std::fgets(line, sizeof(line), p), nullptr);
  EXPECT_EQ(std::string(line).rfind("romulus-dirtier: ", 0), 0u) << line;
  EXPECT_EQ(pclose(p), 0);
}

}  // namespace
}  // namespace romulus::guest::private_arena_test
