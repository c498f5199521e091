#include "replica/takeover.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/endpoint.h"
#include "common/json.h"
#include "common/tls.h"
#include "replica/background_measurements.h"
#include "replica/link_security.h"
#include "replica/node_metrics.h"
#include "replica/role_loop.h"
#include "replica/witness_link.h"
#include "witness/etcd_client.h"

namespace romulus::replica {
namespace json = boost::json;
namespace etcd = witness::etcd;
using Clock = std::chrono::steady_clock;
using witness::OwnershipState;

namespace {

// How long the start-up wait for the pair's ownership goes between two
// "waiting to own the pair" lines.
constexpr std::chrono::seconds kOwnershipWaitLogEvery{2};

// What the process has that every role uses.
struct Process {
  NodeSettings& settings;
  NodeHost& host;
  LinkSecurity& security;
  WitnessLink* witness;  // nullptr: no --witness
  BackgroundMeasurements& measurements;
};

struct Outcome {
  Status status;
  bool demoted = false;
};

// What a role's state means to a service manager (NodeHost::on_state).
common::ServicePhase service_phase(checkpoint::PrimaryState s) {
  using S = checkpoint::PrimaryState;
  if (s == S::kProtected) return common::ServicePhase::kReady;
  if (s == S::kStopping) return common::ServicePhase::kStopping;
  return common::ServicePhase::kStarting;
}
common::ServicePhase service_phase(BackupState s) {
  return s == BackupState::kProtecting ? common::ServicePhase::kReady
                                       : common::ServicePhase::kStarting;
}

// Passes a role's state changes, and the one it starts in, to the host.
template <typename Node, typename State>
void report_states(Node& node, NodeHost& host, std::string role, State initial) {
  if (!host.on_state) return;
  host.on_state(role, common::StateTraits<State>::name(initial), service_phase(initial));
  node.set_on_state_change([&host, role = std::move(role)](State s) {
    host.on_state(role, common::StateTraits<State>::name(s), service_phase(s));
  });
}

// The primary's status members.
Result<json::object> primary_status(checkpoint::PrimaryNode& node) { return node.status(); }

// The backup's status members, from its typed figures.
Result<json::object> backup_status(BackupNode& node) {
  ROMULUS_ASSIGN_OR_RETURN(BackupMetrics m, node.metrics());
  json::object o;
  write_backup_status(m, o);
  return o;
}

// Runs a primary until it returns: its handlers on the process's control
// socket and metrics endpoint meanwhile, and the witness's changes to it.
Outcome run_primary(Process& p, const std::string& role, checkpoint::PrimaryConfig config,
                    std::optional<common::SharedMemory> image, std::function<void()> on_started) {
  NodeHost& host = p.host;
  checkpoint::PrimaryNode node(std::move(config), host.log);
  report_states(node, host, role, checkpoint::PrimaryState::kStarting);
  if (image) node.adopt_arena(std::move(*image));
  if (on_started) node.set_on_started(std::move(on_started));
  if (p.witness) {
    node.set_ownership(p.witness);
    p.witness->attach(&node);
  }
  if (host.control) {
    host.control->set_handler(
        p.security.handler([&node](const std::string& r) { return node.handle_control(r); },
                           [&node] { return primary_status(node); }));
  }
  if (host.metrics) {
    host.metrics->set_handler(p.security.metrics_handler(
        [&node, &host] { return primary_node_metrics(node, host.failovers); }));
  }
  if (host.on_stop) host.on_stop([&node] { node.request_stop(); });
  Outcome out;
  out.status = node.run();
  out.demoted = node.demoted();
  if (host.on_stop) host.on_stop(nullptr);
  if (host.control) host.control->set_handler(nullptr);
  if (host.metrics) host.metrics->set_handler(nullptr);
  if (p.witness) p.witness->attach(nullptr);
  return out;
}

// acquiring: rule 1 at start, the guest runs only as the owner. Waits for
// the witness's decision and tells `roles`.
void acquire_pair(Process& p, RoleLoop& roles) {
  if (p.host.set_role) p.host.set_role("primary");
  witness::LeaseKeeper& keeper = p.witness->keeper();
  if (Status st = keeper.try_acquire(); !st.is_ok()) {
    roles.failed(st);
    return;
  }
  OwnershipState s = OwnershipState::kCandidate;
  while ((s = keeper.wait_while_candidate(kOwnershipWaitLogEvery)) == OwnershipState::kCandidate) {
    p.host.log(fmt::format("waiting to own the pair: {}", keeper.snapshot(Clock::now()).detail));
  }
  if (s != OwnershipState::kOwner) {
    const auto snap = keeper.snapshot(Clock::now());
    p.host.log(fmt::format("another node ({}) owns the pair: starting as its backup",
                           snap.owner ? snap.owner->value.node : "?"));
  }
  roles.ownership_decided(s == OwnershipState::kOwner);
}

// primary: the guest, started fresh.
void run_fresh_primary(Process& p, RoleLoop& roles) {
  if (p.host.set_role) p.host.set_role("primary");
  Outcome o = run_primary(p, "primary", p.settings.primary, std::nullopt, nullptr);
  roles.primary_ended(o.status, o.demoted);
}

// backup: until the primary is lost and this node may take over (the image
// goes to `activation`), a stop, or an error.
void run_backup(Process& p, RoleLoop& roles, std::optional<Activation>& activation) {
  NodeHost& host = p.host;
  if (host.set_role) host.set_role("backup");
  p.measurements.start();
  if (!p.settings.listen) {
    roles.backup_ended(Status::invalid_argument("--listen ADDR:PORT is required for a backup"));
    return;
  }
  BackupNode node(p.settings.backup_config(), host.log);
  report_states(node, host, "backup", BackupState::kNoImage);
  if (p.witness) node.set_takeover_gate(p.witness);
  if (host.control) {
    host.control->set_handler(
        p.security.handler([&node](const std::string& r) { return node.handle_control(r); },
                           [&node] { return backup_status(node); }));
  }
  if (host.metrics) {
    host.metrics->set_handler(p.security.metrics_handler(
        [&node, &host] { return backup_node_metrics(node, host.failovers); }));
  }
  if (host.on_stop) host.on_stop([&node] { node.request_stop(); });
  auto result = node.run();
  if (host.on_stop) host.on_stop(nullptr);
  if (host.control) host.control->set_handler(nullptr);
  if (host.metrics) host.metrics->set_handler(nullptr);
  if (result.is_ok()) activation.emplace(std::move(result).value());
  roles.backup_ended(result.status());
}

// took_over: the committed image becomes the guest's arena.
void run_taken_over_primary(Process& p, RoleLoop& roles, Activation a) {
  NodeHost& host = p.host;
  if (host.set_role) host.set_role("primary (took over)");
  ++host.failovers;
  host.log(fmt::format("TAKING OVER ({}): resuming the guest from epoch {}", a.reason, a.epoch));
  checkpoint::PrimaryConfig pc = p.settings.primary;
  pc.resumed_epoch = a.epoch;
  pc.session_id = a.session_id;
  pc.tracker_costs = p.measurements.latest();
  if (pc.tracker_costs) {
    host.log(fmt::format("tracker costs: measured {} s ago while this node was the backup",
                         p.measurements.age().count()));
  }
  pc.backup = p.settings.peer_after_takeover;
  const auto last_contact = a.last_contact;
  const auto hook = p.settings.on_failover;
  const uint64_t epoch = a.epoch;
  auto log = host.log;
  auto on_started = [last_contact, hook, epoch, log] {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_contact).count();
    log(fmt::format(
        "guest running from epoch {}: {} ms from last contact with the primary to guest running",
        epoch, ms));
    if (hook) {
      const std::string cmd = fmt::format("ROMULUS_EPOCH={} {}", epoch, *hook);
      const int rc = std::system(cmd.c_str());
      if (rc != 0) log(fmt::format("--on-failover command exited with {}", rc));
    }
  };
  Outcome o = run_primary(p, "primary (took over)", std::move(pc), std::move(a.image), on_started);
  roles.primary_ended(o.status, o.demoted);
}

std::string default_node_id(const NodeSettings& s) {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) std::snprintf(name, sizeof name, "node");
  if (s.listen) return fmt::format("{}/{}", name, s.listen->to_string());
  return fmt::format("{}/pid-{}", name, getpid());
}

// Warns when a plain etcd:// witness is not on loopback.
void warn_if_plain_witness(const WitnessSettings& w, NodeHost& host) {
  if (w.url.tls) return;
  for (const auto& ep : w.url.endpoints) {
    if (common::is_loopback_host(ep.host)) continue;
    host.log(
        fmt::format("WARNING: the witness {} is plain HTTP: whoever can reach etcd or sits on its "
                    "path can read and forge the pair's ownership; use etcds:// "
                    "(docs/operations.md, \"Certificates\")",
                    w.url.to_string()));
    return;
  }
}

}  // namespace

BackupConfig NodeSettings::backup_config() const {
  BackupConfig c;
  c.listen = *listen;
  c.memory_bytes = primary.memory_bytes;
  c.heartbeat = primary.heartbeat;
  c.failover_timeout = primary.failover_timeout;
  c.tls = primary.tls;
  return c;
}

Status run_node(StartAs start, NodeSettings settings, NodeHost& host) {
  LinkSecurity security(host.log);
  ROMULUS_RETURN_IF_ERROR(security.start(settings));
  struct ReloadOff {
    NodeHost& host;
    ~ReloadOff() {
      if (host.on_reload) host.on_reload(nullptr);
    }
  } reload_off{host};
  std::optional<WitnessLink> link;
  if (settings.witness.url.endpoints.empty()) {
    host.log(
        "WARNING: no --witness: a network partition or a paused primary can leave two "
        "primaries and lose acknowledged writes (docs/operations.md, \"Running without a "
        "witness\")");
  } else {
    if (settings.witness.node_id.empty()) settings.witness.node_id = default_node_id(settings);
    const std::string replication = settings.listen ? settings.listen->to_string() : std::string();
    warn_if_plain_witness(settings.witness, host);
    link.emplace(settings.witness, replication, host.log);
    ROMULUS_RETURN_IF_ERROR(link->start());
    host.log(fmt::format("witness {}: pair '{}', node '{}', lease {} s",
                         settings.witness.url.to_string(), settings.witness.pair,
                         settings.witness.node_id, settings.witness.lease_ttl.count()));
  }
  WitnessLink* w = link ? &*link : nullptr;
  if (w) security.set_witness(w->tls());
  BackgroundMeasurements measurements;
  // SIGHUP re-reads the TLS files (without TLS it stops the node, as before).
  if (host.on_reload && security.has_tls()) {
    host.on_reload([&security] { (void)security.reload(); });
  }

  Process p{settings, host, security, w, measurements};
  RoleLoop roles(RoleLoopConfig{.witness = w != nullptr, .can_rejoin = settings.listen.has_value()},
                 host.log);
  std::optional<Activation> activation;  // from backup to took_over
  roles.start(start);
  while (!roles.stopped()) {
    switch (roles.state()) {
      case NodeRole::kAcquiring:
        acquire_pair(p, roles);
        break;
      case NodeRole::kPrimary:
        run_fresh_primary(p, roles);
        break;
      case NodeRole::kBackup:
        run_backup(p, roles, activation);
        break;
      case NodeRole::kTookOver: {
        if (!activation) {
          roles.failed(Status::invalid_argument("BUG: took over without the backup's image"));
          break;
        }
        Activation a = std::move(*activation);
        activation.reset();
        run_taken_over_primary(p, roles, std::move(a));
        break;
      }
      case NodeRole::kStarting:
      case NodeRole::kStopped:
        roles.failed(Status::invalid_argument(
            fmt::format("BUG: the process has no role to run in {}", roles.name())));
        break;
    }
  }
  // Every role has ended: no output leaves this process any more, so whatever
  // lease it holds is given up (a primary handing over did it already).
  if (link) {
    if (Status st = link->give_up(); !st.is_ok()) host.log(st.message());
  }
  return roles.result();
}

}  // namespace romulus::replica
