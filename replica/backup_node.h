// BackupNode: receives checkpoints, commits them atomically, watches the
// primary, and decides when to take over.
//
// Listens on --listen; serves one primary at a time (a second one is refused
// while the first is alive). Per connection: handshake (geometry must match:
// page size, word size, arena size), then the chunk stream is fed to a
// CheckpointReader whose sink is the ReplicaState; each verified unit is
// acknowledged with ACK(epoch). A stream that fails verification is ended
// with an ERROR message; the primary reconnects and resyncs.
//
// Failure detection: the primary is lost when its connection is reset or
// closed without GOODBYE, or after --failover-timeout of silence, or when no
// primary reconnects within that time after a stream ended. A backup whose
// image never completed a full sync does not take over; it says so and waits.
// `romulus failover` takes over at once (same rule).
//
// Threading: run() drives everything on the calling thread (the main thread,
// so that the guest started after activation is tied to a long-lived thread)
// and returns when it is time to take over, or on stop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "checkpoint/arena.h"
#include "protocol/status.h"

namespace romulus::replica {

struct BackupConfig {
  std::string listen_host;
  uint16_t listen_port = 0;
  uint64_t memory_bytes = 256ull << 20;
  std::chrono::milliseconds heartbeat{50};
  std::chrono::milliseconds failover_timeout{500};
  std::string control_path;  // empty: none
};

// What run() hands over when the backup takes over.
struct Activation {
  checkpoint::SharedMemory image;  // the committed image: the guest's arena from now on
  uint64_t epoch = 0;              // the epoch it holds
  uint64_t session_id = 0;
  std::string reason;  // "primary connection reset", "manual failover", ...
  std::chrono::steady_clock::time_point last_contact;
};

class BackupNode {
 public:
  BackupNode(BackupConfig config, std::function<void(const std::string&)> log);
  ~BackupNode();

  // Serves until the primary is lost (returns the Activation), or until
  // request_stop() (returns aborted "stopped").
  Result<Activation> run();
  // Thread-safe; also safe to call from a signal-watching thread.
  void request_stop();

  std::string handle_control(const std::string& request);

  struct Impl;  // defined in backup_node.cc (public so its sessions can name it)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace romulus::replica
