// The roles of one `romulus` process, and the takeover between them.
//
// run_primary() runs a PrimaryNode: the control socket answers through it and
// a stop signal stops it. run_backup() runs a BackupNode until it judges its
// primary lost (or `romulus failover`), then takes over: the committed image
// becomes the arena of a new PrimaryNode (resumed = true), the failover time
// is logged, --on-failover runs, and with --reprotect the new primary
// protects itself with the next backup. The process's control socket stays
// in place across the change (it answers "changing role" for the moment in
// between), so `romulus set backup` right after a takeover finds the node.
//
// Threading: both block the calling thread (the process's main thread). The
// host's callbacks are called from that thread.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "checkpoint/primary.h"
#include "common/control_server.h"
#include "replica/backup_node.h"

namespace romulus::replica {

// What the process provides to its roles.
struct NodeHost {
  std::function<void(const std::string&)> log;
  // The process's control socket, or nullptr for none.
  common::ControlServer* control = nullptr;
  // Registers what a stop signal (SIGINT, SIGTERM, SIGHUP) calls; nullptr clears it.
  std::function<void(std::function<void()>)> on_stop;
  // Names the role in log lines ("primary", "backup", "primary (took over)").
  std::function<void(const std::string&)> set_role;
};

struct TakeoverOptions {
  checkpoint::PrimaryConfig primary;       // how to run the guest once this node takes over
  std::optional<std::string> on_failover;  // shell command run once the guest runs again
};

// Runs the guest as the primary until a requested stop (OK), the guest's exit
// (aborted), or an error.
Status run_primary(checkpoint::PrimaryConfig config, NodeHost& host,
                   std::optional<common::SharedMemory> image = std::nullopt,
                   std::function<void()> on_started = nullptr);

// Runs the backup, and the primary it becomes on takeover. OK on a requested
// stop, else as run_primary().
Status run_backup(const BackupConfig& backup, TakeoverOptions takeover, NodeHost& host);

}  // namespace romulus::replica
