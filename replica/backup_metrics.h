// The backup's figures for --metrics, rendered as Prometheus text from the
// same object `romulus status --json` reports (BackupNode's status(), taken
// on the node's own thread by handle_control()), so the two never disagree.
// A pure function; names and meaning in docs/operations.md, "Metrics".
#pragma once

#include <boost/json.hpp>

#include "common/metrics_text.h"

namespace romulus::replica {

// `status`: the "status --json" reply object (its "ok" member is ignored).
void render_backup_metrics(const boost::json::object& status, common::MetricsText& out);

}  // namespace romulus::replica
