// The states of one connection to the backup (PrimarySession in
// replica/backup_node.cc) and their legal transitions, checked by
// common::StateMachine.
//
//                     Hello accepted
//   handshaking ─────────────────────────► streaming
//        │                                     │
//        │ refused: the reply says why         │ a checkpoint refused:
//        ▼                                     │ ERROR says why
//     ending ◄─────────────────────────────────┘
//        │ the last message is written
//        ▼
//     closed ◄── close(), from any state: the peer closed or reset it, the
//                handshake timed out, the stream went silent, this node
//                takes over (terminal)
//
// handshaking  accepted; TLS (if any) and the Hello are in progress. Not yet
//              contact with a primary (the failure detector ignores it)
// streaming    the Hello was accepted: bytes go to the CheckpointReader and
//              count as contact with the primary
// ending       a last message (the refusal, the ERROR) is queued: nothing
//              more is read; closes once the queue is written
// closed       the socket is closed and the node told why
#pragma once

#include <string_view>

#include "common/state_machine.h"

namespace romulus::replica {

enum class ConnectionState {
  kHandshaking,
  kStreaming,
  kEnding,
  kClosed,
};

}  // namespace romulus::replica

namespace romulus::common {

template <>
struct StateTraits<replica::ConnectionState> {
  using S = replica::ConnectionState;
  static constexpr std::string_view kRole = "backup connection";
  static std::string_view name(S s) {
    switch (s) {
      case S::kHandshaking:
        return "handshaking";
      case S::kStreaming:
        return "streaming";
      case S::kEnding:
        return "ending";
      case S::kClosed:
        return "closed";
    }
    return "?";
  }
  static bool legal(S from, S to) {
    switch (from) {
      case S::kHandshaking:
        return to == S::kStreaming || to == S::kEnding || to == S::kClosed;
      case S::kStreaming:
        return to == S::kEnding || to == S::kClosed;
      case S::kEnding:
        return to == S::kClosed;
      case S::kClosed:
        return false;
    }
    return false;
  }
};

}  // namespace romulus::common
