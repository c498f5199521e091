#include "replica/node_metrics.h"

#include "checkpoint/primary_metrics.h"
#include "replica/backup_metrics.h"

namespace romulus::replica {

namespace {

void process_metrics(common::MetricsText& out, std::string_view role, uint64_t failovers) {
  out.one_hot("romulus_role", "The process's current role (1 for the current one).", "role",
              {"primary", "backup"}, role);
  out.counter("romulus_failovers_total", "Takeovers this process made (backup to primary).",
              static_cast<double>(failovers));
}

}  // namespace

std::string primary_node_metrics(const checkpoint::PrimaryNode& node, uint64_t failovers) {
  common::MetricsText out;
  process_metrics(out, "primary", failovers);
  checkpoint::render_primary_metrics(node.metrics(), out);
  return out.text();
}

std::string backup_node_metrics(BackupNode& node, uint64_t failovers) {
  common::MetricsText out;
  process_metrics(out, "backup", failovers);
  // A backup too busy to answer (or stopping) serves the process's families only.
  if (auto m = node.metrics(); m.is_ok()) render_backup_metrics(*m, out);
  return out.text();
}

}  // namespace romulus::replica
