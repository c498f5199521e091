// romulus: the command. Parses options once, then runs a node (primary, or
// backup that may take over: replica/takeover.h) or talks to a running node
// through its control socket. Exceptions stop here; every error leaves as one
// line saying what happened and what to do.
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <signal.h>

#include <atomic>
#include <boost/json.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/primary.h"
#include "checkpoint/run_time_settings.h"
#include "checkpoint/stats.h"
#include "cli/options.h"
#include "cli/sqlite_export.h"
#include "common/control_server.h"
#include "common/json.h"
#include "common/log.h"
#include "common/service_notify.h"
#include "replica/takeover.h"
#include "witness/etcd_witness.h"
#include "witness/lease_guard.h"

namespace {

using namespace romulus;
namespace json = boost::json;

// Signals are taken synchronously by a watcher thread (sigwait), which asks
// the running role to stop: no work in signal-handler context.
class SignalWatcher {
 public:
  explicit SignalWatcher(const common::Logger& log) : log_(log) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] {
      int sig = 0;
      while (sigwait(&set_, &sig) == 0) {
        if (done_.load()) return;
        std::lock_guard lock(mu_);
        if (sig == SIGHUP && reload_) {
          log_("SIGHUP received; re-reading the TLS files");
          reload_();
          continue;
        }
        log_(fmt::format("{} received; stopping", strsignal(sig)));
        if (handler_) handler_();
      }
    });
  }
  ~SignalWatcher() {
    done_.store(true);
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }
  // What a signal stops; replaced when a backup becomes a primary.
  void set_handler(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    handler_ = std::move(fn);
  }
  // What SIGHUP does instead of stopping (re-reading the TLS files); nullptr: stop.
  void set_reload(std::function<void()> fn) {
    std::lock_guard lock(mu_);
    reload_ = std::move(fn);
  }

 private:
  const common::Logger& log_;
  sigset_t set_{};
  std::thread thread_;
  std::mutex mu_;
  std::function<void()> handler_;
  std::function<void()> reload_;
  std::atomic<bool> done_{false};
};

// Everything a node needs, whichever role it starts in.
replica::NodeSettings to_node_settings(const cli::NodeOptions& o) {
  replica::NodeSettings s;
  s.primary = o.primary;
  s.listen = o.listen;
  if (o.witness.enabled()) {
    s.witness.url = o.witness.url;
    s.witness.pair = o.witness.pair;
    s.witness.lease_ttl = std::chrono::duration_cast<std::chrono::seconds>(o.witness.lease_ttl);
    s.witness.node_id = o.witness.node_id;
    if (o.witness.url.tls)
      s.witness.tls = common::TlsFiles{o.witness.cert, o.witness.key, o.witness.ca, ""};
    s.witness.guard_program = "/proc/self/exe";  // this very binary, even if replaced on disk
    if (const char* f = std::getenv("ROMULUS_LEASE_FILE"); f != nullptr) s.witness.lease_file = f;
  }
  s.tls = common::TlsFiles{o.link.cert, o.link.key, o.link.ca, o.link.peer_name};
  s.insecure = o.link.insecure;
  return s;
}

// Opens the witness at `url` afresh on each call (etcds://: the TLS files are
// read again, so a certificate renewed on disk is used), for the lease guard
// and release-lease, which act long after they start.
std::function<Result<std::unique_ptr<witness::Witness>>()> witness_opener(
    const witness::etcd::EtcdUrl& url, const common::TlsFiles& tls) {
  return [url, tls]() -> Result<std::unique_ptr<witness::Witness>> {
    witness::etcd::EtcdClient::Options options;
    if (url.tls) {
      auto id = common::TlsIdentity::load(tls);
      if (!id.is_ok()) return id.status().context("the witness's TLS files");
      options.tls = *id;
    }
    return std::unique_ptr<witness::Witness>(
        std::make_unique<witness::EtcdWitness>(url.endpoints, options));
  };
}

// `romulus lease-guard`: gives up the lease of its node if the node dies.
int run_lease_guard(const cli::LeaseGuardCommand& c) {
  // Whatever else the node left open without O_CLOEXEC (its control and
  // metrics listeners) must not outlive it here: a restarted node could not
  // bind them while this guard still tries the witness.
  ::close_range(witness::kGuardCommandFd + 1, ~0U, 0);
  common::Logger log("lease-guard");
  witness::LeaseGuardConfig config;
  config.node = c.node_pid;
  config.key = witness::owner_key(c.pair);
  config.give_up_for = c.lease_ttl;
  config.log = [&log](const std::string& line) { log(line); };
  config.open_witness = witness_opener(c.url, common::TlsFiles{c.cert, c.key, c.ca, ""});
  return witness::run_lease_guard(config);
}

// `romulus release-lease`: after a node's process has gone (ExecStopPost),
// gives up the lease it left in its lease file. Exit 0 unless misused: a
// service manager's stop must not fail for a lease that expires anyway.
int run_release_lease(const cli::ReleaseLeaseCommand& c) {
  common::Logger log("release-lease");
  if (!c.witness.enabled()) {
    log("the node has no --witness: no lease to give up");
    return 0;
  }
  auto file = witness::read_lease_file(c.lease_file);
  if (!file.is_ok()) {
    if (file.status().code() == StatusCode::kIoError || !std::filesystem::exists(c.lease_file)) {
      log(fmt::format("no lease file {}: no lease to give up", c.lease_file));
      return 0;
    }
    log(file.status().message());
    return 0;
  }
  if (file->lease == 0) return 0;  // the node gave its lease up itself, or held none
  if (!witness::process_exited(file->node)) {
    log(fmt::format("romulus (pid {}) is still running: its lease {} stays its own", file->node,
                    file->lease));
    return 0;
  }
  auto open = witness_opener(c.witness.url,
                             common::TlsFiles{c.witness.cert, c.witness.key, c.witness.ca, ""});
  const auto ttl = std::chrono::duration_cast<std::chrono::milliseconds>(c.witness.lease_ttl);
  Status st = witness::release_dead_lease(open, witness::owner_key(c.witness.pair), file->lease,
                                          ttl, std::chrono::milliseconds(50));
  if (!st.is_ok()) {
    log(fmt::format("could not give lease {} of romulus (pid {}) up ({}); it expires by itself",
                    file->lease, file->node, st.message()));
    return 0;
  }
  log(fmt::format("romulus (pid {}) has exited: gave its lease {} up at the witness", file->node,
                  file->lease));
  (void)witness::write_lease_file(c.lease_file, {file->node, 0});
  return 0;
}

int exit_code_for(const Status& st) {
  if (st.is_ok()) return 0;
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
      return 2;
    case StatusCode::kAborted:
      return 3;  // the guest exited
    default:
      return 1;
  }
}

// Runs one node: its control socket, its signals, then `role`.
int run_node(const std::string& role_name, const cli::NodeOptions& node,
             const std::function<Status(replica::NodeHost&)>& role) {
  const std::string& control_path = node.control_path;
  const std::optional<cli::Endpoint>& metrics_at = node.metrics;
  common::Logger log(role_name);
  SignalWatcher signals(log);
  std::optional<common::ControlServer> control;
  if (!control_path.empty()) {
    control.emplace(control_path, std::ref(log));
    Status cs = control->start();
    if (!cs.is_ok()) {
      log(cs.message() + "; continuing without a control socket");
      control.reset();
    }
  }
  std::optional<common::MetricsServer> metrics;
  if (metrics_at) {
    metrics.emplace(metrics_at->host, metrics_at->port, std::ref(log));
    if (Status ms = metrics->start(); !ms.is_ok()) {
      log(ms.message());
      return exit_code_for(ms);
    }
  }
  replica::NodeHost host;
  host.log = std::ref(log);
  host.control = control ? &*control : nullptr;
  host.metrics = metrics ? &*metrics : nullptr;
  host.on_stop = [&signals](std::function<void()> fn) { signals.set_handler(std::move(fn)); };
  host.set_role = [&log](const std::string& r) { log.set_role(r); };
  common::ServiceNotifier notifier(std::ref(log));
  if (notifier.active()) {
    host.on_state = [&notifier](std::string_view r, std::string_view s, common::ServicePhase p) {
      notifier.state_changed(r, s, p);
    };
  }
  host.on_reload = [&signals](std::function<void()> fn) { signals.set_reload(std::move(fn)); };
  const Status st = role(host);
  notifier.state_changed(role_name, "stopped", common::ServicePhase::kStopping);
  if (!st.is_ok()) {
    log(st.message());
    return exit_code_for(st);
  }
  log("stopped");
  return 0;
}

std::vector<std::string> control_paths(const std::string& given) {
  if (!given.empty()) return {given};
  std::vector<std::string> paths;
  for (const char* role : {"primary", "backup"}) {
    const std::string p = cli::default_control_path(role);
    if (std::filesystem::exists(p)) paths.push_back(p);
  }
  if (paths.empty()) paths.push_back(cli::default_control_path("primary"));
  return paths;
}

// Reads a member by path ("primary.pause_ms.p50") as text, "?" if absent.
std::string field(const json::object& o, std::string_view path) {
  const json::value* v = nullptr;
  const json::object* cur = &o;
  while (cur) {
    const auto dot = path.find('.');
    const auto key = path.substr(0, dot);
    v = cur->if_contains(key);
    if (!v) return "?";
    if (dot == std::string_view::npos) break;
    path = path.substr(dot + 1);
    cur = v->if_object();
    if (!cur) return "?";
  }
  if (!v) return "?";
  if (v->is_string()) return std::string(v->get_string());
  if (v->is_double()) return fmt::format("{:.3g}", v->get_double());
  return json::serialize(*v);
}

double number(const json::object& o, std::string_view path) {
  try {
    return std::stod(field(o, path));
  } catch (...) {
    return 0;
  }
}

// "  link mutual TLS 1.3 (CN=a, until 2027-11-30 UTC); witness mutual TLS 1.3 (...)".
std::string format_tls(const json::object& t) {
  const json::value* tls = t.if_contains("tls");
  if (!tls || !tls->is_object()) return "";
  auto one = [&](std::string_view part) -> std::string {
    const std::string mode = field(t, fmt::format("tls.{}.mode", part));
    if (mode == "?") return "";
    std::string s = fmt::format("{} {}", part, mode);
    const double until = number(t, fmt::format("tls.{}.not_after", part));
    if (until > 0) {
      s += fmt::format(" ({}, until {:%Y-%m-%d %H:%M} UTC)",
                       field(t, fmt::format("tls.{}.certificate", part)),
                       fmt::gmtime(static_cast<std::time_t>(until)));
    }
    return s;
  };
  std::string out = "  " + one("link");
  if (std::string w = one("witness"); !w.empty()) out += "; " + w;
  return out + "\n";
}

// A node's status, for people: the JSON of `status --json`, a line or two per part.
std::string format_status(const std::string& path, const json::object& t) {
  auto get = [&](std::string_view k) { return field(t, k); };
  std::string out = fmt::format("{}: {} — {}\n", path, get("role"), get("state"));
  out += format_tls(t);
  if (get("role") == "backup") {
    out += fmt::format(
        "  listen {}, primary {}, committed epoch {} (image consistent: {}), "
        "{} checkpoints committed, last contact {} ms ago, primary {}\n",
        get("listen"), get("peer").empty() ? "none" : get("peer"), get("last_committed_epoch"),
        get("image_consistent"), get("checkpoints_committed"), get("ms_since_contact"),
        get("detector.verdict"));
    return out;
  }
  out += fmt::format("  backup {}, guest pid {}, interval {} ms, tracker {}, codec {}{}\n",
                     get("peer").empty() ? "none" : get("peer"), get("guest_pid"),
                     get("interval_ms"), get("tracker"), get("codec"),
                     get("resumed") == "true" ? ", resumed after failover" : "");
  out += fmt::format(
      "  epochs {} (acked {}), pause p50 {} ms p99 {} ms max {} ms, compression {}x, "
      "{:.2f} MB/s on the wire\n",
      get("primary.epochs"), get("primary.acked_epoch"), get("primary.pause_ms.p50"),
      get("primary.pause_ms.p99"), get("primary.pause_ms.max"), get("primary.compression_ratio"),
      number(t, "primary.wire_bytes_per_sec") / 1e6);
  out += fmt::format(
      "  commit {} (min gap {} ms), guest stopped {:.1f}% of the time, checkpoints/s: "
      "{:.1f} by timer, {:.1f} by output\n",
      get("commit"), get("min_gap_ms"), 100 * number(t, "guest_stopped_fraction"),
      number(t, "checkpoints_per_sec.timer"), number(t, "checkpoints_per_sec.output"));
  const double lookups = number(t, "primary.cache.lookups");
  out += fmt::format("  page cache hit rate {:.0f}%, {} stretched intervals, {} postponed pauses\n",
                     lookups > 0 ? 100.0 * number(t, "primary.cache.hits") / lookups : 0.0,
                     get("primary.stretched_intervals"), get("primary.postponed_pauses"));
  if (const auto* output = t.if_contains("output"); output && output->is_object()) {
    out += fmt::format(
        "  output {}: {} bytes held, added latency p50 {} ms p99 {} ms, {} open connections\n",
        get("output.buffering") == "true" ? "held until acked" : "released at once",
        get("output.bytes_held"), get("output.added_latency_p50_ms"),
        get("output.added_latency_p99_ms"), get("output.open_connections"));
  }
  if (number(t, "primary.epochs") > 0 && get("primary.pause_phases_ms.stop.p50") != "?") {
    // The pause, part by part (docs/operations.md, "Where a reply's time goes").
    std::string parts;
    for (const auto& [p, phase] : checkpoint::kPausePhases) {
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", phase,
                           get(fmt::format("primary.pause_phases_ms.{}.p50", phase)));
    }
    out += fmt::format("  pause p50 (ms): {}\n", parts);
  }
  if (number(t, "primary.output_path_ms.checkpoints") > 0) {
    // Where a reply's time goes (docs/operations.md): each hop's p50.
    std::string hops;
    for (const char* hop : {"wait", "pause", "send", "ack", "release"}) {
      const std::string v = get(fmt::format("primary.output_path_ms.{}.p50", hop));
      if (v == "?") continue;
      hops += fmt::format("{}{} {}", hops.empty() ? "" : ", ", hop, v);
    }
    out += fmt::format("  output path p50 (ms): {}\n", hops);
  }
  if (!get("last_backup_loss").empty() && get("last_backup_loss") != "?")
    out += "  last backup loss: " + get("last_backup_loss") + "\n";
  return out;
}

// How long `romulus snapshot` waits for the backup to write the file (a few
// GiB at disk speed).
constexpr std::chrono::minutes kSnapshotReplyWithin{10};

// Sends `request` to each node; errors leave as one line on stderr.
int run_request(const std::string& given, const std::string& request, bool raw,
                std::chrono::milliseconds timeout = common::kControlReplyWithin) {
  int rc = 0;
  for (const auto& path : control_paths(given)) {
    auto reply = common::control_request(path, request, timeout);
    if (!reply.is_ok()) {
      std::fprintf(stderr, "romulus: %s\n", reply.status().message().c_str());
      rc = 1;
      continue;
    }
    auto tree = common::parse_json_object(*reply, fmt::format("the reply of {}", path));
    if (!tree.is_ok()) {
      std::fprintf(stderr, "romulus: %s: %s\n", tree.status().message().c_str(), reply->c_str());
      rc = 1;
      continue;
    }
    const json::value* ok = tree->if_contains("ok");
    if (!ok || !ok->is_bool() || !ok->get_bool()) {
      const json::value* err = tree->if_contains("error");
      std::fprintf(
          stderr, "romulus: %s: %s\n", path.c_str(),
          err && err->is_string() ? std::string(err->get_string()).c_str() : reply->c_str());
      rc = 1;
      continue;
    }
    if (raw) {
      std::printf("%s\n", reply->c_str());
    } else {
      std::printf("%s", format_status(path, *tree).c_str());
    }
  }
  return rc;
}

// `romulus sqlite-export`: from a snapshot file, or from one the backup at
// --control writes first (removed after).
int run_sqlite_export(const cli::SqliteExportCommand& c) {
  std::string snapshot = c.snapshot;
  std::string temporary;
  if (snapshot.empty()) {
    temporary =
        (c.list ? std::filesystem::temp_directory_path().string() + "/romulus-export" : c.out) +
        fmt::format(".{}.snapshot", getpid());
    auto reply =
        common::control_request(c.control_path, "snapshot " + temporary, kSnapshotReplyWithin);
    if (!reply.is_ok()) {
      std::fprintf(stderr, "romulus: %s\n", reply.status().message().c_str());
      return 1;
    }
    auto tree = common::parse_json_object(*reply, "the backup's reply");
    const json::value* ok = tree.is_ok() ? tree->if_contains("ok") : nullptr;
    if (!ok || !ok->is_bool() || !ok->get_bool()) {
      std::fprintf(stderr, "romulus: sqlite-export: the snapshot failed: %s\n", reply->c_str());
      return 1;
    }
    snapshot = temporary;
  }
  auto result = cli::sqlite_export(snapshot, c.list ? std::string() : c.database, c.out);
  if (!temporary.empty()) std::filesystem::remove(temporary);
  if (!result.is_ok()) {
    std::fprintf(stderr, "romulus: sqlite-export: %s\n", result.status().message().c_str());
    return 1;
  }
  if (c.list) {
    for (const auto& name : result->names) std::printf("%s\n", name.c_str());
    return 0;
  }
  std::printf("exported %s at epoch %llu to %s (%llu bytes, integrity ok)\n", c.database.c_str(),
              static_cast<unsigned long long>(result->epoch), c.out.c_str(),
              static_cast<unsigned long long>(result->bytes));
  return 0;
}

int run(int argc, char** argv) {
  auto cmd = cli::parse_command_line(argc, argv);
  if (!cmd.is_ok()) {
    std::fprintf(stderr, "romulus: %s\n", cmd.status().message().c_str());
    return 2;
  }
  return std::visit(
      [](auto& c) -> int {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, cli::HelpCommand>) {
          std::printf("%s", c.text.c_str());
          return 0;
        } else if constexpr (std::is_same_v<T, cli::NodeOptions>) {
          return run_node("primary", c, [&c](replica::NodeHost& host) {
            auto settings = to_node_settings(c);
            settings.peer_after_takeover = c.primary.backup;
            return replica::run_node(replica::StartAs::kPrimary, std::move(settings), host);
          });
        } else if constexpr (std::is_same_v<T, cli::BackupOptions>) {
          return run_node("backup", c.node, [&c](replica::NodeHost& host) {
            auto settings = to_node_settings(c.node);
            if (c.reprotect) {
              settings.peer_after_takeover = c.reprotect;
            }
            settings.on_failover = c.on_failover;
            return replica::run_node(replica::StartAs::kBackup, std::move(settings), host);
          });
        } else if constexpr (std::is_same_v<T, cli::LeaseGuardCommand>) {
          return run_lease_guard(c);
        } else if constexpr (std::is_same_v<T, cli::ReleaseLeaseCommand>) {
          return run_release_lease(c);
        } else if constexpr (std::is_same_v<T, cli::StatusCommand>) {
          return run_request(c.control_path, c.json ? "status --json" : "status", c.json);
        } else if constexpr (std::is_same_v<T, cli::SetCommand>) {
          // The operator's text: the node reads it as its start-up options read
          // it (a bare duration gets its unit: checkpoint::value_to_send).
          const auto* s = checkpoint::find_run_time_setting(c.name);
          return run_request(
              c.control_path,
              "set " + c.name + " " + (s ? checkpoint::value_to_send(*s, c.value) : c.value), true);
        } else if constexpr (std::is_same_v<T, cli::SqliteExportCommand>) {
          return run_sqlite_export(c);
        } else if constexpr (std::is_same_v<T, cli::SnapshotCommand>) {
          return run_request(
              c.control_path.empty() ? cli::default_control_path("backup") : c.control_path,
              "snapshot " + c.file, true, kSnapshotReplyWithin);
        } else {
          return run_request(
              c.control_path.empty() ? cli::default_control_path("backup") : c.control_path,
              "failover", true);
        }
      },
      *cmd);
}

}  // namespace

int main(int argc, char** argv) {
  romulus::checkpoint::keep_checkpoint_buffers_in_heap();
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus: internal error: %s\n", e.what());
    return 1;
  }
}
