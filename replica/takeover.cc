#include "replica/takeover.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "checkpoint/tracker_choice.h"
#include "common/json.h"
#include "common/net.h"
#include "common/tls.h"
#include "replica/node_metrics.h"
#include "witness/etcd_client.h"
#include "witness/etcd_witness.h"
#include "witness/lease_keeper.h"

namespace romulus::replica {
namespace json = boost::json;
namespace etcd = witness::etcd;
using Clock = std::chrono::steady_clock;
using witness::OwnershipState;

namespace {

// After fencing, acknowledged output may leave again only once the keeper
// has had time to ask the witness at least once more (its calls are bounded
// by 500 ms): if the lease were gone there, the keeper would have left
// kFenced by then. See docs/design.md, "Ownership", rule 2.
constexpr std::chrono::milliseconds kFencedAckGrace{1000};

// The keeper, seen by the roles: Ownership for a primary, TakeoverGate for a
// backup. The keeper's change callback lands here and is passed on to the
// current role.
class WitnessLink final : public checkpoint::Ownership, public TakeoverGate {
 public:
  WitnessLink(const WitnessSettings& s, std::string replication,
              std::function<void(const std::string&)> log)
      : settings_(s), replication_(std::move(replication)), log_(std::move(log)) {}

  ~WitnessLink() {
    {
      std::lock_guard lock(marker_mu_);
      marker_stop_ = true;
    }
    marker_cv_.notify_all();
    if (marker_thread_.joinable()) marker_thread_.join();
  }

  Status start() {
    etcd::EtcdClient::Options options;
    if (etcd::is_tls_url(settings_.endpoints)) {
      auto id = common::TlsIdentity::load(settings_.tls);
      if (!id.is_ok()) return id.status().context("the witness's TLS files");
      options.tls = *id;
      tls_ = *id;
      log_(fmt::format("witness over TLS: this node's {}", (*id)->describe()));
    }
    auto w = witness::EtcdWitness::open(settings_.endpoints, options);
    if (!w.is_ok()) return w.status();
    // No node may win the pair while the other serves what no backup has.
    marker_key_ = fmt::format("/romulus/{}/unprotected", settings_.pair);
    owner_key_ = witness::owner_key(settings_.pair);
    (*w)->set_acquire_guard(etcd::AcquireGuard{marker_key_, settings_.node_id});
    auto eps = etcd::parse_endpoints(settings_.endpoints);
    if (!eps.is_ok()) return eps.status();
    marker_client_.emplace(std::move(eps).value(), options);
    marker_thread_ = std::thread([this] { clear_marker_loop(); });
    witness::LeaseKeeperOptions o;
    o.pair = settings_.pair;
    o.node_id = settings_.node_id;
    o.replication = replication_;
    o.ttl = settings_.lease_ttl;
    o.log = log_;
    keeper_.emplace(std::move(w).value(), o,
                    [this](const witness::OwnershipChange& c) { on_change(c); });
    return keeper_->start();
  }
  witness::LeaseKeeper& keeper() { return *keeper_; }
  // The identity for etcds:// (nullptr for etcd://).
  std::shared_ptr<common::TlsIdentity> tls() const { return tls_; }

  // Who hears about changes: the running primary (nullptr: none).
  void attach(checkpoint::PrimaryNode* primary) {
    std::lock_guard lock(mu_);
    primary_ = primary;
  }

  // ---- checkpoint::Ownership
  bool may_release(Clock::time_point now, bool acked) const override {
    if (keeper_->may_release(now)) return true;
    if (!acked) return false;
    // Fenced, and still fenced after the keeper asked again: the witness is
    // unreachable (not "the lease is gone"), and a backup that acknowledges
    // has not taken over.
    const int64_t since = fenced_since_.load();
    return since != 0 && keeper_->state() == OwnershipState::kFenced &&
           now.time_since_epoch().count() - since >
               std::chrono::duration_cast<Clock::duration>(kFencedAckGrace).count();
  }
  bool may_run(Clock::time_point now) const override { return keeper_->may_release(now); }
  std::optional<Clock::time_point> deadline() const override {
    const auto s = keeper_->snapshot(Clock::now());
    if (s.state != OwnershipState::kOwner) return std::nullopt;
    return Clock::now() + std::chrono::milliseconds(s.remaining_ms);
  }
  std::string why_not() const override {
    const auto s = keeper_->snapshot(Clock::now());
    std::string why = fmt::format("this node does not hold the pair's lease ({}: {})",
                                  witness::to_string(s.state), s.detail);
    if (!s.last_error.empty()) why += fmt::format("; last witness error: {}", s.last_error);
    return why;
  }
  json::object status(Clock::time_point now) const override {
    json::object o;
    keeper_->snapshot(now).write_json(o);
    return o;
  }

  // ---- TakeoverGate
  void request() override {
    takeover_requested_ = true;
    Status st = keeper_->request_takeover();
    if (!st.is_ok()) log_(fmt::format("witness: {}", st.message()));
  }
  Verdict poll(std::string* detail) override {
    const auto s = keeper_->snapshot(Clock::now());
    switch (s.state) {
      case OwnershipState::kOwner:
        return Verdict::kWon;
      case OwnershipState::kFollower:
        if (s.owner && s.owner->value.node != settings_.node_id) {
          *detail = fmt::format("node {} owns the pair", s.owner->value.node);
          return Verdict::kOtherOwner;
        }
        [[fallthrough]];
      default:
        *detail = s.detail.empty() ? std::string(witness::to_string(s.state)) : s.detail;
        if (blocked_by_marker()) {
          *detail += fmt::format(
              "; {} is set: the old owner served output no backup has, so this image would lose "
              "it. Bring that node back, or delete the key to accept the loss",
              marker_key_);
        }
        if (!s.last_error.empty()) {
          *detail += fmt::format(
              " (the witness cannot be reached: {}; a backup cannot take "
              "over without it)",
              s.last_error);
        }
        return Verdict::kWaiting;
    }
  }
  void cancel() override {
    if (!takeover_requested_) return;
    takeover_requested_ = false;
    Status st = keeper_->stand_by();
    if (!st.is_ok()) log_(fmt::format("witness: {}", st.message()));
  }
  WitnessReport report() const override {
    const auto s = keeper_->snapshot(Clock::now());
    WitnessReport r;
    r.owner = s.state == OwnershipState::kOwner;
    r.remaining_ms = s.remaining_ms;
    s.write_json(r.status);
    return r;
  }

  Status record_unprotected() override {
    std::lock_guard lock(marker_mu_);
    clear_pending_ = false;
    if (marked_) return Status::ok();
    const auto snap = keeper_->snapshot(Clock::now());
    if (snap.state != OwnershipState::kOwner) {
      return Status::unavailable("this node does not own the pair");
    }
    auto put = marker_client_->put_if_owner(marker_key_, settings_.node_id, owner_key_, snap.lease);
    if (!put.is_ok()) return put.status();
    if (!*put) return Status::unavailable("the owner key is no longer under this node's lease");
    marked_ = true;
    log_(
        fmt::format("recorded {} in the witness: no backup takes over from an older image until "
                    "a backup holds this node's state again",
                    marker_key_));
    return Status::ok();
  }

  void record_protected() override {
    {
      std::lock_guard lock(marker_mu_);
      clear_pending_ = true;
    }
    marker_cv_.notify_all();
  }

 private:
  // Clears this node's "unprotected" record once a backup is in sync, retrying
  // until the witness answers. Ordered with record_unprotected() by marker_mu_.
  void clear_marker_loop() {
    std::unique_lock lock(marker_mu_);
    while (!marker_stop_) {
      marker_cv_.wait(lock, [&] { return marker_stop_ || clear_pending_; });
      if (marker_stop_) return;
      auto del = marker_client_->delete_if_value(marker_key_, settings_.node_id);
      if (del.is_ok()) {
        clear_pending_ = false;
        if (*del || marked_) log_(fmt::format("cleared {} in the witness", marker_key_));
        marked_ = false;
      } else {
        marker_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return marker_stop_; });
      }
    }
  }

  // Whether another node's "unprotected" record stands (looked up at most twice a second).
  bool blocked_by_marker() {
    const auto now = Clock::now();
    if (now < next_marker_look_) return last_marker_blocks_;
    next_marker_look_ = now + std::chrono::milliseconds(500);
    std::lock_guard lock(marker_mu_);
    auto kv = marker_client_->get(marker_key_);
    last_marker_blocks_ = kv.is_ok() && *kv && (*kv)->value != settings_.node_id;
    return last_marker_blocks_;
  }

  void on_change(const witness::OwnershipChange& c) {
    if (c.to == OwnershipState::kFenced) {
      fenced_since_.store(Clock::now().time_since_epoch().count());
    } else {
      fenced_since_.store(0);
    }
    std::lock_guard lock(mu_);
    if (!primary_) return;
    if (c.to == OwnershipState::kFollower && c.owner && c.owner->value.node != settings_.node_id) {
      primary_->demote(fmt::format("node {} owns the pair (replication {})", c.owner->value.node,
                                   c.owner->value.replication));
      return;
    }
    primary_->ownership_changed();
  }

  WitnessSettings settings_;
  std::string replication_;
  std::function<void(const std::string&)> log_;
  std::optional<witness::LeaseKeeper> keeper_;
  std::atomic<int64_t> fenced_since_{0};
  Clock::time_point next_marker_look_{};
  bool last_marker_blocks_ = false;
  std::atomic<bool> takeover_requested_{false};
  std::mutex mu_;
  checkpoint::PrimaryNode* primary_ = nullptr;

  // The "unprotected" record (its own client: the keeper's is its thread's).
  std::string marker_key_, owner_key_;
  std::optional<etcd::EtcdClient> marker_client_;
  std::shared_ptr<common::TlsIdentity> tls_;  // etcds:// only
  std::mutex marker_mu_;
  std::condition_variable marker_cv_;
  bool marked_ = false, clear_pending_ = false, marker_stop_ = false;
  std::thread marker_thread_;
};

// The tracker-choice measurements (checkpoint/tracker_choice.h), taken in the
// background while this node is a backup, so that a takeover does not spend
// ~30 ms on them between "primary lost" and "guest running". Taken again
// every kRefresh (the costs drift with the host, docs/design.md); a takeover
// uses the latest, or measures itself if none is done yet.
class BackgroundMeasurements {
 public:
  static constexpr std::chrono::minutes kRefresh{30};

  ~BackgroundMeasurements() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Idempotent: the first call starts the thread.
  void start() {
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }

  std::shared_ptr<const checkpoint::Measurements> latest() const {
    std::lock_guard lock(mu_);
    return latest_;
  }
  // How long ago latest() was measured.
  std::chrono::seconds age() const {
    std::lock_guard lock(mu_);
    return std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - measured_at_);
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      auto m =
          std::make_shared<const checkpoint::Measurements>(checkpoint::measure_tracker_costs());
      lock.lock();
      latest_ = std::move(m);
      measured_at_ = Clock::now();
      cv_.wait_for(lock, kRefresh, [&] { return stop_; });
    }
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::shared_ptr<const checkpoint::Measurements> latest_;
  Clock::time_point measured_at_{};
  std::thread thread_;
};

struct Outcome {
  Status status;
  bool demoted = false;
};

// The link security a node reports: status --json's "tls" (and the reply to
// `set tls reload`) and the TLS families of --metrics, both written from it.
struct TlsStatus {
  struct Identity {
    std::string mode;         // "mutual TLS 1.3"
    std::string certificate;  // its subject
    int64_t not_after = 0;    // Unix time
    std::string describe;     // TlsIdentity::describe()
  };
  std::string link_mode;            // "mutual TLS 1.3", "plaintext (loopback)", ...
  std::optional<Identity> link;     // nullopt: plaintext
  std::optional<Identity> witness;  // the etcds:// client's; nullopt: none
  uint64_t reloads = 0, reload_failures = 0;

  // {"link": {"mode", and with TLS "certificate", "not_after", "describe"},
  //  "witness": {the same} (etcds:// only), "reloads", "reload_failures"}.
  void write_json(json::object& out) const {
    auto identity = [](const Identity& id) {
      json::object o;
      o["mode"] = id.mode;
      o["certificate"] = id.certificate;
      o["not_after"] = id.not_after;
      o["describe"] = id.describe;
      return o;
    };
    out["link"] = link ? identity(*link) : json::object{{"mode", link_mode}};
    if (witness) out["witness"] = identity(*witness);
    out["reloads"] = reloads;
    out["reload_failures"] = reload_failures;
  }

  // When each certificate in use expires (to alert on before it does) and how
  // reloads went.
  void render_metrics(common::MetricsText& m) const {
    if (link || witness) {
      constexpr std::string_view kExpiry = "romulus_tls_certificate_expiry_timestamp_seconds";
      m.family(kExpiry, "gauge", "When the certificate this node presents expires (Unix time).");
      if (link) m.sample(kExpiry, static_cast<double>(link->not_after), {{"link", "replication"}});
      if (witness) {
        m.sample(kExpiry, static_cast<double>(witness->not_after), {{"link", "witness"}});
      }
    }
    constexpr std::string_view kReloads = "romulus_tls_reloads_total";
    m.family(kReloads, "counter", "TLS file re-reads (SIGHUP, set tls reload), by result.");
    m.sample(kReloads, static_cast<double>(reloads), {{"result", "ok"}});
    m.sample(kReloads, static_cast<double>(reload_failures), {{"result", "failed"}});
  }
};

// A role's answer to `status --json`: its members (an "ok" member is
// ignored), or why it has none.
using RoleStatus = std::function<Result<json::object>()>;

// The replication link's security, for every role of this process.
class LinkSecurity {
 public:
  explicit LinkSecurity(std::function<void(const std::string&)> log) : log_(std::move(log)) {}

  // Loads the TLS identity into `s` (both roles), or checks that plaintext
  // is allowed on every replication address `s` names.
  Status start(NodeSettings& s) {
    if (s.tls.enabled()) {
      ROMULUS_ASSIGN_OR_RETURN(tls_, common::TlsIdentity::load(s.tls));
      s.primary.tls = tls_;
      s.backup.tls = tls_;
      mode_ = "mutual TLS 1.3";
      log_(fmt::format("replication link: mutual TLS 1.3; this node's {}", tls_->describe()));
      return Status::ok();
    }
    std::vector<std::pair<std::string, std::string>> addresses;  // (option, host:port)
    auto check = [&](const std::string& host, uint16_t port, const std::string& option) {
      if (host.empty()) return Status::ok();
      addresses.emplace_back(option, common::format_endpoint(host, port));
      return common::check_plaintext_allowed(host, port, option, s.insecure);
    };
    if (s.listen) ROMULUS_RETURN_IF_ERROR(check(s.listen->first, s.listen->second, "--listen"));
    ROMULUS_RETURN_IF_ERROR(check(s.primary.backup_host, s.primary.backup_port, "--backup"));
    if (s.peer_after_takeover) {
      ROMULUS_RETURN_IF_ERROR(
          check(s.peer_after_takeover->first, s.peer_after_takeover->second, "--reprotect"));
    }
    s.primary.insecure = s.insecure;
    std::string where;
    for (const auto& [option, ep] : addresses) {
      where += fmt::format("{}{} {}", where.empty() ? "" : ", ", option, ep);
    }
    if (s.insecure) {
      mode_ = "plaintext (--insecure)";
      log_(fmt::format(
          "WARNING: --insecure: the replication link ({}) is plaintext and unauthenticated: "
          "anyone who can reach it can replace the backup's image and make it take over, and "
          "anyone on the path can read the guest's memory (docs/operations.md, \"Certificates\")",
          where.empty() ? "none configured" : where));
    } else {
      mode_ = "plaintext (loopback)";
      log_(
          fmt::format("replication link: plaintext on loopback ({}); between hosts it needs "
                      "--tls-cert, --tls-key and --tls-ca",
                      where.empty() ? "none configured" : where));
    }
    return Status::ok();
  }

  // The witness's identity (etcds://; nullptr for etcd://), re-read by
  // reload() with the link's.
  void set_witness(std::shared_ptr<common::TlsIdentity> witness) { witness_ = std::move(witness); }

  // Whether there is anything for reload() to re-read.
  bool has_tls() const { return tls_ || witness_; }

  // Re-reads the TLS files for new connections: SIGHUP, `set tls reload`. The
  // link's and the witness's files are each re-read; one that fails keeps the
  // certificates it had (connections already up keep theirs either way).
  Status reload() {
    if (!has_tls()) {
      return Status::invalid_argument(
          "this node uses no TLS (no --tls-cert, no etcds:// witness): there are no "
          "certificates to reload");
    }
    std::string failed;
    auto one = [&](common::TlsIdentity& id, std::string_view what) {
      Status st = id.reload();
      if (!st.is_ok()) {
        ++reloads_failed_;
        log_(fmt::format("TLS reload of the {} failed, keeping the certificates in use: {}", what,
                         st.message()));
        failed += fmt::format("{}{}: {}", failed.empty() ? "" : "; ", what, st.message());
        return;
      }
      ++reloads_ok_;
      log_(fmt::format("TLS files of the {} re-read; new connections use this node's {}", what,
                       id.describe()));
    };
    if (tls_) one(*tls_, "replication link");
    if (witness_) one(*witness_, "witness");
    if (!failed.empty()) {
      return Status::invalid_argument(
          fmt::format("{} (the certificates in use stay; fix the files and reload again)", failed));
    }
    return Status::ok();
  }

  // What status --json's "tls" and the TLS metrics report, now.
  TlsStatus status() const {
    auto identity = [](const common::TlsIdentity& id, std::string mode) {
      return TlsStatus::Identity{std::move(mode), id.subject(), id.not_after(), id.describe()};
    };
    TlsStatus s;
    s.link_mode = mode_;
    if (tls_) s.link = identity(*tls_, mode_);
    if (witness_) s.witness = identity(*witness_, "mutual TLS 1.3");
    s.reloads = reloads_ok_.load();
    s.reload_failures = reloads_failed_.load();
    return s;
  }

  // A role's control handler, with the process's own requests in front:
  // `set tls reload`, and status, whose reply is the role's members and
  // "tls", serialised once here.
  common::ControlServer::Handler handler(common::ControlServer::Handler role,
                                         RoleStatus role_status) {
    return [this, role = std::move(role),
            role_status = std::move(role_status)](const std::string& request) {
      if (request == "set tls reload") {
        Status st = reload();
        if (!st.is_ok()) return common::json_error(st.message());
        json::object tls;
        status().write_json(tls);
        return common::json_ok(json::object{{"tls", std::move(tls)}});
      }
      if (request != "status" && request != "status --json") return role(request);
      auto o = role_status();
      if (!o.is_ok()) return common::json_error(o.status().message());
      json::object tls;
      status().write_json(tls);
      (*o)["tls"] = std::move(tls);
      return common::json_ok(std::move(*o));
    };
  }

  // A role's metrics handler with the TLS families appended.
  common::MetricsServer::Handler metrics_handler(common::MetricsServer::Handler role) {
    return [this, role = std::move(role)] {
      common::MetricsText tls;
      status().render_metrics(tls);
      return role() + tls.text();
    };
  }

 private:
  std::function<void(const std::string&)> log_;
  std::shared_ptr<common::TlsIdentity> tls_, witness_;
  std::string mode_;
  std::atomic<uint64_t> reloads_ok_{0}, reloads_failed_{0};
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

// The primary's status members. PrimaryNode gives its status only as reply
// text (checkpoint/primary.h), so this is the one place that reads a reply
// back; it goes once PrimaryNode offers its status as an object.
Result<json::object> primary_status(checkpoint::PrimaryNode& node) {
  const std::string reply = node.handle_control("status --json");
  ROMULUS_ASSIGN_OR_RETURN(json::object o,
                           common::parse_json_object(reply, "the primary's status"));
  if (!o.contains("role")) {
    const auto* error = o.if_contains("error");
    return Status::corrupt(error && error->is_string() ? std::string(error->as_string()) : reply);
  }
  return o;
}

Outcome run_primary(const std::string& role, checkpoint::PrimaryConfig config, NodeHost& host,
                    LinkSecurity& security, WitnessLink* link,
                    std::optional<common::SharedMemory> image, std::function<void()> on_started) {
  checkpoint::PrimaryNode node(std::move(config), host.log);
  report_states(node, host, role, checkpoint::PrimaryState::kStarting);
  if (image) node.adopt_arena(std::move(*image));
  if (on_started) node.set_on_started(std::move(on_started));
  if (link) {
    node.set_ownership(link);
    link->attach(&node);
  }
  if (host.control) {
    host.control->set_handler(
        security.handler([&node](const std::string& r) { return node.handle_control(r); },
                         [&node] { return primary_status(node); }));
  }
  if (host.metrics) {
    host.metrics->set_handler(security.metrics_handler(
        [&node, &host] { return primary_node_metrics(node, host.failovers); }));
  }
  if (host.on_stop) host.on_stop([&node] { node.request_stop(); });
  Outcome out;
  out.status = node.run();
  out.demoted = node.demoted();
  if (host.on_stop) host.on_stop(nullptr);
  if (host.control) host.control->set_handler(nullptr);
  if (host.metrics) host.metrics->set_handler(nullptr);
  if (link) link->attach(nullptr);
  return out;
}

std::string default_node_id(const NodeSettings& s) {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) std::snprintf(name, sizeof name, "node");
  if (s.listen)
    return fmt::format("{}/{}", name, common::format_endpoint(s.listen->first, s.listen->second));
  return fmt::format("{}/pid-{}", name, getpid());
}

}  // namespace

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
  if (settings.witness.endpoints.empty()) {
    host.log(
        "WARNING: no --witness: a network partition or a paused primary can leave two "
        "primaries and lose acknowledged writes (docs/operations.md, \"Running without a "
        "witness\")");
  } else {
    if (settings.witness.node_id.empty()) settings.witness.node_id = default_node_id(settings);
    const std::string replication =
        settings.listen ? common::format_endpoint(settings.listen->first, settings.listen->second)
                        : std::string();
    if (!etcd::is_tls_url(settings.witness.endpoints)) {
      auto eps = etcd::parse_endpoints(settings.witness.endpoints);
      for (const auto& ep : eps.is_ok() ? *eps : std::vector<etcd::Endpoint>{}) {
        if (common::is_loopback_host(ep.host)) continue;
        host.log(fmt::format(
            "WARNING: the witness {} is plain HTTP: whoever can reach etcd or sits on its path "
            "can read and forge the pair's ownership; use etcds:// (docs/operations.md, "
            "\"Certificates\")",
            settings.witness.endpoints));
        break;
      }
    }
    link.emplace(settings.witness, replication, host.log);
    ROMULUS_RETURN_IF_ERROR(link->start());
    host.log(fmt::format("witness {}: pair '{}', node '{}', lease {} s", settings.witness.endpoints,
                         settings.witness.pair, settings.witness.node_id,
                         settings.witness.lease_ttl.count()));
  }
  WitnessLink* w = link ? &*link : nullptr;
  if (w) security.set_witness(w->tls());
  BackgroundMeasurements measurements;
  // SIGHUP re-reads the TLS files (without TLS it stops the node, as before).
  if (host.on_reload && security.has_tls()) {
    host.on_reload([&security] { (void)security.reload(); });
  }

  StartAs role = start;
  while (true) {
    if (role == StartAs::kPrimary) {
      if (host.set_role) host.set_role("primary");
      if (w) {
        // Rule 1 at start: run the guest only as the owner.
        ROMULUS_RETURN_IF_ERROR(w->keeper().try_acquire());
        OwnershipState s = OwnershipState::kCandidate;
        while ((s = w->keeper().wait_while_candidate(std::chrono::seconds(2))) ==
               OwnershipState::kCandidate) {
          host.log(fmt::format("waiting to own the pair: {}",
                               w->keeper().snapshot(Clock::now()).detail));
        }
        if (s != OwnershipState::kOwner) {
          const auto snap = w->keeper().snapshot(Clock::now());
          host.log(fmt::format("another node ({}) owns the pair: starting as its backup",
                               snap.owner ? snap.owner->value.node : "?"));
          if (!settings.listen) {
            return Status::invalid_argument(
                "another node owns the pair and this node has no --listen address to rejoin it "
                "as a backup; give the primary --listen ADDR:PORT");
          }
          role = StartAs::kBackup;
          continue;
        }
      }
      Outcome o =
          run_primary("primary", settings.primary, host, security, w, std::nullopt, nullptr);
      if (!o.demoted) return o.status;
      if (!settings.listen) {
        return Status::aborted(
            "demoted: another node owns the pair, and without --listen this "
            "node cannot rejoin it as a backup; restart it as a backup");
      }
      role = StartAs::kBackup;
      continue;
    }

    // The backup.
    if (host.set_role) host.set_role("backup");
    measurements.start();
    if (!settings.listen)
      return Status::invalid_argument("--listen ADDR:PORT is required for a backup");
    BackupConfig bc = settings.backup;
    bc.listen_host = settings.listen->first;
    bc.listen_port = settings.listen->second;
    auto activation = [&]() {
      BackupNode node(bc, host.log);
      report_states(node, host, "backup", BackupState::kNoImage);
      if (w) node.set_takeover_gate(w);
      if (host.control) {
        host.control->set_handler(
            security.handler([&node](const std::string& r) { return node.handle_control(r); },
                             [&node]() -> Result<json::object> {
                               ROMULUS_ASSIGN_OR_RETURN(BackupMetrics m, node.metrics());
                               json::object o;
                               write_backup_status(m, o);
                               return o;
                             }));
      }
      if (host.metrics) {
        host.metrics->set_handler(security.metrics_handler(
            [&node, &host] { return backup_node_metrics(node, host.failovers); }));
      }
      if (host.on_stop) host.on_stop([&node] { node.request_stop(); });
      auto result = node.run();
      if (host.on_stop) host.on_stop(nullptr);
      if (host.control) host.control->set_handler(nullptr);
      if (host.metrics) host.metrics->set_handler(nullptr);
      return result;
    }();
    if (!activation.is_ok()) {
      if (activation.status().code() == StatusCode::kAborted) return Status::ok();  // stopped
      return activation.status();
    }

    // Take over: the committed image becomes the guest's arena.
    auto a = std::move(activation).value();
    if (host.set_role) host.set_role("primary (took over)");
    ++host.failovers;
    host.log(fmt::format("TAKING OVER ({}): resuming the guest from epoch {}", a.reason, a.epoch));
    checkpoint::PrimaryConfig pc = settings.primary;
    pc.resumed_epoch = a.epoch;
    pc.session_id = a.session_id;
    pc.tracker_costs = measurements.latest();
    if (pc.tracker_costs) {
      host.log(fmt::format("tracker costs: measured {} s ago while this node was the backup",
                           measurements.age().count()));
    }
    if (settings.peer_after_takeover) {
      pc.backup_host = settings.peer_after_takeover->first;
      pc.backup_port = settings.peer_after_takeover->second;
    } else {
      pc.backup_host.clear();
      pc.backup_port = 0;
    }
    const auto last_contact = a.last_contact;
    const auto hook = settings.on_failover;
    const uint64_t epoch = a.epoch;
    auto log = host.log;
    auto on_started = [last_contact, hook, epoch, log] {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_contact)
              .count();
      log(fmt::format(
          "guest running from epoch {}: {} ms from last contact with the primary to guest running",
          epoch, ms));
      if (hook) {
        const std::string cmd = fmt::format("ROMULUS_EPOCH={} {}", epoch, *hook);
        const int rc = std::system(cmd.c_str());
        if (rc != 0) log(fmt::format("--on-failover command exited with {}", rc));
      }
    };
    Outcome o = run_primary("primary (took over)", std::move(pc), host, security, w,
                            std::move(a.image), on_started);
    if (!o.demoted) return o.status;
    role = StartAs::kBackup;  // rejoin the owner as its backup
  }
}

}  // namespace romulus::replica
