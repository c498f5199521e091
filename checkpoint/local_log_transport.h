// LocalLogTransport: a durable log of the primary's own, which it protects
// to while no backup holds its checkpoints (docs/design.md, "The durable
// image"; issue 25).
//
// With --data-dir, a primary whose backup is unreachable, lost, refused or
// not configured does not let output leave unprotected: it runs a stream to
// this transport instead, which decodes it as a backup does and writes what
// it commits to the node's own --data-dir. Its acknowledgements come back
// through LocalLogHooks::on_ack, as a backup's come through the TCP sender:
// under `--durable sync` once the epoch is on disk, under `async` once it is
// committed in memory (written behind).
//
// checkpoint/ knows no replica/: replica/local_log.h implements this, and
// replica/takeover.cc gives the primary a LocalLogFactory
// (PrimaryConfig::local_log) that opens one per stream.
//
// Threading: the CheckpointTransport calls come from the engine thread;
// stop() and report() from the thread that owns the transport (report() from
// any thread). The hooks are called from the engine thread or the writer's.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "checkpoint/transport.h"
#include "common/status.h"

namespace romulus::checkpoint {

// What `status --json` shows of a running local log ("local_log").
struct LocalLogReport {
  std::string data_dir;
  std::string mode;              // "sync" | "async"
  uint64_t base_epoch = 0;       // the stream's first consistent checkpoint (0: not yet)
  uint64_t durable_epoch = 0;    // newest epoch on disk
  uint64_t submitted_epoch = 0;  // newest epoch handed to the writer
  uint64_t acked_epoch = 0;      // newest epoch acknowledged to the primary
  uint64_t lag_epochs = 0;       // submitted and not yet durable
  double lag_ms = 0;             // age of the oldest of them
  std::string error;             // the writer's failure (empty: none)
  bool acks_held = false;        // acks wait (before_first_ack refused, or a disk error under sync)
};

struct LocalLogHooks {
  // The one way acknowledgements leave the log: ACK(epoch) covers every epoch
  // at or below it; epochs only increase. Never called for an epoch that is
  // not durable under `sync`.
  std::function<void(uint64_t epoch)> on_ack;
  // Called before the first ACK of the stream (with the stream's base epoch);
  // while it returns an error, ACKs are held and it is asked again at the
  // next one. Empty: none.
  std::function<Status(uint64_t base_epoch)> before_first_ack;
  // The writer failed (one line, said once): under `sync` nothing more is
  // acknowledged (`acks_held`); under `async` acks go on from memory only.
  std::function<void(const std::string& line)> on_disk_error;
};

class LocalLogTransport : public CheckpointTransport {
 public:
  // Writes and syncs what was submitted (its ACKs are delivered first), then
  // closes the directory, which keeps the newest epoch. Idempotent; no send()
  // may follow it.
  virtual void stop() = 0;
  virtual LocalLogReport report(std::chrono::steady_clock::time_point now) const = 0;
};

// Opens a local log over the node's --data-dir for one stream.
using LocalLogFactory =
    std::function<Result<std::unique_ptr<LocalLogTransport>>(LocalLogHooks hooks)>;

}  // namespace romulus::checkpoint
