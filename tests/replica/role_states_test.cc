// The roles' state machines: legal transitions apply, illegal ones are refused and logged.
#include "common/state_machine.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "checkpoint/primary_state.h"
#include "replica/backup_state.h"

namespace romulus::common::role_states_test {
namespace {

using checkpoint::PrimaryState;
using replica::BackupState;

struct Log {
  std::vector<std::string> lines;
  auto fn() {
    return [this](const std::string& l) { lines.push_back(l); };
  }
};

TEST(PrimaryStateMachine, FollowsTheProtectionCycle) {
  Log log;
  StateMachine<PrimaryState> m(PrimaryState::kStarting, log.fn());
  EXPECT_TRUE(m.transition(PrimaryState::kSyncing));
  EXPECT_TRUE(m.transition(PrimaryState::kProtected));
  EXPECT_TRUE(m.transition(PrimaryState::kUnprotected));
  EXPECT_TRUE(m.transition(PrimaryState::kSyncing));
  EXPECT_TRUE(m.transition(PrimaryState::kFenced));
  EXPECT_TRUE(m.transition(PrimaryState::kDemoting));
  EXPECT_TRUE(m.transition(PrimaryState::kStopping));
  EXPECT_EQ(m.name(), "stopping");
  EXPECT_TRUE(log.lines.empty());
}

TEST(PrimaryStateMachine, ProtectedLocallyStandsInForUnprotectedAndEndsWithABackup) {
  // With --data-dir a lost backup means protecting to this node's own log:
  // reached wherever unprotected is, left for a backup's sync (or a fence).
  Log log;
  StateMachine<PrimaryState> m(PrimaryState::kStarting, log.fn());
  EXPECT_TRUE(m.transition(PrimaryState::kProtectedLocally));
  EXPECT_EQ(m.name(), "protected_locally");
  EXPECT_TRUE(m.transition(PrimaryState::kSyncing));
  EXPECT_TRUE(m.transition(PrimaryState::kProtected));
  EXPECT_TRUE(m.transition(PrimaryState::kProtectedLocally));
  EXPECT_TRUE(m.transition(PrimaryState::kFenced));
  EXPECT_TRUE(m.transition(PrimaryState::kProtectedLocally));
  EXPECT_TRUE(m.transition(PrimaryState::kUnprotected));  // its disk failed under async
  EXPECT_TRUE(m.transition(PrimaryState::kProtectedLocally));
  EXPECT_FALSE(m.transition(PrimaryState::kProtected));  // only through a backup's sync
  EXPECT_EQ(log.lines.size(), 1u);
}

TEST(PrimaryStateMachine, IllegalTransitionIsRefusedAndLoggedWithBothStates) {
  Log log;
  StateMachine<PrimaryState> m(PrimaryState::kStarting, log.fn());
  EXPECT_FALSE(m.transition(PrimaryState::kProtected));  // never protected before a sync
  EXPECT_EQ(m.state(), PrimaryState::kStarting);
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "BUG: illegal primary state transition starting -> protected refused");
}

TEST(PrimaryStateMachine, StoppingIsFinal) {
  Log log;
  StateMachine<PrimaryState> m(PrimaryState::kProtected, log.fn());
  EXPECT_TRUE(m.transition(PrimaryState::kStopping));
  EXPECT_FALSE(m.transition(PrimaryState::kSyncing));
  EXPECT_EQ(m.state(), PrimaryState::kStopping);
}

TEST(PrimaryStateMachine, StayingInAStateIsAlwaysAllowed) {
  Log log;
  StateMachine<PrimaryState> m(PrimaryState::kUnprotected, log.fn());
  EXPECT_TRUE(m.transition(PrimaryState::kUnprotected));
  EXPECT_TRUE(log.lines.empty());
}

TEST(BackupStateMachine, SyncProtectLoseTakeOver) {
  Log log;
  StateMachine<BackupState> m(BackupState::kNoImage, log.fn());
  EXPECT_TRUE(m.transition(BackupState::kSyncing));
  EXPECT_TRUE(m.transition(BackupState::kProtecting));
  EXPECT_TRUE(m.transition(BackupState::kPrimarySilent));
  EXPECT_TRUE(m.transition(BackupState::kTakingOver));
  EXPECT_TRUE(m.transition(BackupState::kServing));
  EXPECT_EQ(m.name(), "serving");
  EXPECT_TRUE(log.lines.empty());
}

TEST(BackupStateMachine, ABackupWithoutAnImageCannotTakeOver) {
  Log log;
  StateMachine<BackupState> m(BackupState::kNoImage, log.fn());
  EXPECT_FALSE(m.transition(BackupState::kTakingOver));
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_EQ(log.lines[0], "BUG: illegal backup state transition no_image -> taking_over refused");
}

TEST(BackupStateMachine, ServingIsFinal) {
  Log log;
  StateMachine<BackupState> m(BackupState::kTakingOver, log.fn());
  EXPECT_TRUE(m.transition(BackupState::kServing));
  EXPECT_FALSE(m.transition(BackupState::kSyncing));
}

TEST(StateNames, EveryStateHasADistinctSnakeCaseName) {
  std::vector<std::string> names;
  for (int i = 0; i <= static_cast<int>(PrimaryState::kStopping); ++i) {
    names.emplace_back(StateTraits<PrimaryState>::name(static_cast<PrimaryState>(i)));
  }
  for (int i = 0; i <= static_cast<int>(BackupState::kServing); ++i) {
    names.emplace_back(StateTraits<BackupState>::name(static_cast<BackupState>(i)));
  }
  for (const auto& n : names) {
    EXPECT_EQ(n.find(' '), std::string::npos) << n;
    EXPECT_NE(n, "?");
  }
}

TEST(StateMachineObserver, HearsEachAppliedChangeButNotNoOpsOrRefusals) {
  Log log;
  StateMachine<BackupState> m(BackupState::kNoImage, log.fn());
  std::vector<std::pair<BackupState, BackupState>> heard;
  m.set_observer([&](BackupState from, BackupState to) { heard.emplace_back(from, to); });
  EXPECT_TRUE(m.transition(BackupState::kSyncing));
  EXPECT_TRUE(m.transition(BackupState::kSyncing));   // no-op: not heard
  EXPECT_FALSE(m.transition(BackupState::kServing));  // refused: not heard
  EXPECT_TRUE(m.transition(BackupState::kProtecting));
  const std::vector<std::pair<BackupState, BackupState>> want = {
      {BackupState::kNoImage, BackupState::kSyncing},
      {BackupState::kSyncing, BackupState::kProtecting}};
  EXPECT_EQ(heard, want);
}

}  // namespace
}  // namespace romulus::common::role_states_test
