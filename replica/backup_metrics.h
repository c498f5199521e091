// BackupMetrics: the backup's figures, typed, taken at one instant on the
// backup's own thread (BackupNode::metrics()) from their sources of truth:
// the BackupState machine, the ReplicaState's counters, the FailureDetector's
// judgement and the takeover gate's view of the witness.
//
// Both of the backup's reports are written from it, each by one pure
// function, so they never disagree: write_backup_status() gives the members
// of `romulus status --json` (docs/operations.md, "Watching and steering"), and
// render_backup_metrics() the Prometheus text of --metrics (docs/operations.md,
// "Metrics"). checkpoint/primary_metrics.h is the primary's counterpart.
//
// A plain value: copy it to any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <boost/json.hpp>

#include "common/metrics_text.h"
#include "replica/backup_state.h"
#include "replica/failure_detector.h"

namespace romulus::replica {

// What the takeover gate (the witness, replica/backup_node.h) says of the
// pair's ownership, from one look at it.
struct WitnessReport {
  bool owner = false;        // this node holds the pair's key
  int64_t remaining_ms = 0;  // of its lease, by its own conservative clock (0 unless owner)
  // status --json's "witness" object, as the witness layer writes it
  // (witness::OwnershipSnapshot::write_json(); this layer does not know its type).
  boost::json::object status;
};

// The durable image (--data-dir), as the backup's writer reports it.
struct DurableReport {
  std::string data_dir;
  std::string mode;                  // "sync" or "async"
  uint64_t durable_epoch = 0;        // newest epoch on disk (fdatasync'd)
  uint64_t submitted_epoch = 0;      // newest epoch handed to the writer
  uint64_t lag_epochs = 0;           // submitted - durable
  std::chrono::milliseconds lag{0};  // age of the oldest checkpoint not yet on disk
  uint64_t log_bytes = 0;            // the log not yet folded into the base image
  uint64_t bytes_written = 0;        // by this process, all files
  uint64_t syncs = 0, compactions = 0;
  std::string error;  // the write error that stopped it; empty: none
};

struct BackupMetrics {
  BackupState state = BackupState::kNoImage;
  std::string peer;       // the connected primary's address; empty: none
  std::string last_peer;  // the last primary that connected; empty: none yet
  std::string listen;     // this backup's --listen address
  uint64_t last_committed_epoch = 0;
  bool image_consistent = false;  // a full sync completed: the image is a committed epoch
  uint64_t checkpoints_committed = 0;
  uint64_t precopy_rounds_applied = 0;
  uint64_t pages_applied = 0;
  uint64_t streams = 0;  // checkpoint streams accepted
  uint64_t connections_in_handshake = 0;
  std::chrono::milliseconds failover_timeout{0};
  // Since the primary was last heard from; nullopt: never (status says -1).
  std::optional<std::chrono::milliseconds> since_contact;
  FailureDetector::Judgement detector;
  std::optional<WitnessReport> witness;  // nullopt: no witness (status says null)
  std::optional<DurableReport> durable;  // nullopt: no --data-dir (status says null)
};

// Writes the members of the backup's `status --json` reply (all but "ok")
// into `out`, in this order: "role", "state", "peer", "last_peer", "listen",
// "last_committed_epoch", "image_consistent", "checkpoints_committed",
// "precopy_rounds_applied", "pages_applied", "streams",
// "connections_in_handshake", "failover_timeout_ms", "ms_since_contact",
// "detector" ({"verdict", "remaining_ms", "reason" if any}), "witness",
// "durable" (null, or {"data_dir", "mode", "durable_epoch", "submitted_epoch",
// "lag_epochs", "lag_ms", "log_bytes", "bytes_written", "syncs", "compactions",
// "error"}).
void write_backup_status(const BackupMetrics& m, boost::json::object& out);

// Appends the backup's families to `out`.
void render_backup_metrics(const BackupMetrics& m, common::MetricsText& out);

}  // namespace romulus::replica
