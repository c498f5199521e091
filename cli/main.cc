// romulus: the command. Parses options once, then runs a primary, a backup
// (which becomes a primary when it takes over), or talks to a running node
// through its control socket. Exceptions stop here; every error leaves as one
// line saying what happened and what to do.
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
// property_tree's JSON parser still includes <boost/bind.hpp>, which (in Boost
// 1.74) prints a deprecation note unless told to keep the global placeholders.
#define BOOST_BIND_GLOBAL_PLACEHOLDERS
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "checkpoint/control_server.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/primary.h"
#include "cli/options.h"
#include "replica/backup_node.h"

namespace {

using namespace romulus;
using Clock = std::chrono::steady_clock;

std::string g_role = "romulus";

void log_line(const std::string& msg) {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%03lld romulus %s: %s\n", stamp, static_cast<long long>(ms),
               g_role.c_str(), msg.c_str());
  std::fflush(stderr);
}

// Signals are taken synchronously by a watcher thread (sigwait), which asks
// the running node to stop: no work in signal-handler context.
struct SignalWatcher {
  sigset_t set{};
  std::thread thread;
  std::mutex mu;
  std::function<void()> on_signal;
  std::atomic<bool> done{false};

  SignalWatcher() {
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    thread = std::thread([this] {
      int sig = 0;
      while (sigwait(&set, &sig) == 0) {
        if (done.load()) return;
        log_line(fmt::format("{} received; stopping", strsignal(sig)));
        std::lock_guard lock(mu);
        if (on_signal) on_signal();
      }
    });
  }
  // Which node a signal stops; replaced when a backup becomes a primary.
  void set_handler(std::function<void()> fn) {
    std::lock_guard lock(mu);
    on_signal = std::move(fn);
  }
  ~SignalWatcher() {
    done.store(true);
    pthread_kill(thread.native_handle(), SIGTERM);
    thread.join();
  }
};

checkpoint::PrimaryConfig to_primary_config(const cli::PrimaryOptions& o) {
  checkpoint::PrimaryConfig c;
  if (o.backup) {
    c.backup_host = o.backup->host;
    c.backup_port = o.backup->port;
  }
  c.backup_null = o.backup_null;
  c.interval = o.interval;
  c.memory_bytes = o.memory_bytes;
  c.tracker = o.tracker == cli::TrackerChoice::kUffd      ? checkpoint::TrackerKind::kUffd
              : o.tracker == cli::TrackerChoice::kCompare ? checkpoint::TrackerKind::kCompare
                                                          : checkpoint::TrackerKind::kAuto;
  c.threads = o.threads;
  c.staging_bytes = o.staging_bytes;
  c.cache_bytes = o.cache_bytes;
  c.encode.codec = o.codec;
  c.encode.lz4 = o.lz4 == cli::Lz4Choice::kOff      ? protocol::EncodeOptions::Lz4::kOff
                 : o.lz4 == cli::Lz4Choice::kAlways ? protocol::EncodeOptions::Lz4::kAlways
                                                    : protocol::EncodeOptions::Lz4::kAuto;
  c.heartbeat = o.heartbeat;
  c.failover_timeout = o.failover_timeout;
  c.gate_timeout = o.gate_timeout;
  c.stats_period = o.stats_period;
  c.on_backup_loss = o.on_backup_loss == cli::BackupLossPolicy::kStall
                         ? checkpoint::BackupLoss::kStall
                         : checkpoint::BackupLoss::kContinue;
  c.control_path = o.control_path;
  if (o.service) {
    c.service_host = o.service->host;
    c.service_port = o.service->port;
  }
  c.output_buffering = o.output_buffering;
  c.guest_command = o.guest_command;
  return c;
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

int run_primary_node(checkpoint::PrimaryConfig config, SignalWatcher& signals,
                     std::optional<checkpoint::SharedMemory> image,
                     std::function<void()> on_started) {
  checkpoint::PrimaryNode node(std::move(config), log_line);
  if (image) node.adopt_arena(std::move(*image));
  if (on_started) node.set_on_started(std::move(on_started));
  signals.set_handler([&node] { node.request_stop(); });
  Status st = node.run();
  signals.set_handler(nullptr);
  if (!st.is_ok()) {
    log_line(st.message());
    return exit_code_for(st);
  }
  log_line("stopped");
  return 0;
}

int run_primary(const cli::PrimaryOptions& o) {
  g_role = "primary";
  SignalWatcher signals;
  return run_primary_node(to_primary_config(o), signals, std::nullopt, nullptr);
}

int run_backup(const cli::BackupOptions& o) {
  g_role = "backup";
  SignalWatcher signals;
  replica::BackupConfig bc;
  bc.listen_host = o.listen.host;
  bc.listen_port = o.listen.port;
  bc.memory_bytes = o.primary.memory_bytes;
  bc.heartbeat = o.primary.heartbeat;
  bc.failover_timeout = o.primary.failover_timeout;
  bc.control_path = o.primary.control_path;
  auto activation = [&]() {
    replica::BackupNode node(bc, log_line);
    signals.set_handler([&node] { node.request_stop(); });
    auto result = node.run();
    signals.set_handler(nullptr);
    return result;
  }();
  if (!activation.is_ok()) {
    if (activation.status().code() == StatusCode::kAborted) {
      log_line("stopped");
      return 0;
    }
    log_line(activation.status().message());
    return exit_code_for(activation.status());
  }
  // Take over: the committed image becomes the guest's arena.
  auto a = std::move(activation).value();
  g_role = "primary (took over)";
  log_line(fmt::format("TAKING OVER ({}): resuming the guest from epoch {}", a.reason, a.epoch));
  checkpoint::PrimaryConfig pc = to_primary_config(o.primary);
  pc.resumed_epoch = a.epoch;
  pc.session_id = a.session_id;
  if (o.reprotect) {
    pc.backup_host = o.reprotect->host;
    pc.backup_port = o.reprotect->port;
  }
  const auto last_contact = a.last_contact;
  const auto hook = o.on_failover;
  const uint64_t epoch = a.epoch;
  auto on_started = [last_contact, hook, epoch] {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_contact).count();
    log_line(
        fmt::format("guest running from epoch {}: {} ms from last contact with the primary "
                    "to guest running",
                    epoch, ms));
    if (hook) {
      const std::string cmd = fmt::format("ROMULUS_EPOCH={} {}", epoch, *hook);
      const int rc = std::system(cmd.c_str());
      if (rc != 0) log_line(fmt::format("--on-failover command exited with {}", rc));
    }
  };
  return run_primary_node(std::move(pc), signals, std::move(a.image), on_started);
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

// A node's status, for people: the JSON of `status --json`, a line or two per part.
std::string format_status(const std::string& path, const boost::property_tree::ptree& t) {
  auto get = [&](const char* k) { return t.get<std::string>(k, "?"); };
  std::string out = fmt::format("{}: {} — {}\n", path, get("role"), get("state"));
  if (get("role") == "backup") {
    out += fmt::format(
        "  listen {}, primary {}, committed epoch {} (image consistent: {}), "
        "{} checkpoints committed, last contact {} ms ago\n",
        get("listen"), t.get<std::string>("peer", "") == "" ? "none" : get("peer"),
        get("last_committed_epoch"), get("image_consistent"), get("checkpoints_committed"),
        get("ms_since_contact"));
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
      t.get<double>("primary.wire_bytes_per_sec", 0) / 1e6);
  const double lookups = t.get<double>("primary.cache.lookups", 0);
  out += fmt::format("  page cache hit rate {:.0f}%, {} stretched intervals, {} postponed pauses\n",
                     lookups > 0 ? 100.0 * t.get<double>("primary.cache.hits", 0) / lookups : 0.0,
                     get("primary.stretched_intervals"), get("primary.postponed_pauses"));
  if (t.get_child_optional("output.buffering")) {
    out += fmt::format(
        "  output {}: {} bytes held, added latency p50 {} ms p99 {} ms, {} open connections\n",
        get("output.buffering") == "true" ? "held until acked" : "released at once",
        get("output.bytes_held"), get("output.added_latency_p50_ms"),
        get("output.added_latency_p99_ms"), get("output.open_connections"));
  }
  if (!get("last_backup_loss").empty())
    out += "  last backup loss: " + get("last_backup_loss") + "\n";
  return out;
}

// Sends `request` to each node; errors leave as one line on stderr.
int run_request(const std::string& given, const std::string& request, bool raw) {
  int rc = 0;
  for (const auto& path : control_paths(given)) {
    auto reply = checkpoint::control_request(path, request);
    if (!reply.is_ok()) {
      std::fprintf(stderr, "romulus: %s\n", reply.status().message().c_str());
      rc = 1;
      continue;
    }
    boost::property_tree::ptree tree;
    try {
      std::istringstream in(*reply);
      boost::property_tree::read_json(in, tree);
    } catch (const std::exception&) {
      std::fprintf(stderr, "romulus: %s answered something that is not JSON: %s\n", path.c_str(),
                   reply->c_str());
      rc = 1;
      continue;
    }
    if (tree.get<std::string>("ok", "false") != "true") {
      std::fprintf(stderr, "romulus: %s\n", tree.get<std::string>("error", *reply).c_str());
      rc = 1;
      continue;
    }
    if (raw) {
      std::printf("%s\n", reply->c_str());
    } else {
      std::printf("%s", format_status(path, tree).c_str());
    }
  }
  return rc;
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
        } else if constexpr (std::is_same_v<T, cli::PrimaryOptions>) {
          return run_primary(c);
        } else if constexpr (std::is_same_v<T, cli::BackupOptions>) {
          return run_backup(c);
        } else if constexpr (std::is_same_v<T, cli::StatusCommand>) {
          return run_request(c.control_path, c.json ? "status --json" : "status", c.json);
        } else if constexpr (std::is_same_v<T, cli::SetCommand>) {
          std::string value = c.value;
          // Durations and sizes travel in base units.
          if (c.name == "interval") {
            auto d = cli::parse_duration(c.value);
            if (!d.is_ok()) {
              std::fprintf(stderr, "romulus: %s\n", d.status().message().c_str());
              return 2;
            }
            value = std::to_string(d->count());
          } else if (c.name == "cache") {
            auto s = cli::parse_size(c.value);
            if (!s.is_ok()) {
              std::fprintf(stderr, "romulus: %s\n", s.status().message().c_str());
              return 2;
            }
            value = std::to_string(*s);
          }
          return run_request(c.control_path, "set " + c.name + " " + value, true);
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
