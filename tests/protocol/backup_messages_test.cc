#include "protocol/backup_messages.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "protocol/checkpoint_writer.h"
#include "protocol/wire_format.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::backup_messages_test {
namespace {

Bytes sample_stream() {
  Bytes s;
  put_bytes(s, encode_ack(7));
  put_bytes(s, encode_backup_heartbeat(123456789));
  put_bytes(s, encode_ack(8));
  put_bytes(s, encode_error(Status::corrupt("checkpoint 9: CRC mismatch")));
  return s;
}

std::vector<BackupMessage> expected_messages() {
  return {
      {BackupMessage::Kind::kAck, 7, Status::ok()},
      {BackupMessage::Kind::kHeartbeat, 123456789, Status::ok()},
      {BackupMessage::Kind::kAck, 8, Status::ok()},
      {BackupMessage::Kind::kError, 0, Status::corrupt("checkpoint 9: CRC mismatch")},
  };
}

TEST(BackupMessages, AckBytesAreAsDocumented) {
  const Bytes expected = {0x92, 0xff, 0xff, 0xff, 0x11, 0, 0, 0, 0, 0, 0, 0};  // -110, epoch 17
  EXPECT_EQ(encode_ack(17), expected);
}

TEST(BackupMessages, HeartbeatIsTheSameChunkAsThePrimarys) {
  EXPECT_EQ(encode_backup_heartbeat(42), encode_heartbeat(42));
}

TEST(BackupMessages, ErrorBytesAreAsDocumented) {
  const Bytes expected = {0x91, 0xff, 0xff, 0xff,  // -111
                          0x01, 0x00, 0x00, 0x00,  // kCorrupt
                          0x02, 0x00, 'n',  'o'};
  EXPECT_EQ(encode_error(Status::corrupt("no")), expected);
}

TEST(BackupMessages, RoundTripAllAtOnce) {
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  ASSERT_OK(reader.feed(sample_stream(), &got));
  EXPECT_EQ(got, expected_messages());
  EXPECT_FALSE(reader.has_partial());
  EXPECT_EQ(reader.bytes_consumed(), sample_stream().size());
}

TEST(BackupMessages, AnySplitGivesTheSameMessages) {
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  SCOPED_TRACE(seed);
  std::mt19937 rng(seed);
  const Bytes stream = sample_stream();
  for (int round = 0; round < 200; ++round) {
    BackupMessageReader reader;
    std::vector<BackupMessage> got;
    ByteSpan rest(stream);
    const size_t max_piece = round == 0 ? 1 : 1 + rng() % 20;
    while (!rest.empty()) {
      const size_t n = std::min<size_t>(rest.size(), 1 + rng() % max_piece);
      ASSERT_OK(reader.feed(rest.first(n), &got));
      rest = rest.subspan(n);
    }
    EXPECT_EQ(got, expected_messages());
    EXPECT_FALSE(reader.has_partial());
  }
}

TEST(BackupMessages, IncompleteMessageIsHeld) {
  const Bytes ack = encode_ack(3);
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  ASSERT_OK(reader.feed(ByteSpan(ack).first(5), &got));
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(reader.has_partial());
}

TEST(BackupMessages, OkStatusIsSentAsAborted) {
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  ASSERT_OK(reader.feed(encode_error(Status::ok()), &got));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].error.code(), StatusCode::kAborted);
}

TEST(BackupMessages, LongErrorTextIsCut) {
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  ASSERT_OK(reader.feed(encode_error(Status::io_error(std::string(5000, 'x'))), &got));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].error.message().size(), kMaxRefusalReason);
}

TEST(BackupMessages, UnknownTypeIsCorruptAndSticks) {
  Bytes s = encode_ack(1);
  put_i32(s, -5);
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  const Status first = reader.feed(s, &got);
  EXPECT_EQ(first.code(), StatusCode::kCorrupt);
  EXPECT_NE(first.message().find("unknown type -5"), std::string::npos);
  EXPECT_EQ(got.size(), 1u);  // the ACK before the damage
  EXPECT_EQ(reader.feed(encode_ack(2), &got), first);
  EXPECT_EQ(got.size(), 1u);
}

TEST(BackupMessages, UnknownStatusCodeIsCorrupt) {
  Bytes s = encode_error(Status::corrupt("x"));
  store_u32(s.data() + 4, 99);
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  EXPECT_EQ(reader.feed(s, &got).code(), StatusCode::kCorrupt);
  store_u32(s.data() + 4, 0);  // OK is not an error
  BackupMessageReader reader2;
  EXPECT_EQ(reader2.feed(s, &got).code(), StatusCode::kCorrupt);
}

TEST(BackupMessages, OversizeErrorTextIsRejectedBeforeWaitingForIt) {
  Bytes s;
  put_i32(s, kChunkError);
  put_u32(s, static_cast<uint32_t>(StatusCode::kCorrupt));
  put_u16(s, kMaxRefusalReason + 1);
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  const Status st = reader.feed(s, &got);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("exceeds limit"), std::string::npos);
}

TEST(BackupMessages, PrimaryOnlyChunksAreNotBackupMessages) {
  BackupMessageReader reader;
  std::vector<BackupMessage> got;
  EXPECT_EQ(reader.feed(encode_goodbye(), &got).code(), StatusCode::kCorrupt);
  BackupMessageReader reader2;
  EXPECT_EQ(reader2.feed(encode_handover(), &got).code(), StatusCode::kCorrupt);
}

}  // namespace
}  // namespace romulus::protocol::backup_messages_test
