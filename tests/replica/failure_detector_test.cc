// The backup's failure detector, driven by a fake clock: when is the primary lost?
#include "replica/failure_detector.h"

#include <gtest/gtest.h>

namespace romulus::replica::failure_detector_test {
namespace {

using namespace std::chrono_literals;
using Clock = FailureDetector::Clock;
using Verdict = FailureDetector::Verdict;
using StreamEnd = FailureDetector::StreamEnd;

class FailureDetectorTest : public ::testing::Test {
 protected:
  FailureDetector d{500ms};
  Clock::time_point t0 = Clock::time_point{} + 1000s;  // any fixed instant
};

TEST_F(FailureDetectorTest, NoStreamYetIsNeverALoss) {
  EXPECT_EQ(d.judge(t0).verdict, Verdict::kNoPrimary);
  EXPECT_EQ(d.judge(t0 + 1h).verdict, Verdict::kNoPrimary);
}

TEST_F(FailureDetectorTest, AStreamWithRecentContactIsAlive) {
  d.on_stream_started(t0);
  d.on_contact(t0 + 400ms);
  const auto j = d.judge(t0 + 800ms);
  EXPECT_EQ(j.verdict, Verdict::kAlive);
  EXPECT_EQ(j.remaining, 100ms);
}

TEST_F(FailureDetectorTest, HeartbeatSilenceLongerThanTheTimeoutIsALoss) {
  d.on_stream_started(t0);
  d.on_contact(t0 + 100ms);
  EXPECT_EQ(d.judge(t0 + 600ms).verdict, Verdict::kAlive);  // exactly the timeout: not yet
  const auto j = d.judge(t0 + 601ms);
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_EQ(j.reason, "silent for 501 ms");
}

TEST_F(FailureDetectorTest, ConnectionClosedWithoutGoodbyeIsALossAtOnce) {
  d.on_stream_started(t0);
  d.on_stream_ended(StreamEnd::kClosed, t0 + 10ms, "End of file");
  const auto j = d.judge(t0 + 10ms);
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_EQ(j.reason, "connection closed without GOODBYE (End of file)");
}

TEST_F(FailureDetectorTest, ConnectionResetIsALossAtOnce) {
  d.on_stream_started(t0);
  d.on_stream_ended(StreamEnd::kReset, t0 + 10ms);
  EXPECT_EQ(d.judge(t0 + 10ms).verdict, Verdict::kLost);
}

TEST_F(FailureDetectorTest, ConnectionClosedAfterGoodbyeIsNeverALoss) {
  d.on_stream_started(t0);
  d.on_goodbye(t0 + 10ms);
  d.on_stream_ended(StreamEnd::kClosed, t0 + 11ms);
  EXPECT_EQ(d.judge(t0 + 11ms).verdict, Verdict::kStopped);
  EXPECT_EQ(d.judge(t0 + 1h).verdict, Verdict::kStopped);
}

TEST_F(FailureDetectorTest, GoodbyeWithTheSocketLeftOpenIsNeverALoss) {
  // Regression: the silence watchdog used to take over 500 ms after a GOODBYE
  // whose sender kept the socket open.
  d.on_stream_started(t0);
  d.on_goodbye(t0 + 10ms);
  EXPECT_EQ(d.judge(t0 + 10s).verdict, Verdict::kStopped);
}

TEST_F(FailureDetectorTest, DroppedByThePrimaryIsNeverALoss) {
  // Regression: a primary that gave up on a silent backup closed its socket,
  // and the backup took the EOF for a crash and took over at once.
  d.on_stream_started(t0);
  d.on_dropped(t0 + 10ms);
  d.on_stream_ended(StreamEnd::kClosed, t0 + 12ms);
  EXPECT_EQ(d.judge(t0 + 12ms).verdict, Verdict::kDroppedUs);
  EXPECT_EQ(d.judge(t0 + 1h).verdict, Verdict::kDroppedUs);
}

TEST_F(FailureDetectorTest, AStreamTheBackupEndedWaitsForAReconnect) {
  d.on_stream_started(t0);
  d.on_stream_ended(StreamEnd::kEndedByBackup, t0 + 100ms, "checkpoint discarded");
  auto j = d.judge(t0 + 300ms);
  EXPECT_EQ(j.verdict, Verdict::kWaiting);
  EXPECT_EQ(j.remaining, 300ms);
  j = d.judge(t0 + 601ms);
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_NE(j.reason.find("did not reconnect within 500 ms"), std::string::npos) << j.reason;
}

TEST_F(FailureDetectorTest, AReconnectWithinTheTimeoutIsAlive) {
  d.on_stream_started(t0);
  d.on_stream_ended(StreamEnd::kEndedByBackup, t0 + 100ms);
  d.on_stream_started(t0 + 400ms);
  EXPECT_EQ(d.judge(t0 + 800ms).verdict, Verdict::kAlive);
}

TEST_F(FailureDetectorTest, AStreamAfterGoodbyeIsWatchedAgain) {
  d.on_stream_started(t0);
  d.on_goodbye(t0 + 10ms);
  d.on_stream_started(t0 + 1s);
  EXPECT_EQ(d.judge(t0 + 1s + 501ms).verdict, Verdict::kLost);
}

TEST_F(FailureDetectorTest, AHalfOpenHandshakeIsNotContact) {
  // The node reports only accepted streams: connections stuck in their
  // handshake never reach the detector, so the wait for a lost primary to
  // reconnect is not restarted by them.
  d.on_stream_started(t0);
  d.on_stream_ended(StreamEnd::kEndedByBackup, t0 + 100ms);
  d.on_contact(t0 + 500ms);  // bytes outside a stream are ignored
  EXPECT_EQ(d.judge(t0 + 601ms).verdict, Verdict::kLost);
}

TEST_F(FailureDetectorTest, SilenceJudgedByTheBackupIsALoss) {
  d.on_stream_started(t0);
  d.on_stream_ended(StreamEnd::kSilent, t0 + 700ms);
  const auto j = d.judge(t0 + 700ms);
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_EQ(j.reason, "silent for 700 ms");
}

TEST_F(FailureDetectorTest, EndsAfterGoodbyeOrDroppedChangeNothing) {
  d.on_stream_started(t0);
  d.on_goodbye(t0 + 1ms);
  d.on_stream_ended(StreamEnd::kReset, t0 + 2ms);
  EXPECT_EQ(d.judge(t0 + 3ms).verdict, Verdict::kStopped);
}

TEST_F(FailureDetectorTest, HandoverIsALossAtOnceWithEvidenceThatThePrimaryIsGone) {
  d.on_stream_started(t0);
  d.on_handover(t0 + 5ms);
  auto j = d.judge(t0 + 5ms);
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_TRUE(j.exited);
  EXPECT_NE(j.reason.find("HANDOVER"), std::string::npos);
  d.on_stream_ended(StreamEnd::kHandover, t0 + 6ms);  // its socket closing changes nothing
  j = d.judge(t0 + 6ms);
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_TRUE(j.exited);
}

TEST_F(FailureDetectorTest, AFinOrAResetFromThePrimarysHostIsEvidenceThatItExited) {
  for (StreamEnd how : {StreamEnd::kClosed, StreamEnd::kReset}) {
    FailureDetector f(500ms);
    f.on_stream_started(t0);
    f.on_stream_ended(how, t0 + 1ms);
    const auto j = f.judge(t0 + 1ms);
    EXPECT_EQ(j.verdict, Verdict::kLost);
    EXPECT_TRUE(j.exited);
  }
}

TEST_F(FailureDetectorTest, SilenceAndOtherSocketErrorsAreLossesWithoutThatEvidence) {
  for (StreamEnd how : {StreamEnd::kSilent, StreamEnd::kSocketError}) {
    FailureDetector f(500ms);
    f.on_stream_started(t0);
    f.on_stream_ended(how, t0 + 600ms);
    const auto j = f.judge(t0 + 600ms);
    EXPECT_EQ(j.verdict, Verdict::kLost);
    EXPECT_FALSE(j.exited);
  }
  d.on_stream_started(t0);
  const auto j = d.judge(t0 + 600ms);  // silent on a live stream
  EXPECT_EQ(j.verdict, Verdict::kLost);
  EXPECT_FALSE(j.exited);
}

TEST_F(FailureDetectorTest, HandoverAfterGoodbyeChangesNothing) {
  d.on_stream_started(t0);
  d.on_goodbye(t0 + 1ms);
  d.on_handover(t0 + 2ms);
  EXPECT_EQ(d.judge(t0 + 3ms).verdict, Verdict::kStopped);
}

}  // namespace
}  // namespace romulus::replica::failure_detector_test
