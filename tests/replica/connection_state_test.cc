// A backup connection's states: the legal paths apply, anything else is refused and logged.
#include "replica/connection_state.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace romulus::replica::connection_state_test {
namespace {

using S = ConnectionState;

struct Log {
  std::vector<std::string> lines;
  auto fn() {
    return [this](const std::string& l) { lines.push_back(l); };
  }
};

TEST(ConnectionStateMachine, AnAcceptedStreamEndsWithAnErrorThenCloses) {
  Log log;
  common::StateMachine<S> m(S::kHandshaking, log.fn());
  EXPECT_TRUE(m.transition(S::kStreaming));
  EXPECT_TRUE(m.transition(S::kEnding));
  EXPECT_TRUE(m.transition(S::kClosed));
  EXPECT_TRUE(log.lines.empty());
}

TEST(ConnectionStateMachine, ARefusedHandshakeEndsWithoutStreaming) {
  Log log;
  common::StateMachine<S> m(S::kHandshaking, log.fn());
  EXPECT_TRUE(m.transition(S::kEnding));
  EXPECT_FALSE(m.transition(S::kStreaming));
  EXPECT_EQ(m.state(), S::kEnding);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0],
            "BUG: illegal backup connection state transition ending -> streaming refused");
}

TEST(ConnectionStateMachine, EveryStateButClosedCanClose) {
  for (const S from : {S::kHandshaking, S::kStreaming, S::kEnding}) {
    Log log;
    common::StateMachine<S> m(from, log.fn());
    EXPECT_TRUE(m.transition(S::kClosed)) << common::StateTraits<S>::name(from);
    EXPECT_TRUE(log.lines.empty());
  }
}

TEST(ConnectionStateMachine, ClosedIsFinal) {
  for (const S to : {S::kHandshaking, S::kStreaming, S::kEnding}) {
    Log log;
    common::StateMachine<S> m(S::kClosed, log.fn());
    EXPECT_FALSE(m.transition(to)) << common::StateTraits<S>::name(to);
    EXPECT_EQ(m.state(), S::kClosed);
  }
}

TEST(ConnectionStateMachine, AStreamNeverGoesBackToItsHandshake) {
  Log log;
  common::StateMachine<S> m(S::kStreaming, log.fn());
  EXPECT_FALSE(m.transition(S::kHandshaking));
}

}  // namespace
}  // namespace romulus::replica::connection_state_test
