// What both nodes of a pair start from unless told otherwise: the arena's
// size (--memory; the backup refuses a primary whose arena differs,
// docs/protocol.md, "Handshake"), how often each side shows it is alive
// (--heartbeat) and how long a silent peer is given (--failover-timeout).
// The primary's config and its sender's (checkpoint/primary.h, tcp_sender.h)
// and the backup's (replica/backup_node.h) take their defaults from here, so
// the nodes cannot drift apart. Constants only; any thread.
#pragma once

#include <chrono>
#include <cstdint>

namespace romulus::protocol {

inline constexpr uint64_t kDefaultArenaBytes = uint64_t{256} << 20;
inline constexpr std::chrono::milliseconds kDefaultHeartbeat{50};
inline constexpr std::chrono::milliseconds kDefaultFailoverTimeout{500};

}  // namespace romulus::protocol
