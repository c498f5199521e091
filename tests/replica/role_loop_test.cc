// RoleLoop: which role the process runs next, driven with plain inputs.
#include "replica/role_loop.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/status_matchers.h"

namespace romulus::replica::role_loop_test {
namespace {

using R = NodeRole;

struct Log {
  std::vector<std::string> lines;
  auto fn() {
    return [this](const std::string& l) { lines.push_back(l); };
  }
};

constexpr RoleLoopConfig kWitnessAndListen{.witness = true, .can_rejoin = true};
constexpr RoleLoopConfig kNoWitness{.witness = false, .can_rejoin = true};
constexpr RoleLoopConfig kWitnessNoListen{.witness = true, .can_rejoin = false};

TEST(RoleLoop, APrimaryWithAWitnessFirstAcquiresThePair) {
  Log log;
  RoleLoop loop(kWitnessAndListen, log.fn());
  EXPECT_EQ(loop.state(), R::kStarting);
  EXPECT_EQ(loop.start(StartAs::kPrimary), R::kAcquiring);
  EXPECT_EQ(loop.ownership_decided(true), R::kPrimary);
  EXPECT_TRUE(log.lines.empty());
}

TEST(RoleLoop, APrimaryWithoutAWitnessRunsAtOnce) {
  Log log;
  RoleLoop loop(kNoWitness, log.fn());
  EXPECT_EQ(loop.start(StartAs::kPrimary), R::kPrimary);
}

TEST(RoleLoop, APrimaryThatFindsAnotherOwnerStartsAsItsBackup) {
  Log log;
  RoleLoop loop(kWitnessAndListen, log.fn());
  loop.start(StartAs::kPrimary);
  EXPECT_EQ(loop.ownership_decided(false), R::kBackup);
}

TEST(RoleLoop, AnotherOwnerWithoutListenStopsTheProcessAndSaysWhatToGive) {
  Log log;
  RoleLoop loop(kWitnessNoListen, log.fn());
  loop.start(StartAs::kPrimary);
  EXPECT_EQ(loop.ownership_decided(false), R::kStopped);
  EXPECT_EQ(loop.result().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(loop.result().message().find("give the primary --listen ADDR:PORT"), std::string::npos)
      << loop.result().message();
}

TEST(RoleLoop, ABackupTakesOverAndADemotedTakenOverPrimaryRejoinsAsBackup) {
  Log log;
  RoleLoop loop(kWitnessAndListen, log.fn());
  EXPECT_EQ(loop.start(StartAs::kBackup), R::kBackup);
  EXPECT_EQ(loop.backup_ended(Status::ok()), R::kTookOver);
  EXPECT_EQ(loop.primary_ended(Status::ok(), /*demoted=*/true), R::kBackup);
  EXPECT_EQ(loop.backup_ended(Status::ok()), R::kTookOver);
  EXPECT_TRUE(log.lines.empty());
}

TEST(RoleLoop, ADemotedPrimaryRejoinsTheOwnerAsItsBackup) {
  Log log;
  RoleLoop loop(kWitnessAndListen, log.fn());
  loop.start(StartAs::kPrimary);
  loop.ownership_decided(true);
  EXPECT_EQ(loop.primary_ended(Status::ok(), /*demoted=*/true), R::kBackup);
}

TEST(RoleLoop, ADemotedPrimaryWithoutListenStopsAborted) {
  Log log;
  RoleLoop loop(kWitnessNoListen, log.fn());
  loop.start(StartAs::kPrimary);
  loop.ownership_decided(true);
  EXPECT_EQ(loop.primary_ended(Status::ok(), /*demoted=*/true), R::kStopped);
  EXPECT_EQ(loop.result().code(), StatusCode::kAborted);
  EXPECT_NE(loop.result().message().find("restart it as a backup"), std::string::npos);
}

TEST(RoleLoop, APrimaryThatEndsWithoutDemotionStopsWithItsStatus) {
  Log log;
  RoleLoop loop(kNoWitness, log.fn());
  loop.start(StartAs::kPrimary);
  const Status exited = Status::aborted("the guest exited with status 3");
  EXPECT_EQ(loop.primary_ended(exited, /*demoted=*/false), R::kStopped);
  EXPECT_EQ(loop.result(), exited);
}

TEST(RoleLoop, ABackupStoppedOnRequestEndsTheProcessOk) {
  Log log;
  RoleLoop loop(kNoWitness, log.fn());
  loop.start(StartAs::kBackup);
  EXPECT_EQ(loop.backup_ended(Status::aborted("stopped")), R::kStopped);
  EXPECT_OK(loop.result());
}

TEST(RoleLoop, ABackupErrorEndsTheProcessWithIt) {
  Log log;
  RoleLoop loop(kNoWitness, log.fn());
  loop.start(StartAs::kBackup);
  const Status error = Status::invalid_argument("--listen ADDR:PORT is required for a backup");
  EXPECT_EQ(loop.backup_ended(error), R::kStopped);
  EXPECT_EQ(loop.result(), error);
}

TEST(RoleLoop, AFailureInAnyStateStopsWithTheError) {
  for (const StartAs as : {StartAs::kPrimary, StartAs::kBackup}) {
    Log log;
    RoleLoop loop(kWitnessAndListen, log.fn());
    loop.start(as);
    const Status error = Status::unavailable("cannot reach the witness");
    EXPECT_EQ(loop.failed(error), R::kStopped);
    EXPECT_EQ(loop.result(), error);
    EXPECT_TRUE(log.lines.empty());
  }
}

TEST(RoleLoop, StoppedIsFinal) {
  Log log;
  RoleLoop loop(kNoWitness, log.fn());
  loop.start(StartAs::kBackup);
  loop.backup_ended(Status::aborted("stopped"));
  EXPECT_EQ(loop.failed(Status::unavailable("late")), R::kStopped);
  EXPECT_OK(loop.result());  // the first result stands
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "BUG: failed in the process role stopped");
}

TEST(RoleLoop, AnEventOutsideItsStateIsABugThatStopsTheProcess) {
  Log log;
  RoleLoop loop(kWitnessAndListen, log.fn());
  loop.start(StartAs::kBackup);
  EXPECT_EQ(loop.primary_ended(Status::ok(), /*demoted=*/true), R::kStopped);
  EXPECT_EQ(loop.result().code(), StatusCode::kInvalidArgument);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "BUG: primary ended in the process role backup");
}

TEST(RoleStateMachine, IllegalTransitionIsRefusedAndLoggedWithBothStates) {
  Log log;
  common::StateMachine<NodeRole> m(R::kBackup, log.fn());
  EXPECT_FALSE(m.transition(R::kPrimary));  // a backup becomes a primary only by taking over
  EXPECT_EQ(m.state(), R::kBackup);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "BUG: illegal process role state transition backup -> primary refused");
}

TEST(RoleStateMachine, EveryStateHasADistinctSnakeCaseName) {
  std::vector<std::string> names;
  for (int i = 0; i <= static_cast<int>(R::kStopped); ++i) {
    const std::string n(common::StateTraits<NodeRole>::name(static_cast<NodeRole>(i)));
    EXPECT_EQ(n.find(' '), std::string::npos) << n;
    EXPECT_NE(n, "?");
    for (const auto& other : names) EXPECT_NE(n, other);
    names.push_back(n);
  }
}

}  // namespace
}  // namespace romulus::replica::role_loop_test
