#include "replica/backup_metrics.h"

#include <string>
#include <vector>

namespace romulus::replica {
namespace json = boost::json;

namespace {

std::vector<std::string> backup_state_names() {
  using Traits = common::StateTraits<BackupState>;
  std::vector<std::string> names;
  for (int s = static_cast<int>(BackupState::kNoImage);
       s <= static_cast<int>(BackupState::kServing); ++s) {
    names.emplace_back(Traits::name(static_cast<BackupState>(s)));
  }
  return names;
}

double d(uint64_t v) { return static_cast<double>(v); }
double seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

}  // namespace

void write_backup_status(const BackupMetrics& m, json::object& o) {
  o["role"] = "backup";
  o["state"] = common::StateTraits<BackupState>::name(m.state);
  o["peer"] = m.peer;
  o["last_peer"] = m.last_peer;
  o["listen"] = m.listen;
  o["last_committed_epoch"] = m.last_committed_epoch;
  o["image_consistent"] = m.image_consistent;
  o["checkpoints_committed"] = m.checkpoints_committed;
  o["precopy_rounds_applied"] = m.precopy_rounds_applied;
  o["pages_applied"] = m.pages_applied;
  o["streams"] = m.streams;
  o["connections_in_handshake"] = m.connections_in_handshake;
  o["failover_timeout_ms"] = m.failover_timeout.count();
  o["ms_since_contact"] = m.since_contact ? m.since_contact->count() : int64_t{-1};
  json::object d;
  d["verdict"] = to_string(m.detector.verdict);
  d["remaining_ms"] = m.detector.remaining.count();
  if (!m.detector.reason.empty()) d["reason"] = m.detector.reason;
  o["detector"] = std::move(d);
  o["witness"] = m.witness ? json::value(m.witness->status) : json::value(nullptr);
  if (m.durable) {
    const DurableReport& r = *m.durable;
    json::object w;
    w["data_dir"] = r.data_dir;
    w["mode"] = r.mode;
    w["durable_epoch"] = r.durable_epoch;
    w["submitted_epoch"] = r.submitted_epoch;
    w["lag_epochs"] = r.lag_epochs;
    w["lag_ms"] = r.lag.count();
    w["log_bytes"] = r.log_bytes;
    w["bytes_written"] = r.bytes_written;
    w["syncs"] = r.syncs;
    w["compactions"] = r.compactions;
    w["error"] = r.error;
    o["durable"] = std::move(w);
  } else {
    o["durable"] = nullptr;
  }
}

void render_backup_metrics(const BackupMetrics& m, common::MetricsText& out) {
  out.one_hot("romulus_state", "The role's current state (1 for the current one).", "state",
              backup_state_names(), common::StateTraits<BackupState>::name(m.state));
  out.gauge("romulus_last_committed_epoch",
            "Epoch of the committed image (the last checkpoint "
            "verified and applied).",
            d(m.last_committed_epoch));
  out.gauge("romulus_image_consistent",
            "1 once the image is a committed checkpoint (a full sync completed).",
            m.image_consistent ? 1 : 0);
  out.counter("romulus_checkpoints_committed_total", "Checkpoints verified and applied.",
              d(m.checkpoints_committed));
  out.counter("romulus_precopy_rounds_applied_total", "Pre-copy rounds of live syncs applied.",
              d(m.precopy_rounds_applied));
  out.counter("romulus_pages_applied_total", "Pages applied to the image.", d(m.pages_applied));
  out.counter("romulus_streams_total", "Checkpoint streams accepted from a primary.", d(m.streams));
  out.gauge("romulus_primary_connected", "1 while a primary's stream is connected.",
            m.peer.empty() ? 0 : 1);
  out.gauge("romulus_connections_in_handshake", "Connections that have not completed a handshake.",
            d(m.connections_in_handshake));
  if (m.since_contact) {
    out.gauge("romulus_seconds_since_contact", "Time since the primary was last heard from.",
              seconds(*m.since_contact));
  }
  out.gauge("romulus_failover_timeout_seconds", "Silence after which the primary is judged lost.",
            seconds(m.failover_timeout));
  if (m.witness) {
    out.gauge("romulus_owner", "1 while this node owns the pair (holds the witness lease).",
              m.witness->owner ? 1 : 0);
    out.gauge("romulus_lease_remaining_seconds",
              "Time left on this node's lease by its own conservative clock (0 unless owner).",
              static_cast<double>(m.witness->remaining_ms) / 1000.0);
  }
  if (m.durable) {
    const DurableReport& r = *m.durable;
    out.gauge("romulus_durable_epoch", "Newest epoch of the image on disk (--data-dir).",
              d(r.durable_epoch));
    out.gauge("romulus_durable_lag_epochs",
              "Checkpoints committed in memory and not yet on disk (--durable async).",
              d(r.lag_epochs));
    out.gauge("romulus_durable_lag_seconds", "Age of the oldest checkpoint not yet on disk.",
              seconds(r.lag));
    out.gauge("romulus_durable_log_bytes", "Log not yet folded into the base image.",
              d(r.log_bytes));
    out.counter("romulus_durable_bytes_written_total", "Bytes written to the data directory.",
                d(r.bytes_written));
    out.counter("romulus_durable_syncs_total", "fdatasync calls (one per group of checkpoints).",
                d(r.syncs));
    out.counter("romulus_durable_compactions_total", "Log compactions into the base image.",
                d(r.compactions));
    out.gauge("romulus_durable_failed", "1 once a write to the data directory has failed.",
              r.error.empty() ? 0 : 1);
  }
}

}  // namespace romulus::replica
