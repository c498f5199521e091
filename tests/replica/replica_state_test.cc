// ReplicaState: the backup's images and atomic commit, driven by real chunk
// streams from the writer through the incremental reader.
#include "replica/replica_state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "protocol/checkpoint_reader.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/device_state_codec.h"
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

TEST(ReplicaState, AnImageReadBackFromDiskIsCommittedAndTheNextStreamMustExceedItsEpoch) {
  ReplicaState state(kPages);
  auto image = common::SharedMemory::create("replica-state-test", kPages * kPageSize);
  ASSERT_OK(image);
  std::memset(image->data() + 4 * kPageSize, 0x44, kPageSize);
  state.adopt_committed(std::move(image).value(), 9);
  ASSERT_TRUE(state.has_committed());
  EXPECT_EQ(state.committed_epoch(), 9u);
  EXPECT_EQ(state.committed_image().data()[4 * kPageSize], 0x44);
  Sender tx;
  protocol::CheckpointReader reader(kPages, &state);
  EXPECT_FALSE(reader.feed(tx.full_sync(9)).is_ok()) << "epoch 9 is the disk image's";
  protocol::CheckpointReader again(kPages, &state);
  state.abort_stream();
  ASSERT_OK(again.feed(tx.full_sync(10)));
  ASSERT_OK(again.feed(tx.unit(11, protocol::kBeginConsistent, {2}, true)));
  EXPECT_EQ(state.committed_epoch(), 11u);
  EXPECT_TRUE(image_equals(state, tx.arena)) << "the full sync replaced the disk image";
}

// A VM's device state (DEVICE_STATE) commits with its checkpoint, or not at all.
struct VmSender : Sender {
  std::optional<Bytes> previous;  // the device state sent last in this stream
  // The unit with `devices` right after its begin, as the primary sends it.
  Bytes vm_unit(uint64_t epoch, const std::vector<uint64_t>& pfns, const Bytes& devices) {
    Bytes u = unit(epoch, protocol::kBeginConsistent, pfns, true);
    Bytes chunk = protocol::encode_device_state(protocol::encode_device_state_payload(
        devices, previous ? std::optional<protocol::ByteSpan>(*previous) : std::nullopt));
    previous = devices;
    // Re-frame: begin, DEVICE_STATE, then the body and a tail over all of it.
    protocol::CheckpointFramer f;
    Bytes out = f.begin(epoch, protocol::kBeginConsistent);
    f.add_body(chunk, 0);
    out.insert(out.end(), chunk.begin(), chunk.end());
    const size_t begin_len = 16, end_len = 20;
    Bytes body(u.begin() + begin_len, u.end() - end_len);
    f.add_body(body, static_cast<uint32_t>(pfns.size()));
    out.insert(out.end(), body.begin(), body.end());
    Bytes end = f.end();
    out.insert(out.end(), end.begin(), end.end());
    return out;
  }
};

TEST(ReplicaState, AVmsDeviceStateCommitsWithItsCheckpointAndACutOneLeavesTheOldOne) {
  VmSender tx;
  ReplicaState state(kPages, /*vm=*/true);
  {
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    tx.write(2, 7);
    ASSERT_OK(reader.feed(tx.vm_unit(2, {2}, Bytes{'a', 'b'})));
  }
  EXPECT_EQ(state.committed_device_state(), (std::vector<uint8_t>{'a', 'b'}));
  tx.write(4, 9);
  const Bytes next = tx.vm_unit(3, {4}, Bytes{'c', 'd', 'e'});
  for (size_t cut = 0; cut < next.size(); ++cut) {
    protocol::CheckpointReader reader(kPages, &state);
    ASSERT_OK(reader.feed(protocol::encode_enable_compression()));
    ASSERT_OK(reader.feed(protocol::ByteSpan(next).first(cut)));
    state.abort_stream();
    ASSERT_EQ(state.committed_device_state(), (std::vector<uint8_t>{'a', 'b'})) << "cut " << cut;
  }
  protocol::CheckpointReader reader(kPages, &state);
  ASSERT_OK(reader.feed(protocol::encode_enable_compression()));
  ASSERT_OK(reader.feed(next));
  EXPECT_EQ(state.committed_epoch(), 3u);
  EXPECT_EQ(state.committed_device_state(), (std::vector<uint8_t>{'c', 'd', 'e'}));
}

TEST(ReplicaState, DeviceStateAndVmMustAgree) {
  VmSender tx;
  {
    ReplicaState process(kPages, /*vm=*/false);
    protocol::CheckpointReader reader(kPages, &process);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    const Status st = reader.feed(tx.vm_unit(2, {0}, Bytes{1}));
    EXPECT_NE(st.message().find("not started with --vm"), std::string::npos) << st.message();
    EXPECT_FALSE(process.has_committed());
  }
  {
    ReplicaState vm(kPages, /*vm=*/true);
    protocol::CheckpointReader reader(kPages, &vm);
    ASSERT_OK(reader.feed(tx.full_sync(1)));
    const Status st = reader.feed(tx.unit(2, protocol::kBeginConsistent, {0}, true));
    EXPECT_NE(st.message().find("carries no device state"), std::string::npos) << st.message();
    EXPECT_FALSE(vm.has_committed());
  }
}

// Sees the unit in flight as the backup does at END, before it is applied.
struct PeekingSink final : protocol::CheckpointSink {
  explicit PeekingSink(ReplicaState& s) : state(s) {}
  Status on_begin(uint64_t epoch, uint32_t flags) override { return state.on_begin(epoch, flags); }
  protocol::MutablePageView page_for(uint64_t pfn, bool needs_current) override {
    return state.page_for(pfn, needs_current);
  }
  Status on_end(uint64_t epoch, uint32_t page_count) override {
    pfns.assign(state.unit_pfns().begin(), state.unit_pfns().end());
    first_bytes.clear();
    for (size_t i = 0; i < pfns.size(); ++i)
      first_bytes.push_back(state.unit_pages()[i * kPageSize]);
    ends_sync = state.unit_ends_sync();
    return state.on_end(epoch, page_count);
  }
  ReplicaState& state;
  std::vector<uint64_t> pfns;
  std::vector<uint8_t> first_bytes;
  bool ends_sync = false;
};

TEST(ReplicaState, TheVerifiedCheckpointShowsItsPagesAndWhetherItEndsASync) {
  Sender tx;
  ReplicaState state(kPages);
  PeekingSink sink(state);
  protocol::CheckpointReader reader(kPages, &sink);
  ASSERT_OK(reader.feed(tx.full_sync(1)));
  tx.write(3, 0x33);
  ASSERT_OK(reader.feed(tx.unit(2, protocol::kBeginConsistent, {3}, true)));
  EXPECT_TRUE(sink.ends_sync) << "the sync's first checkpoint replaces the whole image";
  tx.write(5, 0x55);
  tx.write(9, 0x99);
  ASSERT_OK(reader.feed(tx.unit(3, protocol::kBeginConsistent, {5, 9}, true)));
  EXPECT_FALSE(sink.ends_sync);
  EXPECT_EQ(sink.pfns, (std::vector<uint64_t>{5, 9}));
  EXPECT_EQ(sink.first_bytes, (std::vector<uint8_t>{0x55, 0x99}));
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
