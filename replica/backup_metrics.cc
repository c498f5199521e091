#include "replica/backup_metrics.h"

#include <string>
#include <vector>

#include "replica/backup_state.h"

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

// A number member as a double (0 when absent or not a number).
double number(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_int64()) return static_cast<double>(v->as_int64());
  if (v->is_uint64()) return static_cast<double>(v->as_uint64());
  if (v->is_double()) return v->as_double();
  if (v->is_bool()) return v->as_bool() ? 1 : 0;
  return 0;
}

std::string text(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

void render_backup_metrics(const json::object& s, common::MetricsText& out) {
  out.one_hot("romulus_state", "The role's current state (1 for the current one).", "state",
              backup_state_names(), text(s, "state"));
  out.gauge("romulus_last_committed_epoch",
            "Epoch of the committed image (the last checkpoint "
            "verified and applied).",
            number(s, "last_committed_epoch"));
  out.gauge("romulus_image_consistent",
            "1 once the image is a committed checkpoint (a full sync completed).",
            number(s, "image_consistent"));
  out.counter("romulus_checkpoints_committed_total", "Checkpoints verified and applied.",
              number(s, "checkpoints_committed"));
  out.counter("romulus_precopy_rounds_applied_total", "Pre-copy rounds of live syncs applied.",
              number(s, "precopy_rounds_applied"));
  out.counter("romulus_pages_applied_total", "Pages applied to the image.",
              number(s, "pages_applied"));
  out.counter("romulus_streams_total", "Checkpoint streams accepted from a primary.",
              number(s, "streams"));
  out.gauge("romulus_primary_connected", "1 while a primary's stream is connected.",
            text(s, "peer").empty() ? 0 : 1);
  out.gauge("romulus_connections_in_handshake", "Connections that have not completed a handshake.",
            number(s, "connections_in_handshake"));
  const double since_ms = number(s, "ms_since_contact");
  if (since_ms >= 0) {
    out.gauge("romulus_seconds_since_contact", "Time since the primary was last heard from.",
              since_ms / 1000.0);
  }
  out.gauge("romulus_failover_timeout_seconds", "Silence after which the primary is judged lost.",
            number(s, "failover_timeout_ms") / 1000.0);
  if (const auto* w = s.if_contains("witness"); w && w->is_object()) {
    const auto& wo = w->as_object();
    out.gauge("romulus_owner", "1 while this node owns the pair (holds the witness lease).",
              text(wo, "state") == "owner" ? 1 : 0);
    out.gauge("romulus_lease_remaining_seconds",
              "Time left on this node's lease by its own conservative clock (0 unless owner).",
              number(wo, "remaining_ms") / 1000.0);
  }
}

}  // namespace romulus::replica
