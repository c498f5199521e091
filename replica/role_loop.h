// RoleLoop: which role one `romulus` process runs next, as a pure state
// machine (the roles themselves are PrimaryNode and BackupNode).
//
// run_node() (replica/takeover.h) is the shell: it runs the role of the
// current state until that role ends, tells RoleLoop how it ended (an
// event), and runs the role of the state RoleLoop moves to, until kStopped;
// then it returns result(). RoleLoop decides; it runs nothing, holds no
// thread and no clock, and a test drives it with plain inputs.
//
//                      start as primary, with a witness
//   starting ──────────────────────────────────────► acquiring
//    │  │  start as primary, without one                 │   │ another node
//    │  └───────────────────────► primary ◄── owns the ───┘   │ owns the pair
//    │                              │         pair           │
//    │ start as backup              │ demoted: another node  │
//    ▼                              │ owns the pair          │
//   backup ◄────────────────────────┴────────────────────────┘
//    │  ▲
//    │  └───────── demoted ─────────┐
//    │ the primary is lost, or      │
//    │ `romulus failover` (with a   │
//    │ witness: once this node      │
//    │ won the pair)                │
//    ▼                              │
//   took_over ──────────────────────┘
//
//   every state but stopped ──► stopped (terminal: the process ends)
//
// starting   nothing runs yet
// acquiring  a primary at start, with a witness: the guest runs only once
//            this node owns the pair (docs/design.md, "Ownership", rule 1)
// primary    the guest runs here, started fresh
// backup     holds the other node's image; takes over when it is lost
// took_over  the guest runs here from the backup's committed image
// stopped    a requested stop, the guest's exit, or an error: result()
//
// Becoming a backup needs this node's own --listen address. Without one,
// the moves into backup from acquiring and from primary stop the process
// instead, with an error that says so; took_over always had one (it was a
// backup). Checked in one place: StateMachine<NodeRole> refuses (and logs as
// a bug) any move the diagram does not draw, and an event that arrives in a
// state it does not belong to stops the process with an error.
//
// Not thread-safe: one thread (run_node()'s) owns it.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "common/state_machine.h"
#include "common/status.h"

namespace romulus::replica {

// How a process starts.
enum class StartAs { kPrimary, kBackup };

enum class NodeRole {
  kStarting,
  kAcquiring,
  kPrimary,
  kBackup,
  kTookOver,
  kStopped,
};

}  // namespace romulus::replica

namespace romulus::common {

template <>
struct StateTraits<replica::NodeRole> {
  using S = replica::NodeRole;
  static constexpr std::string_view kRole = "process role";
  static std::string_view name(S s) {
    switch (s) {
      case S::kStarting:
        return "starting";
      case S::kAcquiring:
        return "acquiring";
      case S::kPrimary:
        return "primary";
      case S::kBackup:
        return "backup";
      case S::kTookOver:
        return "took_over";
      case S::kStopped:
        return "stopped";
    }
    return "?";
  }
  static bool legal(S from, S to) {
    if (from == S::kStopped) return false;
    if (to == S::kStopped) return true;
    switch (from) {
      case S::kStarting:
        return to == S::kAcquiring || to == S::kPrimary || to == S::kBackup;
      case S::kAcquiring:
        return to == S::kPrimary || to == S::kBackup;
      case S::kPrimary:
        return to == S::kBackup;
      case S::kBackup:
        return to == S::kTookOver;
      case S::kTookOver:
        return to == S::kBackup;
      case S::kStopped:
        return false;
    }
    return false;
  }
};

}  // namespace romulus::common

namespace romulus::replica {

struct RoleLoopConfig {
  bool witness = false;     // --witness: a primary starts only once it owns the pair
  bool can_rejoin = false;  // --listen given: this node can become a backup
};

class RoleLoop {
 public:
  RoleLoop(RoleLoopConfig config, std::function<void(const std::string&)> log);

  NodeRole state() const { return state_.state(); }
  std::string_view name() const { return state_.name(); }
  bool stopped() const { return state() == NodeRole::kStopped; }
  // In kStopped: what the process returns (OK: a requested stop).
  const Status& result() const { return result_; }

  // ---- Events. Each returns the state it leads to.
  // kStarting: the process starts.
  NodeRole start(StartAs as);
  // kAcquiring: the witness decided; `owner`: this node owns the pair, else
  // another node does.
  NodeRole ownership_decided(bool owner);
  // kPrimary, kTookOver: the primary returned `status`; `demoted`: because
  // another node owns the pair.
  NodeRole primary_ended(const Status& status, bool demoted);
  // kBackup: the backup returned: OK means it takes over (its image goes to
  // the new primary); aborted means a requested stop; anything else is an
  // error.
  NodeRole backup_ended(const Status& status);
  // Any state: an error ends the process with it.
  NodeRole failed(Status error);

 private:
  NodeRole move(NodeRole to);
  NodeRole stop(Status result);
  // An event outside the states it belongs to: a bug in the shell.
  NodeRole misplaced(std::string_view event);

  RoleLoopConfig config_;
  std::function<void(const std::string&)> log_;
  common::StateMachine<NodeRole> state_;
  Status result_;
};

}  // namespace romulus::replica
