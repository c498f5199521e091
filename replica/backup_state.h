// The backup's states and their legal transitions (checked by
// common::StateMachine; `romulus status --json` reports the names).
//
//                    primary connects
//   no_image ──────────────────────────► syncing ◄───────────────────────┐
//      ▲                                   │  │ first consistent         │ a primary
//      │ stream lost before the image      │  │ checkpoint committed     │ (re)connects
//      └───────────────────────────────────┘  ▼                          │
//                                        protecting ──────────────────►  │
//           ┌──── GOODBYE ────────────────┘  │   │ stream ended / silent │
//           ▼                                │   ▼                       │
//   primary_stopped ─── manual failover ──┐  │  primary_silent ──────────┤
//           │                              │  │   │ failover timeout     │
//           └──────── reconnect ───────────┼──┼───┼──────────────────────┘
//                                          ▼  ▼   ▼
//                                         taking_over ──► serving (this node is the primary now)
//                                              │
//                                              └──► syncing (the old owner came back and
//                                                   kept ownership: follow it)
//
// no_image      listening; no committed image yet (never takes over)
// syncing       a primary is connected; its full live sync is in progress
// protecting    the image is a committed epoch and the stream is live
// primary_silent the stream ended without GOODBYE, or went silent, or was
//               dropped by the primary; waiting for it to reconnect
// primary_stopped the primary said GOODBYE: it stopped on purpose; only a
//               manual failover takes over. Also where a backup starts whose
//               image was read back from its --data-dir (no_image ──►
//               primary_stopped): it waits for a primary, or a manual failover
//               (`romulus failover`, docs/operations.md, "Losing both nodes")
// taking_over   the primary is judged lost; the node acquires ownership and
//               hands its image to a new primary
// serving       handed over: this process runs the guest as a primary
#pragma once

#include <string_view>

#include "common/state_machine.h"

namespace romulus::replica {

enum class BackupState {
  kNoImage,
  kSyncing,
  kProtecting,
  kPrimarySilent,
  kPrimaryStopped,
  kTakingOver,
  kServing,
};

}  // namespace romulus::replica

namespace romulus::common {

template <>
struct StateTraits<replica::BackupState> {
  using S = replica::BackupState;
  static constexpr std::string_view kRole = "backup";
  static std::string_view name(S s) {
    switch (s) {
      case S::kNoImage:
        return "no_image";
      case S::kSyncing:
        return "syncing";
      case S::kProtecting:
        return "protecting";
      case S::kPrimarySilent:
        return "primary_silent";
      case S::kPrimaryStopped:
        return "primary_stopped";
      case S::kTakingOver:
        return "taking_over";
      case S::kServing:
        return "serving";
    }
    return "?";
  }
  static bool legal(S from, S to) {
    switch (from) {
      case S::kNoImage:
        return to == S::kSyncing || to == S::kPrimaryStopped;
      case S::kSyncing:
        return to == S::kProtecting || to == S::kNoImage || to == S::kPrimarySilent ||
               to == S::kPrimaryStopped || to == S::kTakingOver;
      case S::kProtecting:
        return to == S::kPrimarySilent || to == S::kPrimaryStopped || to == S::kTakingOver;
      case S::kPrimarySilent:
        return to == S::kSyncing || to == S::kTakingOver || to == S::kPrimaryStopped;
      case S::kPrimaryStopped:
        return to == S::kSyncing || to == S::kTakingOver;
      case S::kTakingOver:
        return to == S::kServing || to == S::kSyncing || to == S::kPrimarySilent;
      case S::kServing:
        return false;
    }
    return false;
  }
};

}  // namespace romulus::common
