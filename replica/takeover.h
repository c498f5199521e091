// The roles of one `romulus` process, and the changes between them.
//
// A node runs as a primary (PrimaryNode) or as a backup (BackupNode). A backup
// that judges its primary lost (or is told `romulus failover`) takes over: its
// committed image becomes the arena of a new PrimaryNode (resumed = true), the
// failover time is logged, --on-failover runs, and the new primary protects
// itself with the other node (--reprotect).
//
// With a witness (--witness, docs/design.md "Ownership") ownership of the pair
// is one key in etcd held under this node's lease (witness/LeaseKeeper):
//   - a primary starts the guest only once it owns the pair; if another node
//     owns it, this node starts as that node's backup instead;
//   - a primary releases output only as Ownership allows (rule 1) and fences
//     while it cannot renew (rule 2);
//   - a backup takes over only by winning the key (rule 3);
//   - a primary that finds another owner demotes itself and rejoins as the
//     owner's backup on its own --listen address (rule 4), automatically.
// Without a witness: a backup takes over on its own judgement, and a primary
// never demotes; a start-up warning names the risk.
//
// The replication link is mutual TLS when the node has certificates; without
// them run_node() refuses to start on a non-loopback address unless
// --insecure (and then warns). The TLS files are re-read for new connections
// on SIGHUP and on `romulus set tls reload` (a request the process answers
// whatever its role).
//
// The process's control socket and metrics endpoint stay in place across role
// changes (they say "changing role" for the moment in between); the metrics
// served follow the role (replica/node_metrics.h).
//
// Each change of a role's state reaches NodeHost::on_state, with what it means
// to a service manager (READY when a primary is protected or a backup holds a
// consistent image), so that a systemd unit of Type=notify follows the node.
//
// Which role runs next is RoleLoop's decision (replica/role_loop.h, with the
// diagram); run_node() is its shell. Its parts, each in its own file:
// WitnessLink (replica/witness_link.h: the witness as the roles see it),
// LinkSecurity (replica/link_security.h: TLS, its reload and its status),
// BackgroundMeasurements (replica/background_measurements.h).
//
// Threading: run_node() blocks the calling thread (the main thread). The
// host's callbacks are called from that thread; the witness's change
// callback from the keeper's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/primary.h"
#include "common/control_server.h"
#include "common/metrics_server.h"
#include "common/service_notify.h"
#include "replica/backup_node.h"
#include "replica/role_loop.h"
#include "witness/etcd_client.h"
#include "witness/witness.h"

namespace romulus::replica {

// What the process provides to its roles.
struct NodeHost {
  std::function<void(const std::string&)> log;
  // The process's control socket, or nullptr for none.
  common::ControlServer* control = nullptr;
  // The process's --metrics endpoint, or nullptr for none.
  common::MetricsServer* metrics = nullptr;
  // Takeovers this process made (counted by run_node(), served as metrics).
  std::atomic<uint64_t> failovers{0};
  // Registers what a stop signal (SIGINT, SIGTERM; SIGHUP without TLS) calls; nullptr clears it.
  std::function<void(std::function<void()>)> on_stop;
  // Names the role in log lines ("primary", "backup", "primary (took over)").
  std::function<void(const std::string&)> set_role;
  // Every change of the current role's state (any thread), with what it means
  // to a service manager: a primary is ready once protected, a backup once
  // it holds a consistent image (common/service_notify.h). nullptr: unused.
  std::function<void(std::string_view role, std::string_view state, common::ServicePhase)> on_state;
  // Registers what SIGHUP calls (re-reading the TLS files); nullptr clears it.
  std::function<void(std::function<void()>)> on_reload;
};

struct WitnessSettings {
  witness::etcd::EtcdUrl url;  // --witness; no endpoints: no witness
  std::string pair;
  std::chrono::seconds lease_ttl{witness::kDefaultLeaseTtl};
  std::string node_id;   // empty: host name and own replication address
  common::TlsFiles tls;  // etcds://: the client's certificate, key and the CA
  // The `romulus` program that runs this node's lease guard (`PROGRAM
  // lease-guard ...`, witness/lease_guard.h): the CLI gives "/proc/self/exe".
  // Empty: no guard (if this process dies, its lease expires by itself).
  std::string guard_program;
  // Where this node also keeps the lease it holds ($ROMULUS_LEASE_FILE), for
  // `romulus release-lease` after its end (witness/lease_guard.h). Empty: none.
  std::string lease_file;
};

struct NodeSettings {
  // How to run the guest as a primary. Its backup: the other node.
  checkpoint::PrimaryConfig primary;
  // This node's own replication address (where it listens as a backup):
  // required for a backup; for a primary, only to rejoin as a backup.
  std::optional<common::Endpoint> listen;
  // The other node's replication address, protected to after a takeover
  // (--reprotect); a primary's is primary.backup.
  std::optional<common::Endpoint> peer_after_takeover;
  std::optional<std::string> on_failover;  // shell command run once the guest runs again
  WitnessSettings witness;
  // The replication link, for every role of the process: mutual TLS with
  // these files (loaded by run_node(), re-read on SIGHUP and `romulus set tls
  // reload`), or plaintext: on loopback, or anywhere with `insecure`.
  common::TlsFiles tls;
  bool insecure = false;

  // The backup role's config, made here and nowhere else: it listens on
  // `listen` (set: a backup requires it), and its arena size, heartbeat,
  // failover timeout and link identity are the node's, kept in `primary`
  // (one --memory, --heartbeat, --failover-timeout for both roles).
  BackupConfig backup_config() const;
};

// Runs the node until a requested stop (OK), the guest's exit (aborted with
// its description), or an error: RoleLoop's result().
Status run_node(StartAs start, NodeSettings settings, NodeHost& host);

}  // namespace romulus::replica
