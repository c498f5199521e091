// The primary's states and their legal transitions (checked by
// common::StateMachine; `romulus status --json` reports the names).
//
//   starting ──► syncing ──────► protected
//      │  │        │  ▲             │
//      │  │        │  │ backup      │ backup lost
//      │  │        │  │ (re)joins   ▼
//      │  └────────┼──┴──────── unprotected ◄──► stalled
//      │           │              ▲  ▲   (--on-backup-loss continue | stall)
//      │           │              │  ▼
//      │           │        protected_locally (with --data-dir, instead of
//      │           │              │            unprotected; back to syncing
//      │           │              │            when a backup connects)
//      │           ▼                 │
//      │   (any running state) ──► fenced ──► (back to a running state when
//      │           │                           ownership is confirmed again)
//      │           ▼
//      │       demoting (another node owns the pair: become its backup)
//      ▼           │
//   stopping ◄─────┘  (also from every state above: stop requested, guest exited)
//
// starting     arena and guest being set up
// syncing      connected to a backup; its full live sync is in progress
//              (output is held: a failover before it completes resumes an
//              older image)
// protected    the backup acknowledged a consistent checkpoint of this
//              stream; output is released on acknowledgements
// unprotected  no backup (none configured, unreachable, or lost) and
//              --on-backup-loss continue: the guest runs, output is released
//              at once
// protected_locally
//              no backup, --on-backup-loss continue and a --data-dir: the
//              guest is protected by this node's own durable log only
//              (replica/local_log.h); output is released on its ACKs (under
//              --durable sync once on disk); the backup is retried meanwhile.
//              Reached from every state that unprotected is reached from
// stalled      no backup and --on-backup-loss stall: the guest is paused
// fenced       this node may not act as the primary right now (ownership
//              not confirmed by the witness): no output is released
// demoting     another node owns the pair: stopping the guest to rejoin as
//              its backup
// stopping     shutting down (requested, or the guest exited)
#pragma once

#include <string_view>

#include "common/state_machine.h"

namespace romulus::checkpoint {

enum class PrimaryState {
  kStarting,
  kSyncing,
  kProtected,
  kUnprotected,
  kProtectedLocally,
  kStalled,
  kFenced,
  kDemoting,
  kStopping,
};

}  // namespace romulus::checkpoint

namespace romulus::common {

template <>
struct StateTraits<checkpoint::PrimaryState> {
  using S = checkpoint::PrimaryState;
  static constexpr std::string_view kRole = "primary";
  static std::string_view name(S s) {
    switch (s) {
      case S::kStarting:
        return "starting";
      case S::kSyncing:
        return "syncing";
      case S::kProtected:
        return "protected";
      case S::kUnprotected:
        return "unprotected";
      case S::kProtectedLocally:
        return "protected_locally";
      case S::kStalled:
        return "stalled";
      case S::kFenced:
        return "fenced";
      case S::kDemoting:
        return "demoting";
      case S::kStopping:
        return "stopping";
    }
    return "?";
  }
  static bool legal(S from, S to) {
    if (to == S::kStopping) return from != S::kStopping || to == from;
    switch (from) {
      case S::kStarting:
        return to == S::kSyncing || to == S::kUnprotected || to == S::kProtectedLocally ||
               to == S::kStalled || to == S::kFenced || to == S::kDemoting;
      case S::kSyncing:
        return to == S::kProtected || to == S::kUnprotected || to == S::kProtectedLocally ||
               to == S::kStalled || to == S::kFenced || to == S::kDemoting;
      case S::kProtected:
        return to == S::kUnprotected || to == S::kProtectedLocally || to == S::kStalled ||
               to == S::kFenced || to == S::kDemoting;
      case S::kUnprotected:
        return to == S::kSyncing || to == S::kProtectedLocally || to == S::kStalled ||
               to == S::kFenced || to == S::kDemoting;
      case S::kProtectedLocally:
        return to == S::kSyncing || to == S::kUnprotected || to == S::kStalled ||
               to == S::kFenced || to == S::kDemoting;
      case S::kStalled:
        return to == S::kSyncing || to == S::kUnprotected || to == S::kProtectedLocally ||
               to == S::kFenced || to == S::kDemoting;
      case S::kFenced:
        return to == S::kSyncing || to == S::kProtected || to == S::kUnprotected ||
               to == S::kProtectedLocally || to == S::kStalled || to == S::kDemoting;
      case S::kDemoting:
      case S::kStopping:
        return false;
    }
    return false;
  }
};

}  // namespace romulus::common
