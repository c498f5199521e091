// ReplicaState: the backup's images and atomic commit, driven by real chunk
// streams from the writer through the incremental reader.
#include "replica/replica_state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "protocol/checkpoint_reader.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/page_cache.h"
#include "protocol/wire_format.h"
#include "tests/support/status_matchers.h"

namespace romulus::replica::replica_state_test {
namespace {

using protocol::Bytes;
using protocol::kPageSize;

constexpr uint64_t kPages = 32;

// A primary-side model: its arena, its page cache, and a framer.
struct Sender {
  std::vector<uint8_t> arena = std::vector<uint8_t>(kPages * kPageSize, 0);
  protocol::PageCache cache{1 << 20};
  protocol::CheckpointFramer framer;

  void write(uint64_t pfn, uint8_t value) {
    std::memset(arena.data() + pfn * kPageSize, value, 16);
  }
  // A unit (round or checkpoint) holding `pfns` (increasing).
  Bytes unit(uint64_t epoch, uint32_t flags, const std::vector<uint64_t>& pfns, bool format_b) {
    std::vector<uint8_t> pages;
    for (uint64_t p : pfns) {
      pages.insert(pages.end(), arena.begin() + static_cast<long>(p * kPageSize),
                   arena.begin() + static_cast<long>((p + 1) * kPageSize));
    }
    Bytes out = framer.begin(epoch, flags);
    Bytes body;
    if (format_b) {
      protocol::encode_body_format_b(pfns, pages.data(), cache, protocol::EncodeOptions{}, body,
                                     nullptr);
    } else {
      protocol::encode_body_format_a(pfns, pages.data(), body, nullptr);
    }
    framer.add_body(body, static_cast<uint32_t>(pfns.size()));
    out.insert(out.end(), body.begin(), body.end());
    Bytes end = framer.end();
    out.insert(out.end(), end.begin(), end.end());
    return out;
  }
  // Full sync of every page (Format A), then ENABLE_COMPRESSION.
  Bytes full_sync(uint64_t epoch) {
    std::vector<uint64_t> all;
    for (uint64_t p = 0; p < kPages; ++p) all.push_back(p);
    cache.clear();
    Bytes out = unit(epoch, protocol::kBeginFullSync, all, false);
    Bytes enable = protocol::encode_enable_compression();
    out.insert(out.end(), enable.begin(), enable.end());
    return out;
  }
};

bool image_equals(ReplicaState& state, const std::vector<uint8_t>& arena) {
  return std::memcmp(state.committed_image().data(), arena.data(), arena.size()) == 0;
}

TEST(ReplicaState, ConsistentCheckpointAfterSyncBecomesTheCommittedImage) {
  Sender tx;
  ReplicaState state(kPages);
  protocol::CheckpointReader reader(kPages, &state);
  tx.write(3, 0xaa);
  ASSERT_OK(reader.feed(tx.full_sync(1)));
  EXPECT_FALSE(state.has_committed()) << "a pre-copy round is not a state of the guest";
  tx.write(5, 0xbb);
  ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {5}, true)));
  ASSERT_TRUE(state.has_committed());
  EXPECT_EQ(state.committed_epoch(), 2u);
  EXPECT_TRUE(image_equals(state, tx.arena));
}

TEST(ReplicaState, CheckpointCutAtAnyByteLeavesTheImageAtTheLastCommit) {
  Sender tx;
  ReplicaState state(kPages);
  {
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    tx.write(1, 1);
    ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {1}, true)));
  }
  const std::vector<uint8_t> committed = tx.arena;
  tx.write(1, 2);
  tx.write(7, 3);
  const Bytes next = tx.unit(3, protocol::kBeginConsistent, {1, 7}, true);
  for (size_t cut = 0; cut < next.size(); ++cut) {
    protocol::CheckpointReader reader(kPages, &state);
    // The reader of a new stream must start in Format B for this unit.
    Bytes enable = protocol::encode_enable_compression();
    ASSERT_OK(reader.feed(enable));
    ASSERT_OK(reader.feed(protocol::ByteSpan(next).first(cut))) << "cut " << cut;
    state.abort_stream();
    ASSERT_EQ(state.committed_epoch(), 2u) << "cut " << cut;
    ASSERT_TRUE(image_equals(state, committed))
        << "a partial checkpoint touched the image, cut " << cut;
  }
}

// Regression: a bit flip in a checkpoint's epoch (caught later by the CRC) set
// the backup's "last epoch seen" before verification, so every later stream
// was refused as "epoch does not advance".
TEST(ReplicaState, CorruptBeginEpochDoesNotPoisonLaterStreams) {
  Sender tx;
  ReplicaState state(kPages);
  {
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {0}, true)));
  }
  {
    tx.write(4, 9);
    Bytes bad = tx.unit(3, protocol::kBeginConsistent, {4}, true);
    bad[4 + 5] ^= 0x80;  // the begin chunk's epoch (after the int32 type): now huge
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(protocol::encode_enable_compression()));
    EXPECT_FALSE(reader.feed(bad).is_ok());
    state.abort_stream();
  }
  // The primary resyncs with the next epochs; the backup must accept them.
  protocol::CheckpointReader reader(kPages, &state);
  ASSERT_OK(reader.feed(tx.full_sync(4)));
  ASSERT_OK(reader.feed(tx.unit(5, protocol::kBeginConsistent, {4}, true)));
  EXPECT_EQ(state.committed_epoch(), 5u);
  EXPECT_TRUE(image_equals(state, tx.arena));
}

// Regression: pre-copy rounds of a sync whose stream ended before its first
// consistent checkpoint still raised the epoch the next stream had to exceed,
// though the Reply tells a primary only the committed epoch: a restarted
// primary numbering from the Reply's epoch + 1 was refused ("does not
// advance") until its epochs passed rounds the backup had thrown away.
TEST(ReplicaState, AbandonedSyncRoundsDoNotRaiseTheEpochTheNextStreamMustExceed) {
  Sender tx;
  ReplicaState state(kPages);
  {
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {0}, true)));
  }
  const std::vector<uint8_t> committed = tx.arena;
  {
    protocol::CheckpointReader reader(kPages, &state);
    tx.write(6, 1);
    ASSERT_OK(reader.feed(tx.full_sync(3)));
    ASSERT_OK(reader.feed(tx.unit(4, 0, {6}, true)));  // a second pre-copy round
    state.abort_stream();  // the stream ends before the sync's consistent checkpoint
  }
  ASSERT_EQ(state.committed_epoch(), 2u);
  EXPECT_TRUE(image_equals(state, committed));
  // A new primary numbers from the Reply's committed epoch + 1.
  protocol::CheckpointReader reader(kPages, &state);
  ASSERT_OK(reader.feed(tx.full_sync(3)));
  ASSERT_OK(reader.feed(tx.unit(4, protocol::kBeginConsistent, {6}, true)));
  EXPECT_EQ(state.committed_epoch(), 4u);
  EXPECT_TRUE(image_equals(state, tx.arena));
}

// docs/protocol.md, "Epochs": within a stream epochs strictly increase, and
// across streams a full sync at or below the committed epoch is refused.
TEST(ReplicaState, EpochAtOrBelowTheCommittedOneIsRefusedAcrossStreams) {
  Sender tx;
  ReplicaState state(kPages);
  {
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    ASSERT_OK(reader.feed(tx.unit(5, protocol::kBeginConsistent, {0}, true)));
    EXPECT_FALSE(reader.feed(tx.unit(5, protocol::kBeginConsistent, {0}, true)).is_ok());
    state.abort_stream();
  }
  protocol::CheckpointReader reader(kPages, &state);
  EXPECT_FALSE(reader.feed(tx.full_sync(5)).is_ok());
  state.abort_stream();
  EXPECT_EQ(state.committed_epoch(), 5u);
}

// A pre-copy round (no kBeginConsistent) is legal only inside a full sync.
TEST(ReplicaState, PreCopyRoundOutsideAFullSyncIsRefused) {
  Sender tx;
  ReplicaState state(kPages);
  protocol::CheckpointReader reader(kPages, &state);
  ASSERT_OK(reader.feed(tx.full_sync(1)));
  ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {0}, true)));
  const Status s = reader.feed(tx.unit(3, 0, {0}, true));
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("pre-copy round outside a full sync"), std::string::npos)
      << s.message();
}

TEST(ReplicaState, ResyncKeepsTheOldImageUntilItsFirstCheckpointCommits) {
  Sender tx;
  ReplicaState state(kPages);
  {
    protocol::CheckpointReader reader(kPages, &state);
    tx.write(2, 7);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {2}, true)));
  }
  const std::vector<uint8_t> old_image = tx.arena;
  protocol::CheckpointReader reader(kPages, &state);
  tx.write(9, 1);
  ASSERT_OK(reader.feed(tx.full_sync(3)));
  EXPECT_EQ(state.committed_epoch(), 2u);
  EXPECT_TRUE(image_equals(state, old_image)) << "a re-sync round overwrote the committed image";
  ASSERT_OK(reader.feed(tx.unit(4, protocol::kBeginConsistent, {9}, true)));
  EXPECT_EQ(state.committed_epoch(), 4u);
  EXPECT_TRUE(image_equals(state, tx.arena));
}

TEST(ReplicaState, OnlyConsistentCheckpointsAreReportedAsCommitted) {
  Sender tx;
  ReplicaState state(kPages);
  std::vector<std::pair<uint64_t, bool>> committed;
  state.on_committed = [&](uint64_t e, bool consistent) { committed.emplace_back(e, consistent); };
  protocol::CheckpointReader reader(kPages, &state);
  ASSERT_OK(reader.feed(tx.full_sync(1)));
  ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {0}, true)));
  ASSERT_EQ(committed.size(), 2u);
  EXPECT_FALSE(committed[0].second);
  EXPECT_TRUE(committed[1].second);
}

TEST(ReplicaState, CheckpointWithoutASyncIsRejected) {
  Sender tx;
  ReplicaState state(kPages);
  protocol::CheckpointReader reader(kPages, &state);
  ASSERT_OK(reader.feed(protocol::encode_enable_compression()));
  EXPECT_FALSE(reader.feed(tx.unit(1, protocol::kBeginConsistent, {0}, true)).is_ok());
  EXPECT_FALSE(state.has_committed());
}

}  // namespace
}  // namespace romulus::replica::replica_state_test
