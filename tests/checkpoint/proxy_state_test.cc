// An output-proxy session's two directions: the legal paths apply, anything else
// is refused and logged.
#include "checkpoint/proxy_state.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace romulus::checkpoint::proxy_state_test {
namespace {

using G = GuestToClientState;
using C = ClientToGuestState;

struct Log {
  std::vector<std::string> lines;
  auto fn() {
    return [this](const std::string& l) { lines.push_back(l); };
  }
};

TEST(ProxyGuestToClientState, BackPressurePausesAndResumesReading) {
  Log log;
  common::StateMachine<G> m(G::kReading, log.fn());
  EXPECT_TRUE(m.transition(G::kPaused));
  EXPECT_TRUE(m.transition(G::kReading));
  EXPECT_TRUE(m.transition(G::kPaused));
  EXPECT_TRUE(m.transition(G::kReading));
  EXPECT_TRUE(log.lines.empty());
}

TEST(ProxyGuestToClientState, TheGuestEndsWhileReadingThenTheSessionCloses) {
  Log log;
  common::StateMachine<G> m(G::kReading, log.fn());
  EXPECT_TRUE(m.transition(G::kGuestEnded));
  EXPECT_TRUE(m.transition(G::kClosed));
  EXPECT_TRUE(log.lines.empty());
}

TEST(ProxyGuestToClientState, APausedSessionReadsNothingSoCannotSeeTheGuestEnd) {
  Log log;
  common::StateMachine<G> m(G::kPaused, log.fn());
  EXPECT_FALSE(m.transition(G::kGuestEnded));
  EXPECT_EQ(m.state(), G::kPaused);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0],
            "BUG: illegal proxy guest-to-client state transition paused -> guest_ended refused");
}

TEST(ProxyGuestToClientState, AnEndedGuestIsNotReadAgain) {
  for (const G to : {G::kReading, G::kPaused}) {
    Log log;
    common::StateMachine<G> m(G::kGuestEnded, log.fn());
    EXPECT_FALSE(m.transition(to)) << common::StateTraits<G>::name(to);
    EXPECT_EQ(m.state(), G::kGuestEnded);
  }
}

TEST(ProxyGuestToClientState, EveryStateButClosedCanClose) {
  for (const G from : {G::kReading, G::kPaused, G::kGuestEnded}) {
    Log log;
    common::StateMachine<G> m(from, log.fn());
    EXPECT_TRUE(m.transition(G::kClosed)) << common::StateTraits<G>::name(from);
    EXPECT_TRUE(log.lines.empty());
  }
}

TEST(ProxyGuestToClientState, ClosedIsFinal) {
  for (const G to : {G::kReading, G::kPaused, G::kGuestEnded}) {
    Log log;
    common::StateMachine<G> m(G::kClosed, log.fn());
    EXPECT_FALSE(m.transition(to)) << common::StateTraits<G>::name(to);
    EXPECT_EQ(m.state(), G::kClosed);
  }
}

TEST(ProxyClientToGuestState, TheClientEndsThenTheSessionCloses) {
  Log log;
  common::StateMachine<C> m(C::kOpen, log.fn());
  EXPECT_TRUE(m.transition(C::kClientEnded));
  EXPECT_TRUE(m.transition(C::kClosed));
  EXPECT_TRUE(log.lines.empty());
}

TEST(ProxyClientToGuestState, AnOpenSessionCanCloseAtOnce) {
  Log log;
  common::StateMachine<C> m(C::kOpen, log.fn());
  EXPECT_TRUE(m.transition(C::kClosed));
  EXPECT_TRUE(log.lines.empty());
}

TEST(ProxyClientToGuestState, AnEndedClientDoesNotReopen) {
  Log log;
  common::StateMachine<C> m(C::kClientEnded, log.fn());
  EXPECT_FALSE(m.transition(C::kOpen));
  EXPECT_EQ(m.state(), C::kClientEnded);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0],
            "BUG: illegal proxy client-to-guest state transition client_ended -> open refused");
}

TEST(ProxyClientToGuestState, ClosedIsFinal) {
  for (const C to : {C::kOpen, C::kClientEnded}) {
    Log log;
    common::StateMachine<C> m(C::kClosed, log.fn());
    EXPECT_FALSE(m.transition(to)) << common::StateTraits<C>::name(to);
    EXPECT_EQ(m.state(), C::kClosed);
  }
}

}  // namespace
}  // namespace romulus::checkpoint::proxy_state_test
