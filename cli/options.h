// Options of the `romulus` command, parsed once into plain structs.
//
// parse_command_line() turns argv into a Command (which subcommand, with its
// options); every option of `primary` and `backup` may also come from a
// config file (--config FILE, `name = value` lines, command line wins).
// Errors are one line saying what is wrong and what to do. Nothing here
// starts anything.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "checkpoint/commit_trigger.h"
#include "checkpoint/primary.h"
#include "checkpoint/tracker_kind.h"
#include "common/endpoint.h"
#include "common/status.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/page.h"
#include "witness/etcd_client.h"
#include "witness/witness.h"

namespace romulus::cli {

using common::Endpoint;

// Ownership by a witness (etcd): both nodes name the same pair and endpoints.
struct WitnessOptions {
  witness::etcd::EtcdUrl url;  // --witness etcd://HOST:PORT[,...]; no endpoints: no witness
  std::string pair;            // the key is /romulus/<pair>/owner
  std::chrono::milliseconds lease_ttl{witness::kDefaultLeaseTtl};
  std::string node_id;  // how this node names itself in the key (default: host name + address)
  // etcds://: mutual TLS with these files (default: the link's --tls-*).
  std::string cert, key, ca;
  bool enabled() const { return !url.endpoints.empty(); }
};

// The replication link's security (docs/operations.md, "Certificates"): mutual
// TLS with these files, or plaintext, which is allowed off loopback only with
// `insecure`.
struct LinkSecurityOptions {
  std::string cert, key, ca;  // --tls-cert, --tls-key, --tls-ca: all or none
  std::string peer_name;      // --tls-peer-name: the name the peer's certificate must carry
  bool insecure = false;      // --insecure: plaintext off loopback
  bool tls() const { return !cert.empty(); }
};

// `romulus primary`: everything a node needs, whichever role it is in (a
// backup runs the guest this way once it takes over). The settings of the
// primary role are parsed straight into `primary`, a checkpoint::PrimaryConfig,
// so its defaults are the only ones (--help prints them from there).
struct NodeOptions {
  checkpoint::PrimaryConfig primary;  // --backup, --interval, --service, --memory, ...
  std::string control_path;
  std::optional<Endpoint> metrics;  // --metrics: serve Prometheus text at /metrics
  WitnessOptions witness;
  LinkSecurityOptions link;
  // This node's own replication address: where it listens if it must rejoin
  // as the backup of another owner (primary: --listen; backup: its --listen).
  std::optional<Endpoint> listen;
};

// `romulus backup`.
struct BackupOptions {
  Endpoint listen;
  std::optional<std::string> on_failover;  // shell command run after activation
  std::optional<Endpoint> reprotect;       // where to find the next backup after activation
  NodeOptions node;                        // how to run the guest once activated
};

struct StatusCommand {
  std::string control_path;
  bool json = false;
};
struct SetCommand {
  std::string control_path;
  std::string name, value;
};
struct FailoverCommand {
  std::string control_path;
};
// `romulus snapshot FILE`: the backup writes its committed image to FILE
// (storage/snapshot_file.h); FILE is made absolute here, since the node
// runs elsewhere.
struct SnapshotCommand {
  std::string control_path;
  std::string file;
};
// `romulus sqlite-export DATABASE OUT (--snapshot FILE | --control PATH)`, or
// `--list`: cli/sqlite_export.h. With --control the backup there writes a
// snapshot first (to OUT.snapshot, removed after).
struct SqliteExportCommand {
  std::string snapshot;      // --snapshot FILE
  std::string control_path;  // --control PATH (a running pair's backup)
  std::string database, out;
  bool list = false;
};
struct HelpCommand {
  std::string text;
};
// `romulus lease-guard`: not for operators; a node starts it beside itself
// (witness/lease_guard.h) with the node's own witness options.
struct LeaseGuardCommand {
  int node_pid = 0;            // --node-pid: the node guarded (the guard's parent)
  witness::etcd::EtcdUrl url;  // --witness
  std::string pair;            // --pair
  std::chrono::seconds lease_ttl{witness::kDefaultLeaseTtl};  // --lease-ttl
  std::string cert, key, ca;  // --witness-cert, --witness-key, --witness-ca (etcds://)
};

// `romulus release-lease primary|backup NODE-OPTIONS...` (the systemd units'
// ExecStopPost): gives up the lease a node that has exited left in
// $ROMULUS_LEASE_FILE (witness/lease_guard.h), at the node's own witness.
struct ReleaseLeaseCommand {
  WitnessOptions witness;  // from the node's options (--config FILE, or the options themselves)
  std::string lease_file;  // --lease-file, else $ROMULUS_LEASE_FILE
};

using Command = std::variant<NodeOptions, BackupOptions, StatusCommand, SetCommand, FailoverCommand,
                             SnapshotCommand, SqliteExportCommand, HelpCommand, LeaseGuardCommand,
                             ReleaseLeaseCommand>;

Result<Command> parse_command_line(int argc, const char* const* argv);

// Default control socket: $ROMULUS_CONTROL, else $XDG_RUNTIME_DIR/romulus/<role>.sock,
// else /run/romulus/<role>.sock.
std::string default_control_path(const std::string& role);

}  // namespace romulus::cli
