// What a node's --metrics endpoint serves: the process's figures (its role,
// the takeovers it made) and the current role's (checkpoint/primary_metrics.h,
// replica/backup_metrics.h). replica/takeover.cc hands one of these, bound to
// the running role, to the process's common::MetricsServer.
//
// Thread: the metrics server's. Neither blocks the primary's epoch engine;
// the backup's figures are taken on its own thread (BackupNode::metrics(),
// waits up to 2 s; a backup that does not answer gets the process's
// families only).
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint/primary.h"
#include "replica/backup_node.h"

namespace romulus::replica {

std::string primary_node_metrics(const checkpoint::PrimaryNode& node, uint64_t failovers);
std::string backup_node_metrics(BackupNode& node, uint64_t failovers);

}  // namespace romulus::replica
