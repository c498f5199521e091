#include "replica/takeover.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "checkpoint/image_compare.h"
#include "common/endpoint.h"
#include "common/json.h"
#include "common/tls.h"
#include "replica/background_measurements.h"
#include "replica/link_security.h"
#include "replica/local_log.h"
#include "replica/node_metrics.h"
#include "replica/role_loop.h"
#include "replica/witness_link.h"
#include "storage/durable_image.h"
#include "storage/file_system.h"
#include "storage/snapshot_file.h"
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
// A fresh primary with a --data-dir asks its backup again this often, and says
// it waits this often (start_from_disk()).
constexpr std::chrono::milliseconds kCompareRetry{500};
constexpr std::chrono::seconds kCompareWaitLogEvery{5};

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

// What a role's state means to a service manager (NodeHost::on_state). A
// primary protected by its own --data-dir only (no backup) serves protected
// replies too: its unit is ready, and STATUS= says which protection it has.
common::ServicePhase service_phase(checkpoint::PrimaryState s) {
  using S = checkpoint::PrimaryState;
  if (s == S::kProtected || s == S::kProtectedLocally) return common::ServicePhase::kReady;
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
  if (config.durable.enabled() && !config.backup_null) {
    // While no backup holds the guest, this node's own --data-dir does
    // (replica/local_log.h). Any image there was closed before this role ran
    // (start_from_disk(), or the backup's writer at its takeover).
    config.local_log =
        local_log_factory(LocalLogOptions{config.durable, config.memory_bytes / protocol::kPageSize,
                                          p.settings.witness.pair, nullptr, host.log});
  }
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

// A snapshot file (`romulus snapshot`) read into a new arena: the arena and
// the snapshot's epoch.
Result<std::pair<common::SharedMemory, uint64_t>> read_snapshot_arena(const std::string& file,
                                                                      uint64_t memory_bytes) {
  storage::FileSystem& fs = storage::posix_file_system();
  ROMULUS_ASSIGN_OR_RETURN(const storage::SnapshotInfo info, storage::read_snapshot_info(fs, file));
  if (info.page_count * protocol::kPageSize != memory_bytes) {
    return Status::invalid_argument(
        fmt::format("--from-snapshot {} holds a {} MiB arena; this node's --memory is {} MiB: "
                    "start it with --memory {}M",
                    file, (info.page_count * protocol::kPageSize) >> 20, memory_bytes >> 20,
                    (info.page_count * protocol::kPageSize) >> 20));
  }
  ROMULUS_ASSIGN_OR_RETURN(auto memory,
                           common::SharedMemory::create("romulus-arena", memory_bytes));
  auto read = storage::read_snapshot(fs, file, memory.data(), memory.size());
  if (!read.is_ok()) return read.status().context(fmt::format("--from-snapshot {}", file));
  return std::pair<common::SharedMemory, uint64_t>(std::move(memory), read->epoch);
}

// What a fresh primary with a --data-dir starts its guest from.
struct FreshStart {
  std::optional<common::SharedMemory> image;  // nullopt: an empty arena
  uint64_t epoch = 0;                         // of `image`
  bool ended = false;  // the role ended instead (handed over, stopped, an error)
};

// The newer of this node's durable image and its backup's
// (checkpoint/image_compare.h): this node's is read and verified. With a
// witness whose image record names this node (and an image at least as new
// as the record's base), that is the newest: the guest starts from it at
// once. Else the backup is asked, and waited for while it cannot be (it may
// hold the newer one) unless `romulus failover` says to go on without it,
// which the witness refuses while its record names the other node. If the
// backup's is newer, the pair is handed to it and this node rejoins as its
// backup.
FreshStart start_from_disk(Process& p, RoleLoop& roles) {
  NodeHost& host = p.host;
  const checkpoint::PrimaryConfig& pc = p.settings.primary;
  FreshStart out;
  auto end = [&](Status st, bool demoted = false) {
    roles.primary_ended(st, demoted);
    out.ended = true;
    return std::move(out);
  };
  storage::DurableImage::Options options;
  options.force = pc.durable.force;
  auto disk = storage::DurableImage::open(
      storage::posix_file_system(), pc.durable.data_dir,
      storage::ImageIdentity{pc.memory_bytes / protocol::kPageSize, p.settings.witness.pair},
      options);
  if (!disk.is_ok()) return end(disk.status());
  for (const std::string& note : (*disk)->recovery_notes()) {
    host.log(fmt::format("--data-dir {}: {}", pc.durable.data_dir, note));
  }
  const uint64_t own = (*disk)->epoch();
  if (own > 0) {
    auto memory = common::SharedMemory::create("romulus-arena", pc.memory_bytes);
    if (!memory.is_ok()) return end(memory.status());
    if (Status st = (*disk)->read_image(memory->data(), memory->size()); !st.is_ok()) {
      return end(
          st.context(fmt::format("reading the image in --data-dir {}", pc.durable.data_dir)));
    }
    out.image.emplace(std::move(memory).value());
    out.epoch = own;
  }
  if (pc.backup_null || !pc.backup) return out;
  const std::string backup = pc.backup->to_string();

  if (p.witness) {
    auto holder = p.witness->image_holder();
    if (!holder.is_ok()) {
      host.log(fmt::format("{}; comparing images with backup {} instead", holder.status().message(),
                           backup));
    } else if (*holder && (*holder)->this_node) {
      const uint64_t recorded = (*holder)->epoch;
      if (own >= recorded) {
        host.log(fmt::format(
            "the witness records this node as holding the newest durable image (from epoch {}; "
            "its --data-dir holds epoch {}): the guest starts from it without asking backup {}",
            recorded, own, backup));
        return out;
      }
      host.log(fmt::format(
          "WARNING: the witness records this node as holding the newest durable image from "
          "epoch {}, but its --data-dir holds epoch {}: checkpoints were lost from this disk. "
          "Comparing images with backup {}",
          recorded, own, backup));
    }
  }

  std::atomic<bool> go_alone{false}, stop{false};
  if (host.control) {
    host.control->set_handler(p.security.handler(
        [&go_alone, &p, own](const std::string& r) {
          if (r == "failover") {
            if (p.witness) {
              std::string why = refuse_older_image(p.witness->image_holder(), own);
              if (!why.empty()) return common::json_error(why);
            }
            go_alone.store(true);
            return common::json_ok(json::object());
          }
          return common::json_error(
              "this primary is waiting for its backup to compare durable images; only "
              "`romulus failover` (start from this node's own image) and status answer now");
        },
        [&pc, own]() -> Result<json::object> {
          json::object o;
          o["role"] = "primary";
          o["state"] = "comparing_images";
          o["data_dir"] = pc.durable.data_dir;
          o["own_durable_epoch"] = own;
          return o;
        }));
  }
  if (host.on_stop) host.on_stop([&stop] { stop.store(true); });
  struct Detach {
    NodeHost& host;
    ~Detach() {
      if (host.on_stop) host.on_stop(nullptr);
      if (host.control) host.control->set_handler(nullptr);
    }
  } detach{host};

  auto next_log = Clock::now();
  while (!stop.load()) {
    if (go_alone.load()) {
      host.log(
          fmt::format("`romulus failover`: starting the guest from this node's own image "
                      "(epoch {}) without comparing it with backup {}'s",
                      own, backup));
      return out;
    }
    auto answer = checkpoint::compare_with_backup(pc, own, [&p] {
      if (p.witness) {
        if (Status st = p.witness->give_up(); !st.is_ok()) p.host.log(st.message());
      }
    });
    if (answer.is_ok() && answer->handed_over) {
      const std::string line = fmt::format(
          "backup {} holds a newer image (epoch {}; this node's --data-dir holds epoch {}): it "
          "takes the pair over from it",
          backup, answer->epoch, own);
      if (!p.settings.listen) {
        return end(Status::aborted(line + "; without --listen this node cannot rejoin it as a "
                                          "backup: restart it as `romulus backup`"));
      }
      host.log(line + "; this node rejoins it as its backup");
      return end(Status::ok(), true);
    }
    if (answer.is_ok()) {
      host.log(fmt::format(
          "backup {} holds epoch {}; this node's --data-dir holds epoch {}: the "
          "guest starts from {}",
          backup, answer->epoch, own, own > 0 ? "this node's image" : "an empty arena"));
      return out;
    }
    if (Clock::now() >= next_log) {
      host.log(fmt::format(
          "waiting for backup {} to compare durable images ({}); this node's holds epoch {}. "
          "The guest starts once it answers, or now with `romulus failover` on this node",
          backup, answer.status().message(), own));
      next_log = Clock::now() + kCompareWaitLogEvery;
    }
    for (int i = 0; i < 10 && !stop.load() && !go_alone.load(); ++i) {
      std::this_thread::sleep_for(kCompareRetry / 10);
    }
  }
  return end(Status::ok());
}

// primary: the guest, started fresh (with a --data-dir: from the newer
// durable image of the two nodes).
void run_fresh_primary(Process& p, RoleLoop& roles) {
  if (p.host.set_role) p.host.set_role("primary");
  checkpoint::PrimaryConfig pc = p.settings.primary;
  std::optional<common::SharedMemory> image;
  if (pc.from_snapshot) {
    // The operator's choice wins over any image on either node: the backup is
    // synced from it.
    auto restored = read_snapshot_arena(*pc.from_snapshot, pc.memory_bytes);
    if (!restored.is_ok()) {
      roles.primary_ended(restored.status(), false);
      return;
    }
    pc.resumed_epoch = restored->second;
    image.emplace(std::move(restored->first));
    p.host.log(fmt::format("--from-snapshot {}: the guest starts from its image at epoch {}",
                           *pc.from_snapshot, *pc.resumed_epoch));
  } else if (pc.durable.enabled()) {
    FreshStart start = start_from_disk(p, roles);
    if (start.ended) return;
    if (start.image) {
      image = std::move(start.image);
      pc.resumed_epoch = start.epoch;
    }
  }
  Outcome o = run_primary(p, "primary", std::move(pc), std::move(image), nullptr);
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
  if (pc.vm) pc.resumed_device_state = std::move(a.device_state);
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
    if (last_contact == Clock::time_point{}) {
      // An image read back from --data-dir: no primary was heard since the start.
      log(fmt::format("guest running from epoch {}", epoch));
    } else {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_contact)
              .count();
      log(fmt::format(
          "guest running from epoch {}: {} ms from last contact with the primary to guest running",
          epoch, ms));
    }
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
  c.durable = primary.durable;
  c.vm = primary.vm;
  c.pair_id = witness.pair;
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
