// The states of one output-proxy connection (ProxySession in
// checkpoint/output_proxy.cc) and their legal transitions, checked by
// common::StateMachine. A session joins a client to the guest; its two
// directions end independently (either side may half-close while the other
// still talks), so each has its own drawn state, and close_all() closes both
// at once: the session is closed when they are.
//
// Guest to client (held output):
//
//                 output buffered for the client reached max_held_bytes
//   reading ──────────────────────────────────────────────────► paused
//      │    ◄──────────────────────────────────────────────────   │
//      │      the client took some: below max_held_bytes again    │
//      │                                                          │
//      │ the guest closed its side (or the read failed)           │
//      ▼                                                          │
//   guest_ended                                                   │
//      │                                                          │
//      ▼                                                          │
//   closed ◄──────────────────────────────────────────────────────┘
//      close_all(), from any state (terminal)
//
// reading      a read from the guest is in flight, or the next one waits for
//              a direct (unbuffered) write to the client to finish
// paused       back-pressure: no read from the guest until the client has
//              taken some of the output buffered for it
// guest_ended  nothing more comes from the guest; its close is held, and
//              passed on (shutdown of the client's side) once released
// closed       both sockets are closed
//
// Client to guest (never held):
//
//   open ─────────────────────────────────► client_ended
//     │  the client closed its side (or the      │
//     │  read failed): the guest's side is shut  │
//     │  down too                                │
//     ▼                                          │
//   closed ◄─────────────────────────────────────┘
//      close_all(), from either state (terminal)
//
// open          client bytes are read and written to the guest at once
// client_ended  the client sends nothing more; the session closes when the
//               guest has ended too and its close has been written
// closed        both sockets are closed
//
// Both start in their first state while the session connects to the guest;
// no read is made until it has. One thread (the session's worker) drives them.
#pragma once

#include <string_view>

#include "common/state_machine.h"

namespace romulus::checkpoint {

enum class GuestToClientState {
  kReading,
  kPaused,
  kGuestEnded,
  kClosed,
};

enum class ClientToGuestState {
  kOpen,
  kClientEnded,
  kClosed,
};

}  // namespace romulus::checkpoint

namespace romulus::common {

template <>
struct StateTraits<checkpoint::GuestToClientState> {
  using S = checkpoint::GuestToClientState;
  static constexpr std::string_view kRole = "proxy guest-to-client";
  static std::string_view name(S s) {
    switch (s) {
      case S::kReading:
        return "reading";
      case S::kPaused:
        return "paused";
      case S::kGuestEnded:
        return "guest_ended";
      case S::kClosed:
        return "closed";
    }
    return "?";
  }
  static bool legal(S from, S to) {
    switch (from) {
      case S::kReading:
        return to == S::kPaused || to == S::kGuestEnded || to == S::kClosed;
      case S::kPaused:
        return to == S::kReading || to == S::kClosed;
      case S::kGuestEnded:
        return to == S::kClosed;
      case S::kClosed:
        return false;
    }
    return false;
  }
};

template <>
struct StateTraits<checkpoint::ClientToGuestState> {
  using S = checkpoint::ClientToGuestState;
  static constexpr std::string_view kRole = "proxy client-to-guest";
  static std::string_view name(S s) {
    switch (s) {
      case S::kOpen:
        return "open";
      case S::kClientEnded:
        return "client_ended";
      case S::kClosed:
        return "closed";
    }
    return "?";
  }
  static bool legal(S from, S to) {
    switch (from) {
      case S::kOpen:
        return to == S::kClientEnded || to == S::kClosed;
      case S::kClientEnded:
        return to == S::kClosed;
      case S::kClosed:
        return false;
    }
    return false;
  }
};

}  // namespace romulus::common
