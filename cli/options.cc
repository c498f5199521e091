#include "cli/options.h"

#include "checkpoint/run_time_settings.h"
#include "common/tls.h"
#include "common/units.h"
#include "witness/ownership.h"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace romulus::cli {
namespace po = boost::program_options;
using common::parse_duration;
using common::parse_size;

namespace {

// --heartbeat's floor: it is kept in whole milliseconds, and 0 would be no heartbeat.
constexpr std::chrono::milliseconds kMinHeartbeat{1};
// --lease-ttl's ceiling (its floor is the witness's, witness::kMinTtl): a
// longer lease would keep a pair whose owner died from failing over for minutes.
constexpr std::chrono::minutes kMaxLeaseTtl{5};

constexpr const char* kSqliteExportUsage =
    "romulus sqlite-export DATABASE OUT (--snapshot FILE | --control PATH), or "
    "romulus sqlite-export --list (--snapshot FILE | --control PATH)";

constexpr const char* kUsage = R"(usage:
  romulus backup  --listen ADDR:PORT [options] -- GUEST-COMMAND...
  romulus primary --backup ADDR:PORT|null [options] -- GUEST-COMMAND...
  romulus status [--json] [--control PATH]
  romulus set NAME VALUE [--control PATH]   (e.g. set interval 25ms; set --help lists them)
  romulus failover [--control PATH]
  romulus snapshot FILE [--control PATH]   (the backup's committed image, written to FILE)
  romulus sqlite-export DATABASE OUT (--snapshot FILE | --control PATH) | --list ...
  romulus release-lease primary|backup [--lease-file FILE] NODE-OPTIONS...   (after a crash: gives up the node's witness lease)
  romulus lease-guard --node-pid PID --witness URL --pair NAME --lease-ttl Ns   (a --witness node's companion: gives its lease up if it dies)
  romulus --version

An example pair on one machine (start the backup first):
  romulus backup  --listen 127.0.0.1:7000 --service 127.0.0.1:6380 -- romulus-kvstore
  romulus primary --backup 127.0.0.1:7000 --service 127.0.0.1:6379 --interval 50ms -- romulus-kvstore
If the primary dies, the backup resumes the guest from the last committed
checkpoint and serves on its own --service address.

Between hosts the link needs mutual TLS (or --insecure), on both nodes:
  --tls-cert node.crt --tls-key node.key --tls-ca pair-ca.crt [--tls-peer-name OTHER-NODE]
)";

// An enum option's value by its names table; the error names the option.
template <typename E, size_t N>
Result<E> named(std::string_view option, const EnumName<E> (&table)[N], const std::string& text) {
  auto v = parse_enum(table, text);
  if (!v.is_ok())
    return Status::invalid_argument(fmt::format("{} {}", option, v.status().message()));
  return *v;
}

// An address option's value; the error names the option.
Result<Endpoint> endpoint(std::string_view option, const std::string& text) {
  auto ep = Endpoint::parse(text);
  if (!ep.is_ok())
    return Status::invalid_argument(fmt::format("{} {}", option, ep.status().message()));
  return *ep;
}

// `romulus set --help`: the settings, from their one table.
std::string set_help() {
  std::string out =
      "usage: romulus set NAME VALUE [--control PATH]\n\n"
      "Changes a setting of the running node at --control (default: each node on this machine).\n"
      "Durations and sizes are written as for the options (25ms, 128M).\n\n"
      "settings:\n";
  for (const auto& st : checkpoint::run_time_settings()) {
    const std::string head = fmt::format("{} {}", st.name, st.value);
    out += fmt::format("  {:<34} {}\n", head, checkpoint::describe(st));
  }
  return out;
}

}  // namespace

std::string default_control_path(const std::string& role) {
  if (const char* env = std::getenv("ROMULUS_CONTROL"); env != nullptr && *env) return env;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg) {
    return fmt::format("{}/romulus/{}.sock", xdg, role);
  }
  return fmt::format("/run/romulus/{}.sock", role);
}

namespace {

// The options as text, as given on the command line or in the config file.
// Nothing here has a default: what was not given leaves NodeOptions' typed
// default in place (cook() asks the variables_map what was given).
struct RawNodeOptions {
  std::string backup, listen, memory, service, tracker, staging, lz4, heartbeat, failover_timeout,
      gate_timeout, stats_period, control, on_failover, reprotect, config, witness, pair, lease_ttl,
      node_id, metrics, data_dir, durable, from_snapshot, disk_backlog;
  bool force_data_dir = false;
  bool vm = false;
  unsigned threads = 0, proxy_threads = 0;
  std::string guest;  // `guest = ...` in a config file (systemd units); split at spaces
  bool no_output_buffering = false;
  // The run-time settings (checkpoint/run_time_settings.h), by name.
  std::map<std::string, std::string, std::less<>> settings;
  // The replication link's security.
  std::string tls_cert, tls_key, tls_ca, tls_peer_name;
  bool insecure = false;
  std::string witness_cert, witness_key, witness_ca;
};

// "what (default D)", D as an operator would type it.
std::string with_default(std::string_view what, std::string_view d) {
  return fmt::format("{} (default {})", what, d);
}
std::string with_default(std::string_view what, std::chrono::microseconds d) {
  return with_default(what, common::duration_text(d));
}
// "before a|b|c after (default b)": an enum option's values and default, from its table.
template <typename E, size_t N>
std::string choice(std::string_view before, const EnumName<E> (&table)[N], E d,
                   std::string_view after = "") {
  return fmt::format("{}{}{} (default {})", before, enum_list(table), after, enum_name(table, d));
}

void add_node_options(po::options_description& d, RawNodeOptions& r, bool backup) {
  const NodeOptions def;
  const checkpoint::PrimaryConfig& p = def.primary;
  const checkpoint::EngineSettings& e = p.engine;
  using common::size_text;
  auto o = d.add_options();
  if (backup) {
    o("listen", po::value(&r.listen), "ADDR:PORT where the primary connects (required)");
    o("on-failover", po::value(&r.on_failover), "shell command run after taking over");
    o("reprotect", po::value(&r.reprotect),
      "ADDR:PORT of the next backup to protect to after taking over");
  } else {
    o("backup", po::value(&r.backup),
      "ADDR:PORT of the backup, or 'null' to drop checkpoints (required)");
    o("listen", po::value(&r.listen),
      "ADDR:PORT this node listens on if it must rejoin as a backup (with --witness, or "
      "--data-dir)");
    o("from-snapshot", po::value(&r.from_snapshot),
      "FILE written by `romulus snapshot`: the guest starts from that image");
  }
  o("witness", po::value(&r.witness),
    "etcd://HOST:PORT[,HOST:PORT...]: decide ownership of the pair there (recommended)");
  o("pair", po::value(&r.pair), "name of the pair in the witness (same on both nodes)");
  o("lease-ttl", po::value(&r.lease_ttl),
    with_default("ownership lease in the witness", def.witness.lease_ttl).c_str());
  o("node-id", po::value(&r.node_id), "this node's name in the witness (default: host:listen)");
  // The settings `romulus set` also changes, from their table: "what
  // (default X)", with the choices first for a list of them.
  for (const auto& st : checkpoint::run_time_settings()) {
    if (!st.startup) continue;
    const std::string what =
        st.choices() ? fmt::format("{}: {}", st.value, st.what) : std::string(st.what);
    o(std::string(st.name).c_str(), po::value(&r.settings[std::string(st.name)]),
      with_default(what, st.text(p)).c_str());
  }
  o("memory", po::value(&r.memory), with_default("arena size", size_text(p.memory_bytes)).c_str());
  o("vm", po::bool_switch(&r.vm),
    "the guest command is QEMU (qemu-system-x86_64 ...): protect that virtual machine, its RAM "
    "in the arena and its devices in every checkpoint");
  o("data-dir", po::value(&r.data_dir),
    "DIR where this node keeps its durable image (default: none, memory only)");
  o("durable", po::value(&r.durable),
    choice("with --data-dir, when a checkpoint is acknowledged: ", storage::kDurableModeNames,
           p.durable.mode, " (sync: once on disk; async: written behind)")
        .c_str());
  o("disk-backlog", po::value(&r.disk_backlog),
    with_default("with --data-dir: checkpoint bytes that may wait for the disk before the backup "
                 "stops reading its primary until half are written",
                 size_text(p.durable.max_backlog_bytes))
        .c_str());
  o("force-data-dir", po::bool_switch(&r.force_data_dir),
    "start from what verifies of a damaged --data-dir image, or over another pair's, "
    "instead of refusing");
  o("service", po::value(&r.service), "ADDR:PORT clients connect to (output-committed proxy)");
  o("tracker", po::value(&r.tracker),
    // The list first, so that --help does not wrap it (dist/generate.py reads it).
    fmt::format("{}: the dirty tracker (default {}: chosen by measurement)",
                enum_list(checkpoint::kTrackerKindNames),
                enum_name(checkpoint::kTrackerKindNames, p.tracker))
        .c_str());
  o("threads", po::value(&r.threads),
    with_default("encoder threads", fmt::format("{}", e.encoder_threads)).c_str());
  o("staging", po::value(&r.staging),
    with_default("staging buffer size", size_text(e.staging_bytes)).c_str());
  o("lz4", po::value(&r.lz4), choice("LZ4 stage: ", protocol::kLz4Names, e.encode.lz4).c_str());
  o("heartbeat", po::value(&r.heartbeat),
    with_default("heartbeat period when idle", p.heartbeat).c_str());
  o("failover-timeout", po::value(&r.failover_timeout),
    with_default("silence before the peer is declared lost", p.failover_timeout).c_str());
  o("no-output-buffering", po::bool_switch(&r.no_output_buffering),
    "release guest output at once (unsafe)");
  o("proxy-threads", po::value(&r.proxy_threads),
    with_default("threads of the --service proxy's client connections (0: the io thread that "
                 "reads the backup's acks)",
                 fmt::format("{}", p.proxy_threads))
        .c_str());
  o("gate-timeout", po::value(&r.gate_timeout),
    with_default("longest wait for Update sections at a pause", e.gate_timeout).c_str());
  o("stats-period", po::value(&r.stats_period),
    fmt::format("how often to log statistics, 0 = never (default {})",
                common::duration_text(p.stats_period))
        .c_str());
  o("control", po::value(&r.control), "control socket path");
  o("metrics", po::value(&r.metrics),
    "ADDR:PORT to serve Prometheus metrics at /metrics (default: none)");
  o("config", po::value(&r.config), "read options from FILE (name = value lines)");
  o("guest", po::value(&r.guest),
    "the guest command, split at spaces (for --config files; on the command line put it "
    "after --, which wins)");
  // The replication link's security (docs/operations.md, "Certificates").
  o("tls-cert", po::value(&r.tls_cert), "this node's certificate (PEM) for mutual TLS on the link");
  o("tls-key", po::value(&r.tls_key), "the private key of --tls-cert (PEM)");
  o("tls-ca", po::value(&r.tls_ca), "CA certificate(s) (PEM) the peer's certificate must chain to");
  o("tls-peer-name", po::value(&r.tls_peer_name),
    "name (DNS or IP) the peer's certificate must carry (default: any the CA signed)");
  o("insecure", po::bool_switch(&r.insecure),
    "allow a plaintext link off loopback (anyone on the network can write the backup's image)");
  o("witness-cert", po::value(&r.witness_cert),
    "client certificate (PEM) for an etcds:// witness (default: --tls-cert)");
  o("witness-key", po::value(&r.witness_key), "its private key (default: --tls-key)");
  o("witness-ca", po::value(&r.witness_ca),
    "CA (PEM) etcd's certificate must chain to (default: --tls-ca)");
}

// Each given option parsed into its typed field; every error names the option.
Result<NodeOptions> cook(const RawNodeOptions& r, const po::variables_map& vm, bool backup,
                         std::vector<std::string> guest) {
  NodeOptions n;
  checkpoint::PrimaryConfig& o = n.primary;
  checkpoint::EngineSettings& e = o.engine;
  auto given = [&vm](std::string_view name) { return vm.count(std::string(name)) != 0; };
  auto ms = [](std::chrono::microseconds us) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(us);
  };
  if (!backup) {
    if (r.backup.empty())
      return Status::invalid_argument("--backup ADDR:PORT is required (or --backup null)");
    if (r.backup == "null") {
      o.backup_null = true;
    } else {
      ROMULUS_ASSIGN_OR_RETURN(auto ep, endpoint("--backup", r.backup));
      o.backup = ep;
    }
  }
  // The run-time settings, read by their entries as `romulus set` reads them
  // (an error names the setting: "--" makes it the option).
  for (const auto& st : checkpoint::run_time_settings()) {
    if (!st.startup || !given(st.name)) continue;
    if (Status s = st.parse(r.settings.at(std::string(st.name)), o); !s.is_ok())
      return Status::invalid_argument("--" + s.message());
  }
  if (given("memory")) {
    ROMULUS_ASSIGN_OR_RETURN(o.memory_bytes, parse_size(r.memory));
    if (o.memory_bytes < (1u << 20) || o.memory_bytes % protocol::kPageSize != 0) {
      return Status::invalid_argument("--memory must be at least 1M and a multiple of 4K");
    }
  }
  if (!r.data_dir.empty()) o.durable.data_dir = r.data_dir;
  if (given("durable")) {
    if (r.data_dir.empty()) return Status::invalid_argument("--durable needs --data-dir DIR");
    ROMULUS_ASSIGN_OR_RETURN(o.durable.mode,
                             named("--durable", storage::kDurableModeNames, r.durable));
  }
  if (given("disk-backlog")) {
    if (r.data_dir.empty()) return Status::invalid_argument("--disk-backlog needs --data-dir DIR");
    ROMULUS_ASSIGN_OR_RETURN(o.durable.max_backlog_bytes, parse_size(r.disk_backlog));
    if (o.durable.max_backlog_bytes < protocol::kPageSize)
      return Status::invalid_argument("--disk-backlog must be at least 4K");
  }
  if (r.force_data_dir && r.data_dir.empty())
    return Status::invalid_argument("--force-data-dir needs --data-dir DIR");
  o.durable.force = r.force_data_dir;
  if (!r.from_snapshot.empty()) o.from_snapshot = r.from_snapshot;

  if (!r.service.empty()) {
    ROMULUS_ASSIGN_OR_RETURN(auto ep, endpoint("--service", r.service));
    o.service = ep;
  }
  if (given("tracker")) {
    ROMULUS_ASSIGN_OR_RETURN(o.tracker,
                             named("--tracker", checkpoint::kTrackerKindNames, r.tracker));
  }
  if (given("threads")) {
    if (r.threads < 1 || r.threads > 64) return Status::invalid_argument("--threads must be 1..64");
    e.encoder_threads = r.threads;
  }
  if (given("proxy-threads")) {
    if (r.proxy_threads > 64)
      return Status::invalid_argument(
          "--proxy-threads must be 0..64 (0: on the primary's io thread, with the acks)");
    o.proxy_threads = r.proxy_threads;
  }
  if (given("staging")) {
    ROMULUS_ASSIGN_OR_RETURN(e.staging_bytes, parse_size(r.staging));
    if (e.staging_bytes < protocol::kPageSize)
      return Status::invalid_argument("--staging must be at least 4K");
  }
  if (given("lz4")) {
    ROMULUS_ASSIGN_OR_RETURN(e.encode.lz4, named("--lz4", protocol::kLz4Names, r.lz4));
  }
  // A duration option kept in whole milliseconds, if given.
  auto ms_option = [&](const char* name, const std::string& text,
                       std::chrono::milliseconds& out) -> Status {
    if (!given(name)) return Status::ok();
    ROMULUS_ASSIGN_OR_RETURN(auto d, parse_duration(text));
    out = ms(d);
    return Status::ok();
  };
  ROMULUS_RETURN_IF_ERROR(ms_option("heartbeat", r.heartbeat, o.heartbeat));
  ROMULUS_RETURN_IF_ERROR(ms_option("failover-timeout", r.failover_timeout, o.failover_timeout));
  ROMULUS_RETURN_IF_ERROR(ms_option("gate-timeout", r.gate_timeout, e.gate_timeout));
  ROMULUS_RETURN_IF_ERROR(ms_option("stats-period", r.stats_period, o.stats_period));
  if (o.heartbeat < kMinHeartbeat) {
    return Status::invalid_argument(
        fmt::format("--heartbeat must be at least {}ms", kMinHeartbeat.count()));
  }
  if (o.failover_timeout < 2 * o.heartbeat) {
    return Status::invalid_argument(
        fmt::format("--failover-timeout ({} ms) must be at least twice --heartbeat ({} ms)",
                    o.failover_timeout.count(), o.heartbeat.count()));
  }
  o.vm = r.vm;
  if (o.vm) {
    if (o.tracker == checkpoint::TrackerKind::kUffdSync) {
      return Status::invalid_argument(
          "--vm --tracker uffd-sync: a VM's RAM is written by QEMU threads that a QMP stop leaves "
          "running, which uffd-sync's pause cannot allow: use --tracker auto, uffd or compare");
    }
    if (o.tracker == checkpoint::TrackerKind::kUffdHybrid) {
      return Status::invalid_argument(
          "--vm --tracker uffd-hybrid: QEMU's preload library arms one userfaultfd, and the "
          "hybrid needs two: use --tracker auto, uffd or compare");
    }
    if (o.durable.enabled() || o.from_snapshot) {
      return Status::invalid_argument(
          "--vm with --data-dir or --from-snapshot is not supported yet (the durable image and "
          "snapshots hold RAM only, not a VM's devices)");
    }
    if (o.memory_bytes % (1u << 20) != 0) {
      return Status::invalid_argument("--vm needs a --memory of whole MiB (it is the VM's -m)");
    }
  }
  o.output_buffering = !r.no_output_buffering && !o.backup_null;
  n.control_path =
      r.control.empty() ? default_control_path(backup ? "backup" : "primary") : r.control;
  if (guest.empty()) {
    return Status::invalid_argument(
        "no guest command: put it after '--', e.g. -- romulus-kvstore (or `guest = "
        "romulus-kvstore` in the --config file)");
  }
  o.guest_command = std::move(guest);
  if (!r.listen.empty()) {
    ROMULUS_ASSIGN_OR_RETURN(auto ep, endpoint("--listen", r.listen));
    n.listen = ep;
  }
  if (!r.metrics.empty()) {
    ROMULUS_ASSIGN_OR_RETURN(n.metrics, endpoint("--metrics", r.metrics));
  }
  WitnessOptions& w = n.witness;
  if (!r.witness.empty()) {
    auto url = witness::etcd::EtcdUrl::parse(r.witness);
    if (!url.is_ok()) return Status::invalid_argument("--witness " + url.status().message());
    w.url = std::move(url).value();
    if (r.pair.empty()) {
      return Status::invalid_argument(
          "--witness needs --pair NAME (the same name on both nodes of the pair)");
    }
  } else if (!r.pair.empty()) {
    return Status::invalid_argument("--pair needs --witness etcd://HOST:PORT");
  }
  for (const char c : r.pair) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return Status::invalid_argument(
          fmt::format("--pair '{}': use letters, digits, '-', '_' and '.'", r.pair));
    }
  }
  w.pair = r.pair;
  ROMULUS_RETURN_IF_ERROR(ms_option("lease-ttl", r.lease_ttl, w.lease_ttl));
  if (w.lease_ttl < witness::kMinTtl || w.lease_ttl > kMaxLeaseTtl) {
    return Status::invalid_argument(fmt::format("--lease-ttl must be between {}s and {}m",
                                                witness::kMinTtl.count(), kMaxLeaseTtl.count()));
  }
  w.node_id = r.node_id;
  n.link.cert = r.tls_cert;
  n.link.key = r.tls_key;
  n.link.ca = r.tls_ca;
  n.link.peer_name = r.tls_peer_name;
  n.link.insecure = r.insecure;
  ROMULUS_RETURN_IF_ERROR(common::check_link_options(
      common::TlsFiles{n.link.cert, n.link.key, n.link.ca, n.link.peer_name}, n.link.insecure));
  if (w.url.tls) {
    w.cert = r.witness_cert.empty() ? r.tls_cert : r.witness_cert;
    w.key = r.witness_key.empty() ? r.tls_key : r.witness_key;
    w.ca = r.witness_ca.empty() ? r.tls_ca : r.witness_ca;
    if (w.cert.empty() || w.key.empty() || w.ca.empty()) {
      return Status::invalid_argument(
          "an etcds:// witness needs a client certificate, key and CA: --witness-cert, "
          "--witness-key, --witness-ca (or the link's --tls-cert, --tls-key, --tls-ca)");
    }
  } else if (!r.witness_cert.empty() || !r.witness_key.empty() || !r.witness_ca.empty()) {
    return Status::invalid_argument("--witness-cert/-key/-ca need an etcds:// --witness");
  }
  return n;
}

Result<Command> parse_node(const std::string& sub, std::vector<std::string> args) {
  const bool backup = sub == "backup";
  // Everything after "--" is the guest command, untouched.
  std::vector<std::string> guest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") {
      guest.assign(args.begin() + static_cast<long>(i) + 1, args.end());
      args.resize(i);
      break;
    }
  }
  RawNodeOptions raw;
  po::options_description desc(fmt::format("romulus {} options", sub));
  bool help = false;
  desc.add_options()("help,h", po::bool_switch(&help), "show this help");
  add_node_options(desc, raw, backup);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    po::notify(vm);
    if (!raw.config.empty()) {
      std::ifstream in(raw.config);
      if (!in)
        return Status::invalid_argument(fmt::format("cannot read config file '{}'", raw.config));
      po::store(po::parse_config_file(in, desc), vm);  // command line already stored: it wins
      po::notify(vm);
    }
  } catch (const po::error& e) {
    return Status::invalid_argument(fmt::format("{} (see romulus {} --help)", e.what(), sub));
  }
  if (help) {
    std::ostringstream os;
    os << kUsage << "\n" << desc;
    return Command(HelpCommand{os.str()});
  }
  if (guest.empty()) {
    std::istringstream words(raw.guest);
    for (std::string w; words >> w;) guest.push_back(w);
  }
  ROMULUS_ASSIGN_OR_RETURN(NodeOptions node, cook(raw, vm, backup, std::move(guest)));
  if (!backup) return Command(std::move(node));
  BackupOptions b;
  if (raw.listen.empty())
    return Status::invalid_argument("--listen ADDR:PORT is required for a backup");
  ROMULUS_ASSIGN_OR_RETURN(b.listen, endpoint("--listen", raw.listen));
  node.listen = b.listen;
  if (!raw.on_failover.empty()) b.on_failover = raw.on_failover;
  if (!raw.reprotect.empty()) {
    ROMULUS_ASSIGN_OR_RETURN(auto ep, endpoint("--reprotect", raw.reprotect));
    b.reprotect = ep;
  }
  b.node = std::move(node);
  return Command(std::move(b));
}

// `romulus sqlite-export DATABASE OUT (--snapshot FILE | --control PATH)` or
// `romulus sqlite-export --list (--snapshot FILE | --control PATH)`.
Result<Command> parse_sqlite_export(const std::vector<std::string>& args) {
  SqliteExportCommand c;
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size(); ++i) {
    if ((args[i] == "--snapshot" || args[i] == "--control") && i + 1 < args.size()) {
      (args[i] == "--snapshot" ? c.snapshot : c.control_path) = args[i + 1];
      ++i;
    } else if (args[i] == "--list") {
      c.list = true;
    } else if (args[i] == "-h" || args[i] == "--help") {
      return Command(HelpCommand{std::string(kSqliteExportUsage) + "\n"});
    } else {
      words.push_back(args[i]);
    }
  }
  if (c.snapshot.empty() == c.control_path.empty()) {
    return Status::invalid_argument(
        "sqlite-export needs one source: --snapshot FILE or --control PATH (a backup's)");
  }
  if (c.list ? !words.empty() : words.size() != 2) {
    return Status::invalid_argument(std::string("usage: ") + kSqliteExportUsage);
  }
  if (!c.list) {
    c.database = words[0];
    std::error_code ec;
    c.out = std::filesystem::absolute(words[1], ec).string();
    if (ec) return Status::invalid_argument(fmt::format("{}: {}", words[1], ec.message()));
  }
  return Command(std::move(c));
}

// `romulus lease-guard --node-pid N --witness URL --pair NAME --lease-ttl Ns
// [--witness-cert F --witness-key F --witness-ca F]`, as WitnessLink writes it.
Result<Command> parse_lease_guard(const std::vector<std::string>& args) {
  LeaseGuardCommand g;
  bool have_pid = false, have_url = false;
  for (size_t i = 0; i < args.size(); i += 2) {
    if (i + 1 >= args.size()) {
      return Status::invalid_argument(fmt::format("lease-guard: {} needs a value", args[i]));
    }
    const std::string& name = args[i];
    const std::string& value = args[i + 1];
    if (name == "--node-pid") {
      int pid = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), pid);
      if (ec != std::errc() || end != value.data() + value.size() || pid <= 1) {
        return Status::invalid_argument(
            fmt::format("lease-guard: --node-pid '{}' is not a process id", value));
      }
      g.node_pid = pid;
      have_pid = true;
    } else if (name == "--witness") {
      auto url = witness::etcd::EtcdUrl::parse(value);
      if (!url.is_ok())
        return Status::invalid_argument("lease-guard: --witness " + url.status().message());
      g.url = *url;
      have_url = true;
    } else if (name == "--pair") {
      g.pair = value;
    } else if (name == "--lease-ttl") {
      ROMULUS_ASSIGN_OR_RETURN(auto ttl, parse_duration(value));
      g.lease_ttl = std::chrono::duration_cast<std::chrono::seconds>(ttl);
    } else if (name == "--witness-cert") {
      g.cert = value;
    } else if (name == "--witness-key") {
      g.key = value;
    } else if (name == "--witness-ca") {
      g.ca = value;
    } else {
      return Status::invalid_argument(fmt::format("lease-guard: unknown option '{}'", name));
    }
  }
  if (!have_pid || !have_url || g.pair.empty()) {
    return Status::invalid_argument(
        "lease-guard is started by a node with --witness, not by hand: it needs --node-pid, "
        "--witness and --pair");
  }
  return Command(std::move(g));
}

// `romulus release-lease primary|backup [--lease-file F] NODE-OPTIONS...`: the
// node's own options (its --config) say which witness and pair.
Result<Command> parse_release_lease(std::vector<std::string> args) {
  ReleaseLeaseCommand r;
  if (const char* env = std::getenv("ROMULUS_LEASE_FILE"); env != nullptr) r.lease_file = env;
  for (size_t i = 0; i + 1 < args.size() && args[i] != "--"; ++i) {
    if (args[i] == "--lease-file") {
      r.lease_file = args[i + 1];
      args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
      break;
    }
  }
  if (args.empty() || (args[0] != "primary" && args[0] != "backup")) {
    return Status::invalid_argument(
        "usage: romulus release-lease primary|backup [--lease-file FILE] --config FILE (the "
        "node's own options; the systemd units run it as ExecStopPost)");
  }
  if (r.lease_file.empty()) {
    return Status::invalid_argument(
        "release-lease: no lease file: set ROMULUS_LEASE_FILE (as the node had it) or give "
        "--lease-file FILE");
  }
  const std::string role = args[0];
  ROMULUS_ASSIGN_OR_RETURN(
      Command node, parse_node(role, std::vector<std::string>(args.begin() + 1, args.end())));
  if (auto* n = std::get_if<NodeOptions>(&node)) {
    r.witness = n->witness;
  } else if (auto* b = std::get_if<BackupOptions>(&node)) {
    r.witness = b->node.witness;
  } else {
    return Status::invalid_argument("release-lease: the node's options asked for help");
  }
  return Command(std::move(r));
}

}  // namespace

Result<Command> parse_command_line(int argc, const char* const* argv) {
  if (argc < 2) return Command(HelpCommand{kUsage});
  const std::string sub = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (sub == "-h" || sub == "--help" || sub == "help") return Command(HelpCommand{kUsage});
  if (sub == "--version" || sub == "version")
    return Command(HelpCommand{fmt::format("romulus {}\n", ROMULUS_VERSION)});
  if (sub == "primary" || sub == "backup") return parse_node(sub, std::move(args));
  if (sub == "lease-guard") return parse_lease_guard(args);
  if (sub == "release-lease") return parse_release_lease(std::move(args));
  if (sub == "sqlite-export") return parse_sqlite_export(args);

  // status / set / failover: a few words and --control, --json.
  std::string control;
  bool json = false;
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--control" && i + 1 < args.size()) {
      control = args[++i];
    } else if (args[i].rfind("--control=", 0) == 0) {
      control = args[i].substr(10);
    } else if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "-h" || args[i] == "--help") {
      return Command(HelpCommand{sub == "set" ? set_help() : kUsage});
    } else {
      words.push_back(args[i]);
    }
  }
  if (sub == "status") {
    if (!words.empty())
      return Status::invalid_argument("status takes no arguments besides --json and --control");
    return Command(StatusCommand{control, json});
  }
  if (sub == "set") {
    if (words.size() != 2)
      return Status::invalid_argument(
          "usage: romulus set NAME VALUE (e.g. romulus set interval 25ms)");
    return Command(SetCommand{control, words[0], words[1]});
  }
  if (sub == "failover") {
    if (!words.empty())
      return Status::invalid_argument("failover takes no arguments besides --control");
    return Command(FailoverCommand{control});
  }
  if (sub == "snapshot") {
    if (words.size() != 1)
      return Status::invalid_argument(
          "usage: romulus snapshot FILE [--control PATH] (ask the backup: its committed image)");
    std::error_code ec;
    const auto file = std::filesystem::absolute(words[0], ec);
    if (ec) return Status::invalid_argument(fmt::format("snapshot {}: {}", words[0], ec.message()));
    return Command(SnapshotCommand{control, file.string()});
  }
  return Status::invalid_argument(
      fmt::format("unknown command '{}' (use primary, backup, status, set, failover, snapshot or "
                  "sqlite-export)",
                  sub));
}

}  // namespace romulus::cli
