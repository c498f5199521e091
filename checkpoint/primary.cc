#include "checkpoint/primary.h"

#include <fmt/format.h>
#include <sys/random.h>
#include <sys/wait.h>

#include <thread>

#include "checkpoint/asio.h"
#include "checkpoint/control_server.h"
#include "checkpoint/dirty_tracker.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/output_proxy.h"
#include "checkpoint/tcp_sender.h"
#include "protocol/page.h"

namespace romulus::checkpoint {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// PauseControl over a GuestProcess.
class GuestPause final : public PauseControl {
 public:
  explicit GuestPause(GuestProcess& g) : g_(g) {}
  Status pause(std::chrono::milliseconds gate_timeout) override { return g_.pause(gate_timeout); }
  Status resume() override { return g_.resume(); }
  std::optional<std::string> exited() override { return g_.poll_exit(); }

 private:
  GuestProcess& g_;
};

uint64_t random_session_id() {
  uint64_t id = 0;
  while (id == 0) {
    if (getrandom(&id, sizeof id, 0) != sizeof id) {
      id = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    }
  }
  return id;
}

const char* tracker_arg(TrackerKind k) { return k == TrackerKind::kCompare ? "compare" : "uffd"; }

}  // namespace

struct PrimaryNode::Impl {
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread io_thread;
  std::unique_ptr<ControlServer> control;
  std::unique_ptr<asio::steady_timer> stats_timer;

  std::optional<SharedMemory> arena;
  std::optional<SharedMemory> control_page;
  std::optional<GuestProcess> guest;
  std::unique_ptr<GuestPause> pause;
  std::unique_ptr<DirtyTracker> tracker;
  std::unique_ptr<EpochEngine> engine;
  std::shared_ptr<TcpSender> sender;
  std::unique_ptr<OutputProxy> proxy;
  NullTransport null_transport;
  TrackerKind tracker_kind = TrackerKind::kUffd;

  mutable std::mutex mu;  // guards the fields below
  std::string state = "starting";
  std::string peer;
  std::string backup_host;
  uint16_t backup_port = 0;
  BackupLoss on_backup_loss = BackupLoss::kContinue;
  std::string last_loss;
  uint64_t sync_epoch = 0;  // epoch whose ack completes the current sync (0: none)
  uint64_t max_acked = 0;
  uint64_t streams = 0;

  void set_state(std::string s) {
    std::lock_guard lock(mu);
    state = std::move(s);
  }
};

PrimaryNode::PrimaryNode(PrimaryConfig config, LogFn log)
    : impl_(std::make_unique<Impl>()), config_(std::move(config)), log_(std::move(log)) {
  impl_->backup_host = config_.backup_host;
  impl_->backup_port = config_.backup_port;
  impl_->on_backup_loss = config_.on_backup_loss;
  if (config_.session_id == 0) config_.session_id = random_session_id();
}

PrimaryNode::~PrimaryNode() {
  if (impl_->work) impl_->work.reset();
  impl_->io.stop();
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
}

void PrimaryNode::adopt_arena(SharedMemory arena) { impl_->arena.emplace(std::move(arena)); }

std::string PrimaryNode::output_json() const {
  if (!impl_->proxy) return "null";
  const auto o = impl_->proxy->stats();
  return fmt::format(
      R"({{"buffering":{},"connections":{},"open_connections":{},"bytes_to_guest":{},)"
      R"("bytes_released":{},"bytes_held":{},"oldest_held_ms":{:.3f},)"
      R"("added_latency_p50_ms":{:.3f},"added_latency_p99_ms":{:.3f}}})",
      o.buffering ? "true" : "false", o.connections, o.open_connections, o.bytes_to_guest,
      o.bytes_released, o.bytes_held, o.oldest_held_ms, o.added_latency_p50_ms,
      o.added_latency_p99_ms);
}

std::string PrimaryNode::handle_control(const std::string& request) {
  auto& im = *impl_;
  if (request == "ping") return R"({"ok":true})";
  if (request == "status" || request == "status --json") {
    std::string state, peer, loss;
    {
      std::lock_guard lock(im.mu);
      state = im.state;
      peer = im.backup_host.empty() ? (config_.backup_null ? "null" : "")
                                    : fmt::format("{}:{}", im.backup_host, im.backup_port);
      loss = im.last_loss;
    }
    const auto s = stats_.snapshot();
    return fmt::format(
        R"({{"ok":true,"role":"primary","state":"{}","peer":"{}","guest_pid":{},)"
        R"("interval_ms":{:.3f},"tracker":"{}","codec":"{}","threads":{},"resumed":{},)"
        R"("last_committed_epoch":{},"last_backup_loss":"{}","output":{},"primary":{}}})",
        json_escape(state), json_escape(peer), im.guest ? im.guest->pid() : 0,
        im.engine ? static_cast<double>(im.engine->interval().count()) / 1000.0 : 0.0,
        tracker_arg(im.tracker_kind), protocol::codec_name(config_.encode.codec), config_.threads,
        config_.resumed_epoch ? "true" : "false", s.acked_epoch, json_escape(loss), output_json(),
        stats_to_json(s));
  }
  if (request.rfind("set ", 0) == 0) {
    const auto rest = request.substr(4);
    const auto space = rest.find(' ');
    if (space == std::string::npos) return json_error("usage: set NAME VALUE");
    const std::string name = rest.substr(0, space), value = rest.substr(space + 1);
    if (!im.engine) return json_error("the guest is not running yet");
    if (name == "interval") {
      // The CLI validated the syntax; here: integer microseconds.
      const long long us = std::atoll(value.c_str());
      if (us < 1000 || us > 60'000'000) return json_error("interval must be between 1ms and 60s");
      im.engine->set_interval(std::chrono::microseconds(us));
      log_(fmt::format("interval set to {:.1f} ms", static_cast<double>(us) / 1000.0));
      return R"({"ok":true})";
    }
    if (name == "cache") {
      const long long bytes = std::atoll(value.c_str());
      if (bytes < 0) return json_error("cache size must be >= 0");
      im.engine->set_cache_bytes(static_cast<size_t>(bytes));
      log_(fmt::format("page cache set to {} MiB", bytes >> 20));
      return R"({"ok":true})";
    }
    if (name == "codec") {
      protocol::CodecId id;
      if (value == "runskip")
        id = protocol::CodecId::kRunSkip;
      else if (value == "xbzrle")
        id = protocol::CodecId::kXbzrle;
      else if (value == "none")
        id = protocol::CodecId::kNone;
      else
        return json_error("codec must be runskip, xbzrle or none");
      im.engine->set_codec(id);
      config_.encode.codec = id;
      log_(fmt::format("codec set to {}", value));
      return R"({"ok":true})";
    }
    if (name == "on-backup-loss") {
      std::lock_guard lock(im.mu);
      if (value == "continue")
        im.on_backup_loss = BackupLoss::kContinue;
      else if (value == "stall")
        im.on_backup_loss = BackupLoss::kStall;
      else
        return json_error("on-backup-loss must be continue or stall");
      return R"({"ok":true})";
    }
    if (name == "backup") {
      const auto colon = value.rfind(':');
      if (colon == std::string::npos) return json_error("backup must be ADDR:PORT");
      const int port = std::atoi(value.c_str() + colon + 1);
      if (port <= 0 || port > 65535) return json_error("backup port must be 1..65535");
      {
        std::lock_guard lock(im.mu);
        im.backup_host = value.substr(0, colon);
        im.backup_port = static_cast<uint16_t>(port);
      }
      log_(fmt::format("backup set to {}; reconnecting", value));
      if (im.sender) im.sender->close();
      return R"({"ok":true})";
    }
    return json_error(
        fmt::format("unknown setting '{}' (interval, cache, codec, "
                    "on-backup-loss, backup)",
                    name));
  }
  if (request == "failover") {
    return json_error("this node is the primary; failover promotes a backup");
  }
  return json_error(fmt::format("unknown request '{}'", request));
}

Status PrimaryNode::run() {
  auto& im = *impl_;
  const uint64_t page_count = config_.memory_bytes / protocol::kPageSize;

  // Memory: a fresh arena, or the committed image handed over at activation.
  if (!im.arena) {
    ROMULUS_ASSIGN_OR_RETURN(auto arena,
                             SharedMemory::create("romulus-arena", config_.memory_bytes));
    im.arena.emplace(std::move(arena));
  }
  ROMULUS_ASSIGN_OR_RETURN(auto control, SharedMemory::create("romulus-control", 4096));
  im.control_page.emplace(std::move(control));

  // Tracker choice: uffd where the kernel can, else compare (and say why).
  im.tracker_kind = config_.tracker;
  if (config_.tracker != TrackerKind::kCompare) {
    Status probe = probe_uffd_wp_async();
    if (!probe.is_ok()) {
      if (config_.tracker == TrackerKind::kUffd) {
        return Status::unsupported(fmt::format(
            "--tracker uffd: {}; use --tracker compare (works on any kernel)", probe.message()));
      }
      log_(fmt::format("dirty tracking: {}; falling back to the compare tracker", probe.message()));
      im.tracker_kind = TrackerKind::kCompare;
    } else {
      im.tracker_kind = TrackerKind::kUffd;
    }
  }

  GuestSpec spec;
  spec.argv = config_.guest_command;
  spec.arena_fd = im.arena->fd();
  spec.arena_size = im.arena->size();
  spec.control_fd = im.control_page->fd();
  spec.tracker = tracker_arg(im.tracker_kind);
  spec.resumed_epoch = config_.resumed_epoch;
  uint16_t guest_port = 0;
  if (!config_.service_host.empty()) {
    ROMULUS_ASSIGN_OR_RETURN(guest_port, OutputProxy::pick_free_port());
    spec.service_port = guest_port;
  }
  ROMULUS_ASSIGN_OR_RETURN(auto guest, GuestProcess::start(spec));
  im.guest.emplace(std::move(guest));
  ROMULUS_RETURN_IF_ERROR(im.guest->wait_attached(std::chrono::seconds(10)));
  log_(fmt::format("guest pid {} attached ({} MiB arena, {} tracker{})", im.guest->pid(),
                   im.arena->size() >> 20, tracker_arg(im.tracker_kind),
                   config_.resumed_epoch
                       ? fmt::format(", resumed from epoch {}", *config_.resumed_epoch)
                       : std::string()));

  if (on_started_) on_started_();

  if (im.tracker_kind == TrackerKind::kUffd) {
    ROMULUS_ASSIGN_OR_RETURN(im.tracker,
                             make_uffd_tracker(im.guest->pid(), im.guest->guest_arena_addr(),
                                               im.arena->data(), im.arena->size()));
  } else {
    ROMULUS_ASSIGN_OR_RETURN(im.tracker, make_compare_tracker(im.arena->data(), im.arena->size()));
  }

  EngineOptions eo;
  eo.interval = config_.interval;
  eo.staging_bytes = config_.staging_bytes;
  eo.encoder_threads = config_.threads;
  eo.encode = config_.encode;
  eo.cache_bytes = config_.cache_bytes;
  eo.gate_timeout = config_.gate_timeout;
  eo.arena_fd = im.arena->fd();
  eo.first_epoch = config_.resumed_epoch.value_or(0) + 1;
  eo.log = log_;
  im.pause = std::make_unique<GuestPause>(*im.guest);
  im.engine =
      std::make_unique<EpochEngine>(*im.pause, *im.tracker, page_count, nullptr, stats_, eo);

  // The io thread: control socket, sender, statistics timer.
  im.work.emplace(asio::make_work_guard(im.io));
  im.io_thread = std::thread([&im] { im.io.run(); });
  const bool buffering = config_.output_buffering && !config_.backup_null;
  if (!config_.service_host.empty()) {
    OutputProxyOptions po;
    po.listen_host = config_.service_host;
    po.listen_port = config_.service_port;
    po.guest_port = guest_port;
    po.buffering = buffering;
    EpochEngine* engine = im.engine.get();
    im.proxy = std::make_unique<OutputProxy>(im.io, po, [engine] { return engine->open_epoch(); });
    ROMULUS_RETURN_IF_ERROR(im.proxy->start());
    log_(fmt::format("serving clients on {}:{} (guest port {}); output {}", config_.service_host,
                     config_.service_port, guest_port,
                     buffering
                         ? "held until its checkpoint is acknowledged"
                         : "released at once (UNSAFE: --no-output-buffering or --backup null)"));
  }
  if (!config_.control_path.empty()) {
    im.control = std::make_unique<ControlServer>(
        im.io, config_.control_path, [this](const std::string& r) { return handle_control(r); });
    Status cs = im.control->start();
    if (!cs.is_ok()) log_(cs.message() + "; continuing without a control socket");
  }
  if (config_.stats_period.count() > 0) {
    im.stats_timer = std::make_unique<asio::steady_timer>(im.io);
    auto tick = std::make_shared<std::function<void()>>();
    *tick = [this, &im, tick] {
      im.stats_timer->expires_after(config_.stats_period);
      im.stats_timer->async_wait([this, tick](boost::system::error_code ec) {
        if (ec) return;
        const auto s = stats_.snapshot();
        if (s.epochs > 0) log_(format_stats_line(s));
        (*tick)();
      });
    };
    asio::post(im.io, [tick] { (*tick)(); });
  }

  // The guest ended. A clean exit (status 0) is the program finishing: say
  // GOODBYE so the backup does not restart it. A crash or a non-zero status
  // closes the stream without GOODBYE: the backup takes over from the last
  // committed checkpoint, as it would if this host had died.
  auto guest_gone = [&]() -> std::optional<Status> {
    auto exit = im.guest->poll_exit();
    if (!exit) return std::nullopt;
    const auto ws = im.guest->exit_status();
    const bool clean = ws && WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0;
    if (im.sender && !im.sender->broken()) {
      if (clean) {
        im.sender->goodbye(std::chrono::seconds(1));
      } else {
        im.sender->close();
      }
    }
    return Status::aborted(
        fmt::format("{}; the primary stops ({})", *exit,
                    clean ? "clean exit: the backup was told not to take over"
                          : "the backup takes over from the last committed checkpoint"));
  };

  Status result;
  bool announced_unreachable = false;
  // Between failed attempts: short at first (a lost or damaged handshake is
  // retried well inside the backup's failover timeout), then up to 1 s.
  int retry_ms = 100;
  std::string last_host = "\x01";
  while (!stop_.load()) {
    if (auto gone = guest_gone()) return *gone;
    if (config_.backup_null) {
      im.set_state("protected (null backup)");
      im.engine->set_transport(&im.null_transport);
      Status st = im.engine->initial_sync();
      if (st.is_ok()) st = im.engine->run(stop_);
      if (auto gone = guest_gone()) return *gone;
      if (!st.is_ok()) return st;
      break;
    }

    std::string host;
    uint16_t port;
    BackupLoss policy;
    {
      std::lock_guard lock(im.mu);
      host = im.backup_host;
      port = im.backup_port;
      policy = im.on_backup_loss;
    }
    if (host != last_host) announced_unreachable = false;
    last_host = host;
    if (host.empty()) {
      // A backup that took over without --reprotect: no backup yet.
      if (!announced_unreachable) {
        log_(
            "no backup configured: the guest runs UNPROTECTED; `romulus set backup ADDR:PORT` "
            "protects it again");
        announced_unreachable = true;
      }
      if (im.proxy) im.proxy->set_buffering(false);
      im.set_state("unprotected (no backup configured)");
      for (int i = 0; i < 10 && !stop_.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    protocol::Hello hello;
    hello.page_size = protocol::kPageSize;
    hello.word_size = protocol::kWordSize;
    hello.guest_page_count = page_count;
    hello.session_id = config_.session_id;
    hello.codecs = {protocol::CodecId::kNone, protocol::CodecId::kRunSkip,
                    protocol::CodecId::kXbzrle};
    SenderOptions so;
    so.failover_timeout = config_.failover_timeout;
    so.heartbeat = config_.heartbeat;
    SenderCallbacks cb;
    const std::string peer = fmt::format("{}:{}", host, port);
    cb.on_ack = [this, &im, peer](uint64_t epoch) {
      stats_.record_ack(epoch, Clock::now());
      if (im.proxy) im.proxy->on_ack(epoch);
      // Protected from the moment the backup holds a consistent image, i.e.
      // acknowledges the sync's first checkpoint, not when it was sent.
      bool now_protected = false;
      {
        std::lock_guard lock(im.mu);
        im.max_acked = std::max(im.max_acked, epoch);
        if (im.sync_epoch != 0 && epoch >= im.sync_epoch) {
          im.sync_epoch = 0;
          im.state = "protected";
          now_protected = true;
        }
      }
      if (now_protected) {
        log_(fmt::format("backup {} in sync at epoch {}; the guest is protected", peer, epoch));
      }
    };
    cb.on_lost = [&im](const Status& why) {
      std::lock_guard lock(im.mu);
      im.last_loss = why.message();
    };
    protocol::Reply reply;
    auto sender = TcpSender::connect(im.io, host, port, hello, so, cb, &reply);
    if (!sender.is_ok()) {
      if (sender.status().code() == StatusCode::kRefused) {
        // A refusal will not change by retrying fast: say it once, retry slowly.
        log_(fmt::format("backup {}:{} refused: {}", host, port, sender.status().message()));
      } else if (!announced_unreachable) {
        log_(fmt::format(
            "backup {}:{} unreachable: {}; the guest runs UNPROTECTED{}; retrying", host, port,
            sender.status().message(),
            policy == BackupLoss::kStall ? " and STALLED (--on-backup-loss stall)" : ""));
      }
      announced_unreachable = true;
      if (im.proxy && policy == BackupLoss::kContinue) im.proxy->set_buffering(false);
      im.set_state(policy == BackupLoss::kStall ? "stalled (no backup)"
                                                : "unprotected (no backup)");
      if (policy == BackupLoss::kStall && !im.guest->paused()) {
        Status ps = im.guest->pause(config_.gate_timeout);
        if (ps.code() == StatusCode::kAborted) return ps;
      }
      const int wait_ms = sender.status().code() == StatusCode::kRefused ? 1000 : retry_ms;
      retry_ms = std::min(retry_ms * 2, 1000);
      for (int waited = 0; waited < wait_ms && !stop_.load(); waited += 50) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50, wait_ms - waited)));
      }
      continue;
    }
    announced_unreachable = false;
    retry_ms = 100;
    im.sender = std::move(sender).value();
    {
      std::lock_guard lock(im.mu);
      im.streams++;
    }
    if (im.guest->paused()) ROMULUS_RETURN_IF_ERROR(im.guest->resume());
    log_(fmt::format("connected to backup {}:{} (its last committed epoch: {}); full live sync",
                     host, port, reply.last_committed_epoch));
    im.set_state("syncing");
    // Protected again: output waits for acks (held during the sync too: a
    // failover before it completes would resume from the older image).
    if (im.proxy) im.proxy->set_buffering(buffering);
    im.engine->set_transport(im.sender.get(), reply.last_committed_epoch + 1);
    Status st = im.engine->initial_sync();
    if (st.is_ok()) {
      // The first consistent checkpoint is queued; "protected" once it is
      // acked (which may already have happened).
      bool already = false;
      uint64_t acked = 0;
      {
        std::lock_guard lock(im.mu);
        const uint64_t first = im.engine->last_epoch();
        if (im.max_acked >= first) {
          im.state = "protected";
          already = true;
          acked = im.max_acked;
        } else {
          im.sync_epoch = first;
        }
      }
      if (already) {
        log_(fmt::format("backup {}:{} in sync at epoch {}; the guest is protected", host, port,
                         acked));
      }
      st = im.engine->run(stop_);
    }
    if (auto gone = guest_gone()) return *gone;
    if (stop_.load()) break;
    // The stream broke: the backup is lost (or refused a checkpoint).
    std::string why;
    {
      std::lock_guard lock(im.mu);
      why = im.last_loss.empty() ? st.message() : im.last_loss;
      im.last_loss = why;
    }
    im.sender->close();
    im.engine->set_transport(nullptr);
    // Unprotected: holding output would only stall clients.
    if (im.proxy && policy == BackupLoss::kContinue) im.proxy->set_buffering(false);
    log_(fmt::format("BACKUP LOST ({}): the guest runs UNPROTECTED{}; reconnecting to {}:{}", why,
                     policy == BackupLoss::kStall ? " and STALLED" : "", host, port));
    announced_unreachable = true;
  }

  if (im.proxy) im.proxy->stop();
  // A requested stop: tell the backup it need not take over, then stop the guest.
  if (im.sender && !im.sender->broken()) im.sender->goodbye(std::chrono::seconds(1));
  im.set_state("stopping");
  if (im.guest) ROMULUS_RETURN_IF_ERROR(im.guest->stop(std::chrono::seconds(2)));
  return result;
}

}  // namespace romulus::checkpoint
