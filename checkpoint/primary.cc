#include "checkpoint/primary.h"

#include <fmt/format.h>
#include <sys/random.h>
#include <sys/wait.h>

#include <cmath>
#include <thread>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_pause.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/hybrid_tracker.h"
#include "checkpoint/image_compare.h"
#include "checkpoint/output_proxy.h"
#include "checkpoint/run_time_settings.h"
#include "checkpoint/tcp_sender.h"
#include "checkpoint/tracker_choice.h"
#include "checkpoint/vm_guest.h"
#include "common/asio.h"
#include "common/endpoint.h"
#include "common/json.h"
#include "common/net.h"
#include "protocol/page.h"

namespace romulus::checkpoint {
namespace asio = boost::asio;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using common::json_error;
using common::json_ok;

namespace {

// How long a started guest has to call attach(): ample for a slow start
// (loading, opening its files), bounded so a guest that never attaches fails
// the start instead of hanging it.
constexpr std::chrono::seconds kAttachWithin{10};
// While fenced, how often the node looks again whether it may run: the guest
// runs again within this of the lease coming back.
constexpr std::chrono::milliseconds kFencedRecheck{100};
// With a witness, output release intervals are logged this often: the
// evidence that two nodes never release at once, in few lines.
constexpr std::chrono::seconds kReleaseLogEvery{1};
// How long a GOODBYE (and what is queued before it) may take to reach the
// backup before the link closes: milliseconds on a healthy link, and a stuck
// one must not hold up the stop.
constexpr std::chrono::seconds kGoodbyeWithin{1};

uint64_t random_session_id() {
  uint64_t id = 0;
  while (id == 0) {
    if (getrandom(&id, sizeof id, 0) != sizeof id) {
      id = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    }
  }
  return id;
}

// Runs `fn` on the io thread every `period`, from now until the io_context
// stops or this is destroyed (on the io thread's owner, after it joined).
class PeriodicTimer {
 public:
  PeriodicTimer(asio::io_context& io, std::chrono::milliseconds period, std::function<void()> fn)
      : timer_(io), period_(period), fn_(std::move(fn)) {
    asio::post(io, [this] { arm(); });
  }

 private:
  void arm() {
    timer_.expires_after(period_);
    timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      fn_();
      arm();
    });
  }

  asio::steady_timer timer_;
  std::chrono::milliseconds period_;
  std::function<void()> fn_;
};

}  // namespace

struct PrimaryNode::Impl {
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread io_thread;
  std::optional<PeriodicTimer> stats_timer;    // the statistics line
  std::optional<PeriodicTimer> release_timer;  // RELEASED lines (with a witness)
  std::atomic<bool> in_sync{false};            // the backup acknowledged this stream's sync
  bool unprotected_refused = false;  // the witness could not record "unprotected" (logged)

  std::optional<common::SharedMemory> arena;
  std::optional<common::SharedMemory> control_page;
  std::optional<GuestProcess> guest;
  std::unique_ptr<VmGuest> vm;  // --vm: the guest is this VM (and `guest` is empty)
  std::unique_ptr<PauseControl> pause;
  std::unique_ptr<DirtyTracker> tracker;
  std::unique_ptr<EpochEngine> engine;
  std::atomic<EpochEngine*> engine_to_wake{nullptr};  // for request_stop() (any thread)
  std::shared_ptr<TcpSender> sender;
  std::unique_ptr<OutputProxy> proxy;
  NullTransport null_transport;
  TrackerKind tracker_kind = TrackerKind::kUffd;  // as decided at start
  const HybridTracker* hybrid = nullptr;          // tracker, when it is uffd-hybrid
  double guest_fault_us = 0;  // what one write fault costs the guest (EngineOptions)
  uint16_t guest_port = 0;
  bool buffering = true;  // output held until acked while a backup is connected

  mutable std::mutex mu;  // guards the fields below
  std::optional<common::Endpoint> backup;
  BackupLoss on_backup_loss = BackupLoss::kContinue;
  std::string last_loss;
  uint64_t sync_epoch = 0;  // epoch whose ack completes the current sync (0: none)
  uint64_t max_acked = 0;
  uint64_t streams = 0;
  // This node's own log while it protects to it (protect_locally()), for
  // status, and that run's stop flag, for request_stop() and a fence.
  LocalLogTransport* local = nullptr;
  std::atomic<bool>* local_stop = nullptr;
  // The local log cannot be used until a backup connects again: it could not
  // be opened, or its disk failed under --durable async (both logged).
  bool local_failed = false;

  // The guest, whichever kind it is.
  // Ends the local run now (any thread), if one runs.
  void end_local_run() {
    {
      std::lock_guard lock(mu);
      if (local_stop) local_stop->store(true);
    }
    if (EpochEngine* e = engine_to_wake.load()) e->wake();
  }

  bool guest_paused() const { return vm ? vm->paused() : guest->paused(); }
  Status pause_guest(std::chrono::milliseconds gate_timeout) {
    return vm ? vm->pause() : guest->pause(gate_timeout);
  }
  Status resume_guest() { return vm ? vm->resume() : guest->resume(); }
  std::optional<std::string> guest_exit() { return vm ? vm->poll_exit() : guest->poll_exit(); }
  // Exited with status 0 (a VM: QEMU quit because the VM shut down).
  bool guest_exited_cleanly() const {
    if (vm) return vm->exit_status() == 0;
    const auto ws = guest->exit_status();
    return ws && WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0;
  }
  pid_t guest_pid() const {
    if (vm) return vm->pid();
    return guest ? guest->pid() : 0;
  }
};

struct PrimaryNode::Connection {
  common::Endpoint backup;
  std::shared_ptr<TcpSender> sender;
  protocol::Reply reply;
};

PrimaryNode::PrimaryNode(PrimaryConfig config, LogFn log)
    : impl_(std::make_unique<Impl>()),
      config_(std::move(config)),
      log_(std::move(log)),
      state_(PrimaryState::kStarting, log_) {
  impl_->backup = config_.backup;
  impl_->on_backup_loss = config_.on_backup_loss;
  impl_->buffering = config_.output_buffering && !config_.backup_null;
  if (config_.session_id == 0) config_.session_id = random_session_id();
}

PrimaryNode::~PrimaryNode() {
  if (impl_->work) impl_->work.reset();
  impl_->io.stop();
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
}

void PrimaryNode::request_stop() {
  stop_.request_stop();
  impl_->end_local_run();  // not only once its reconnect attempt returns
  if (EpochEngine* e = impl_->engine_to_wake.load()) e->wake();
}

void PrimaryNode::adopt_arena(common::SharedMemory arena) {
  impl_->arena.emplace(std::move(arena));
}

// ---- Control requests (any thread).

json::object PrimaryNode::output_json() const {
  if (!impl_->proxy) return {};
  const auto o = impl_->proxy->stats();
  json::object j;
  j["buffering"] = o.buffering;
  j["connections"] = o.connections;
  j["open_connections"] = o.open_connections;
  j["bytes_to_guest"] = o.bytes_to_guest;
  j["bytes_released"] = o.bytes_released;
  j["bytes_held"] = o.bytes_held;
  j["oldest_held_ms"] = o.oldest_held_ms;
  j["added_latency_p50_ms"] = o.added_latency_p50_ms;
  j["added_latency_p99_ms"] = o.added_latency_p99_ms;
  // To the microsecond, as the engine's hops are.
  auto us = [](double ms) { return std::round(ms * 1000) / 1000; };
  j["release_after_ack_ms"] = json::object{{"p50", us(o.release_after_ack_p50_ms)},
                                           {"p99", us(o.release_after_ack_p99_ms)},
                                           {"max", us(o.release_after_ack_max_ms)}};
  return j;
}

PrimaryMetrics PrimaryNode::metrics() const {
  PrimaryMetrics m;
  m.state = state_.state();
  m.totals = stats_.totals();
  m.pause = stats_.pause_histogram().snapshot();
  for (const auto& [p, name] : kPausePhases) {
    m.pause_phases[static_cast<size_t>(p)] = stats_.pause_phase_histogram(p).snapshot();
  }
  for (OutputHop h : kOutputHops) {
    m.output_hops[static_cast<size_t>(h)] = stats_.output_hop_histogram(h).snapshot();
  }
  // The engine and the proxy are made (or dropped) on the run() thread while
  // starting and then stay until destruction: read them only after that.
  const bool started = m.state != PrimaryState::kStarting;
  const auto interval =
      started && impl_->engine ? impl_->engine->interval() : config_.engine.interval;
  m.interval_seconds = std::chrono::duration<double>(interval).count();
  m.commit_eager = (started && impl_->engine ? impl_->engine->commit() : config_.engine.commit) ==
                   CommitMode::kEager;
  m.tracker = impl_->tracker_kind;
  if (const HybridTracker* h = impl_->hybrid) {
    m.hybrid = PrimaryMetrics::HybridChunks{
        .chunks = h->chunks(), .async_chunks = h->async_chunks(), .moves = h->chunk_moves()};
  }
  if (started && impl_->proxy) {
    m.output = {impl_->proxy->stats(), impl_->proxy->added_latency_histogram().snapshot(),
                impl_->proxy->release_after_ack_histogram().snapshot()};
  }
  if (ownership_) {
    const auto now = Clock::now();
    const auto deadline = ownership_->deadline();
    const double left = deadline ? std::chrono::duration<double>(*deadline - now).count() : 0.0;
    m.lease = {deadline.has_value(), std::max(0.0, left)};
  }
  return m;
}

json::object PrimaryNode::status() {
  auto& im = *impl_;
  json::object o;
  o["role"] = "primary";
  o["state"] = state_.name();
  {
    std::lock_guard lock(im.mu);
    o["peer"] = im.backup ? im.backup->to_string() : (config_.backup_null ? "null" : "");
    o["last_backup_loss"] = im.last_loss;
    o["on_backup_loss"] = im.on_backup_loss == BackupLoss::kStall ? "stall" : "continue";
    o["streams"] = im.streams;
  }
  const auto s = stats_.snapshot();
  o["guest_pid"] = im.guest_pid();
  if (im.vm) {
    // --vm: what its pauses cost, part by part (docs/operations.md, "Protecting
    // a virtual machine").
    const VmPauseTotals t = im.vm->totals();
    const double n = t.pauses > 0 ? static_cast<double>(t.pauses) : 1.0;
    auto avg_ms = [n](std::chrono::microseconds us) {
      return static_cast<double>(us.count()) / n / 1000.0;
    };
    json::object v;
    v["pauses"] = t.pauses;
    v["stop_ms_avg"] = avg_ms(t.stop);
    v["save_devices_ms_avg"] = avg_ms(t.save);
    v["cont_ms_avg"] = avg_ms(t.cont);
    v["device_state_bytes_last"] = t.last_device_state_bytes;
    v["device_state_bytes_avg"] = static_cast<double>(t.device_state_bytes) / n;
    // What the delta encoding leaves of it on the wire (the first of each
    // stream is sent whole).
    if (im.engine) {
      const auto sent = im.engine->device_state_sent();
      v["device_state_wire_bytes_avg"] =
          sent.chunks > 0 ? static_cast<double>(sent.wire_bytes) / static_cast<double>(sent.chunks)
                          : 0.0;
    }
    o["vm"] = std::move(v);
  }
  o["interval_ms"] = im.engine ? common::to_ms(im.engine->interval()) : 0.0;
  o["commit"] = commit_mode_name(im.engine ? im.engine->commit() : config_.engine.commit);
  o["min_gap_ms"] = common::to_ms(im.engine ? im.engine->min_gap() : config_.engine.min_gap);
  o["max_stopped_fraction"] =
      im.engine ? im.engine->max_stopped_fraction() : config_.engine.max_stopped_fraction;
  o["guest_stopped_fraction"] = s.stopped_fraction;
  o["checkpoints_per_sec"] = json::object{{"timer", s.timer_checkpoints_per_sec},
                                          {"output", s.output_checkpoints_per_sec}};
  o["tracker"] = tracker_kind_name(im.tracker_kind);
  if (im.hybrid) {
    o["tracker_async_chunks"] = im.hybrid->async_chunks();
    o["tracker_chunks"] = im.hybrid->chunks();
    o["tracker_chunk_moves"] = im.hybrid->chunk_moves();
  }
  o["codec"] = protocol::codec_name(im.engine ? im.engine->codec() : config_.engine.encode.codec);
  o["threads"] = config_.engine.encoder_threads;
  o["resumed"] = config_.resumed_epoch.has_value();
  o["last_committed_epoch"] = s.acked_epoch;
  json::object out = output_json();
  json::object primary = stats_to_json(s);
  // The path's last hop is the proxy's: with it, output_path_ms has all five.
  if (const auto* release = out.if_contains("release_after_ack_ms")) {
    primary["output_path_ms"].as_object()["release"] = *release;
  }
  o["output"] = out.empty() ? json::value(nullptr) : json::value(std::move(out));
  o["primary"] = std::move(primary);
  o["witness"] = ownership_ ? json::value(ownership_->status(Clock::now())) : json::value(nullptr);
  {
    // While protected by this node's own --data-dir only (protected_locally).
    std::lock_guard lock(im.mu);
    if (im.local) {
      const LocalLogReport r = im.local->report(Clock::now());
      json::object l;
      l["data_dir"] = r.data_dir;
      l["mode"] = r.mode;
      l["base_epoch"] = r.base_epoch;
      l["durable_epoch"] = r.durable_epoch;
      l["acked_epoch"] = r.acked_epoch;
      l["lag_epochs"] = r.lag_epochs;
      l["lag_ms"] = r.lag_ms;
      l["acks_held"] = r.acks_held;
      l["error"] = r.error;
      o["local_log"] = std::move(l);
    } else {
      o["local_log"] = nullptr;
    }
  }
  return o;
}

std::string PrimaryNode::handle_control(const std::string& request) {
  if (request == "status" || request == "status --json") return json_ok(status());
  if (request.rfind("set ", 0) == 0) {
    const auto rest = request.substr(4);
    const auto space = rest.find(' ');
    if (space == std::string::npos) return json_error("usage: set NAME VALUE");
    return set(rest.substr(0, space), rest.substr(space + 1));
  }
  if (request == "failover") {
    return json_error("this node is the primary; failover promotes a backup");
  }
  if (request.rfind("snapshot ", 0) == 0) {
    return json_error(
        "this node is the primary; a snapshot is taken from the backup's committed image, so "
        "that the guest never pauses for it: romulus snapshot FILE --control BACKUP-SOCKET");
  }
  return json_error(fmt::format("unknown request '{}'", request));
}

std::string PrimaryNode::set(const std::string& name, const std::string& value) {
  auto& im = *impl_;
  const RunTimeSetting* s = find_run_time_setting(name);
  if (s == nullptr || s->process)
    return json_error(fmt::format("unknown setting '{}' ({})", name, primary_setting_names()));
  // Settings of the link work at any time; those of the engine once it runs.
  if (s->to_engine != nullptr && !im.engine)
    return json_error("the guest is not running yet; try again in a moment");
  // Read as at start-up; only the entry's own field of `parsed` is used.
  PrimaryConfig parsed;
  if (Status st = s->parse(value_received(*s, value), parsed); !st.is_ok())
    return json_error(st.message());
  log_(fmt::format("{} set to {}", name, s->logged ? s->logged(parsed) : s->text(parsed)));
  if (s->to_engine != nullptr) s->to_engine(*im.engine, parsed.engine);
  if (s->to_primary != nullptr) s->to_primary(*this, parsed);
  return json_ok();
}

void PrimaryNode::set_on_backup_loss(BackupLoss policy) {
  std::lock_guard lock(impl_->mu);
  impl_->on_backup_loss = policy;
}

void PrimaryNode::set_backup(const common::Endpoint& backup) {
  auto& im = *impl_;
  {
    std::lock_guard lock(im.mu);
    im.backup = backup;
  }
  // Leaving the current backup on purpose: DROPPED, so it does not take over.
  if (im.sender) im.sender->drop();
  stop_.nudge();
}

// ---- Ownership (any thread).

void PrimaryNode::ownership_changed() {
  auto& im = *impl_;
  if (ownership_ && im.in_sync.load()) {
    // Protected: the guest runs on; only the name of the state changes
    // (output still leaves only as the gate allows).
    const bool may = ownership_->may_run(Clock::now());
    if (!may && state_.state() == PrimaryState::kProtected) {
      if (state_.transition(PrimaryState::kFenced)) {
        log_(
            fmt::format("FENCED while protected: {}; acknowledged output is released only "
                        "while the witness is unreachable, the guest keeps running",
                        ownership_->why_not()));
      }
    } else if (may && state_.state() == PrimaryState::kFenced) {
      if (state_.transition(PrimaryState::kProtected)) log_("ownership confirmed again");
    }
  } else if (ownership_ && state_.state() == PrimaryState::kProtectedLocally &&
             !ownership_->may_run(Clock::now())) {
    im.end_local_run();  // the protect loop fences (rule 2)
  }
  stop_.nudge();
  if (im.proxy) im.proxy->reopen_gate();
}

void PrimaryNode::demote(std::string why) {
  if (demoted_.load()) return;
  demote_reason_ = std::move(why);
  demoted_.store(true);
  request_stop();
}

void PrimaryNode::log_release_interval() {
  auto& im = *impl_;
  if (!im.proxy || !ownership_) return;
  const auto r = im.proxy->take_release_interval();
  if (!r) return;
  auto ms = [](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  };
  const auto d = ownership_->deadline();
  log_(fmt::format("RELEASED mono_ms={}..{} deadline_ms={}", ms(r->first), ms(r->last),
                   d ? ms(*d) : -1));
}

Status PrimaryNode::wait_while_fenced() {
  auto& im = *impl_;
  if (!ownership_) return Status::ok();
  bool fenced = false;
  while (!stop_.stop_requested() && !ownership_->may_run(Clock::now())) {
    if (auto gone = guest_gone()) return *gone;
    if (!fenced) {
      fenced = true;
      state_.transition(PrimaryState::kFenced);
      log_(
          fmt::format("FENCED: {}; output held and the guest stopped until this node owns the "
                      "pair again (or finds another owner and rejoins it as its backup)",
                      ownership_->why_not()));
      log_release_interval();
      if (!im.guest_paused()) {
        Status ps = im.pause_guest(config_.engine.gate_timeout);
        if (ps.code() == StatusCode::kAborted) return ps;
      }
    }
    stop_.wait_for(kFencedRecheck);
  }
  if (fenced && !stop_.stop_requested()) {
    log_("ownership of the pair confirmed: the guest runs again");
    if (im.guest_paused()) ROMULUS_RETURN_IF_ERROR(im.resume_guest());
  }
  return Status::ok();
}

// ---- run() and its steps (the engine thread).

Status PrimaryNode::run() {
  Status st = start_guest();
  if (st.is_ok()) st = start_engine();
  if (st.is_ok()) st = start_services();
  if (st.is_ok()) st = protect();
  shut_down(st);
  return st;
}

Status PrimaryNode::start_guest() {
  auto& im = *impl_;
  // Memory: a fresh arena, or the committed image handed over at activation.
  if (!im.arena) {
    ROMULUS_ASSIGN_OR_RETURN(auto arena,
                             common::SharedMemory::create("romulus-arena", config_.memory_bytes));
    im.arena.emplace(std::move(arena));
  }
  if (config_.vm) return start_vm();
  ROMULUS_ASSIGN_OR_RETURN(auto control, common::SharedMemory::create("romulus-control", 4096));
  im.control_page.emplace(std::move(control));

  const Measurements costs = tracker_costs();
  ROMULUS_ASSIGN_OR_RETURN(const TrackerDecision decision,
                           decide_tracker(costs, /*two_uffds=*/true));

  GuestSpec spec;
  spec.argv = config_.guest_command;
  spec.arena_fd = im.arena->fd();
  spec.arena_size = im.arena->size();
  spec.control_fd = im.control_page->fd();
  spec.tracker = decision.guest_tracker();
  spec.resumed_epoch = config_.resumed_epoch;
  if (config_.service) {
    ROMULUS_ASSIGN_OR_RETURN(im.guest_port, common::free_loopback_port());
    spec.service_port = im.guest_port;
  }
  ROMULUS_ASSIGN_OR_RETURN(auto guest, GuestProcess::start(spec));
  im.guest.emplace(std::move(guest));
  ROMULUS_RETURN_IF_ERROR(im.guest->wait_attached(kAttachWithin));
  // At once: a uffd-sync guest blocks on its first write until this exists.
  ROMULUS_ASSIGN_OR_RETURN(
      im.tracker, make_tracker(decision, *im.guest, im.arena->data(), im.arena->size(), costs));
  im.hybrid = dynamic_cast<const HybridTracker*>(im.tracker.get());
  log_(fmt::format("guest pid {} attached ({} MiB arena, {} tracker{})", im.guest->pid(),
                   im.arena->size() >> 20, tracker_kind_name(im.tracker_kind),
                   config_.resumed_epoch
                       ? fmt::format(", resumed from epoch {}", *config_.resumed_epoch)
                       : std::string()));
  if (on_started_) on_started_();
  return Status::ok();
}

// Tracker choice: measured on this machine at start (checkpoint/tracker_choice.h),
// unless measured already (PrimaryConfig::tracker_costs).
Measurements PrimaryNode::tracker_costs() const {
  return config_.tracker_costs ? *config_.tracker_costs : measure_tracker_costs();
}

Result<TrackerDecision> PrimaryNode::decide_tracker(const Measurements& costs, bool two_uffds) {
  auto& im = *impl_;
  ROMULUS_ASSIGN_OR_RETURN(
      TrackerDecision decision,
      choose_tracker(config_.tracker,
                     ArenaFacts{.arena_bytes = im.arena->size(),
                                .expected_dirty_pages = expected_dirty_pages(config_.engine.commit),
                                .takeover = config_.resumed_epoch.has_value(),
                                .two_uffds = two_uffds},
                     costs));
  log_(decision.explanation);
  im.tracker_kind = decision.kind;
  // What a write fault costs the guest, for the stopped-fraction budget.
  im.guest_fault_us =
      decision.kind == TrackerKind::kUffd ? costs.async_fault_us
      : decision.kind == TrackerKind::kUffdSync || decision.kind == TrackerKind::kUffdHybrid
          ? costs.sync_fault_us
          : 0;
  return decision;
}

// --vm: QEMU with the guest's RAM in the arena; dirty RAM found by the uffd
// tracker armed inside QEMU by the preload library, or by the compare
// tracker (the supervisor maps the same memfd; QEMU runs unchanged).
Status PrimaryNode::start_vm() {
  auto& im = *impl_;
  if (config_.service) {
    ROMULUS_ASSIGN_OR_RETURN(im.guest_port, common::free_loopback_port());
  }
  std::string looked_in;
  const std::optional<std::string> preload = find_qemu_preload(&looked_in);
  ROMULUS_ASSIGN_OR_RETURN(const TrackerDecision decision,
                           decide_tracker(vm_tracker_costs(tracker_costs(), preload, looked_in),
                                          /*two_uffds=*/false));
  VmSpec spec;
  spec.argv = config_.guest_command;
  spec.arena_fd = im.arena->fd();
  spec.arena_bytes = im.arena->size();
  if (config_.service) spec.service_port = im.guest_port;
  spec.device_state = config_.resumed_device_state;
  if (decision.kind == TrackerKind::kUffd) spec.preload = preload;
  if (config_.resumed_epoch && !spec.device_state) {
    return Status::invalid_argument(
        fmt::format("resuming the VM from epoch {}: the image holds no device state (was the "
                    "other node started with --vm?)",
                    *config_.resumed_epoch));
  }
  ROMULUS_ASSIGN_OR_RETURN(im.vm, VmGuest::start(spec));
  const auto t_tracker = Clock::now();
  if (decision.kind == TrackerKind::kUffd) {
    ROMULUS_ASSIGN_OR_RETURN(im.tracker, make_uffd_tracker(im.vm->pid(), im.vm->guest_arena_addr(),
                                                           im.arena->data(), im.arena->size()));
  } else {
    // No baseline copy: the engine's first collect() (initial_sync) only resets
    // tracking, and the copy of the arena would delay a takeover by seconds.
    ROMULUS_ASSIGN_OR_RETURN(im.tracker, make_compare_tracker(im.arena->data(), im.arena->size(),
                                                              /*baseline=*/false));
  }
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count() / 1000.0;
  };
  log_(fmt::format(
      "VM running: QEMU pid {} ({} MiB of guest RAM in the arena, {} "
      "tracker{}); QEMU start {:.1f} ms, device load {:.1f} ms, tracker {:.1f} ms",
      im.vm->pid(), im.arena->size() >> 20, tracker_kind_name(im.tracker_kind),
      config_.resumed_epoch
          ? fmt::format(", devices and RAM resumed from epoch {}", *config_.resumed_epoch)
          : std::string(),
      ms(im.vm->start_times().qemu), ms(im.vm->start_times().load), ms(Clock::now() - t_tracker)));
  if (!im.vm->loaded_queues().empty()) log_("VM queues as loaded: " + im.vm->loaded_queues());
  if (on_started_) on_started_();
  return Status::ok();
}

Status PrimaryNode::start_engine() {
  auto& im = *impl_;
  EngineOptions eo;
  static_cast<EngineSettings&>(eo) = config_.engine;  // as the operator set them
  eo.arena_fd = im.arena->fd();
  eo.first_epoch = config_.resumed_epoch.value_or(0) + 1;
  eo.guest_fault_us = im.guest_fault_us;
  eo.log = log_;
  if (im.vm) {
    im.pause = std::make_unique<VmPause>(*im.vm);
  } else {
    im.pause = std::make_unique<GuestPause>(*im.guest);
  }
  im.engine = std::make_unique<EpochEngine>(
      *im.pause, *im.tracker, config_.memory_bytes / protocol::kPageSize, nullptr, stats_, eo);
  im.engine_to_wake.store(im.engine.get());
  if (stop_.stop_requested()) im.engine->wake();
  return Status::ok();
}

// The io thread: output proxy, sender, statistics timer.
Status PrimaryNode::start_services() {
  auto& im = *impl_;
  im.work.emplace(asio::make_work_guard(im.io));
  im.io_thread = std::thread([&im] { im.io.run(); });
  if (config_.service) {
    OutputProxyOptions po;
    po.listen = *config_.service;
    po.guest_port = im.guest_port;
    po.buffering = im.buffering;
    po.io_threads = config_.proxy_threads;
    po.log = log_;
    EpochEngine* engine = im.engine.get();
    im.proxy = std::make_unique<OutputProxy>(im.io, po, [engine] { return engine->open_epoch(); });
    // --commit eager: held output starts the next checkpoint.
    im.proxy->set_on_output_held([engine](uint64_t epoch) { engine->note_output(epoch); });
    if (ownership_) {
      im.proxy->set_release_gate([o = ownership_](Clock::time_point now, bool acked) {
        return o->may_release(now, acked);
      });
    }
    Status ps = im.proxy->start();
    if (!ps.is_ok()) {
      im.proxy.reset();
      return ps;
    }
    log_(fmt::format("serving clients on {} (guest port {}); output {}",
                     config_.service->to_string(), im.guest_port,
                     im.buffering
                         ? "held until its checkpoint is acknowledged"
                         : "released at once (UNSAFE: --no-output-buffering or --backup null)"));
  }
  if (ownership_ && im.proxy) {
    // When output left, once a second: the evidence that two nodes never
    // release at once (each line names the lease deadline it relied on).
    im.release_timer.emplace(im.io, kReleaseLogEvery, [this] { log_release_interval(); });
  }
  if (config_.stats_period.count() > 0) {
    im.stats_timer.emplace(im.io, config_.stats_period, [this] {
      const auto s = stats_.snapshot();
      if (s.epochs > 0) log_(format_stats_line(s));
    });
  }
  return Status::ok();
}

// The guest ended. A clean exit (status 0) is the program finishing: say
// GOODBYE so the backup does not restart it. A crash or a non-zero status
// closes the stream without a word: the backup takes over from the last
// committed checkpoint, as it would if this host had died.
std::optional<Status> PrimaryNode::guest_gone() {
  auto& im = *impl_;
  auto exit = im.guest_exit();
  if (!exit) return std::nullopt;
  const bool clean = im.guest_exited_cleanly();
  if (im.sender && !im.sender->broken()) {
    if (clean) {
      im.sender->goodbye(kGoodbyeWithin);
    } else {
      im.sender->close();
    }
  }
  return Status::aborted(
      fmt::format("{}; the primary stops ({})", *exit,
                  clean ? "clean exit: the backup was told not to take over"
                        : "the backup takes over from the last committed checkpoint"));
}

void PrimaryNode::go_unprotected(BackupLoss policy) {
  auto& im = *impl_;
  if (policy != BackupLoss::kContinue) {
    state_.transition(PrimaryState::kStalled);
    return;
  }
  state_.transition(PrimaryState::kUnprotected);
  if (!im.proxy || !im.buffering) return;
  // Unprotected: holding output would only stall clients. With a witness,
  // only once it records that no backup has what this node now releases.
  if (ownership_) {
    Status st = ownership_->record_unprotected();
    if (!st.is_ok()) {
      if (!im.unprotected_refused) {
        log_(
            fmt::format("holding output: cannot record in the witness that this node serves "
                        "unprotected ({}); output leaves once it can, or once a backup is back",
                        st.message()));
        im.unprotected_refused = true;
      }
      return;
    }
    if (im.unprotected_refused) log_("recorded in the witness: output leaves unprotected now");
    im.unprotected_refused = false;
  }
  im.proxy->set_buffering(false);
}

Status PrimaryNode::protect() {
  auto& im = *impl_;
  if (config_.backup_null) {
    state_.transition(PrimaryState::kSyncing);
    im.engine->set_transport(&im.null_transport);
    Status st = im.engine->initial_sync();
    if (st.is_ok()) {
      state_.transition(PrimaryState::kProtected);
      log_("protected by the null backup (--backup null: checkpoints are taken and discarded)");
      st = im.engine->run(stop_.flag());
    }
    if (auto gone = guest_gone()) return *gone;
    return st;
  }

  ReconnectPolicy policy;
  std::string announced;                // the target whose unreachability was logged
  std::unique_ptr<Connection> handoff;  // a backup that connected during protect_locally()
  // A backup that connected but is not used (a stop, the guest gone) is told
  // DROPPED: its image is older than what this node's own log acknowledged,
  // so it must not take over from it.
  struct DropUnused {
    std::unique_ptr<Connection>& c;
    ~DropUnused() {
      if (c && c->sender) c->sender->drop();
    }
  } drop_unused{handoff};
  while (!stop_.stop_requested()) {
    if (auto gone = guest_gone()) return *gone;
    ROMULUS_RETURN_IF_ERROR(wait_while_fenced());
    if (stop_.stop_requested()) break;
    std::optional<common::Endpoint> backup;
    BackupLoss loss_policy;
    {
      std::lock_guard lock(im.mu);
      backup = im.backup;
      loss_policy = im.on_backup_loss;
    }
    if (handoff) {
      // A backup connected while this node protected to its own log.
      std::unique_ptr<Connection> c = std::move(handoff);
      const std::string target = c->backup.to_string();
      Status st = run_stream(std::move(*c), policy);
      if (!st.is_ok()) return st;
      announced = target;  // lost: already said
      continue;
    }
    const bool local = protects_locally(loss_policy);
    if (!backup) {
      if (local) {
        ROMULUS_RETURN_IF_ERROR(protect_locally("no backup configured", false, policy, handoff));
        announced = "-";
        continue;
      }
      // A backup that took over without --reprotect: no backup yet. The state
      // changes before the line that announces it (a reader of the log then
      // finds status saying so).
      go_unprotected(BackupLoss::kContinue);
      if (announced != "-") {
        log_(
            "no backup configured: the guest runs UNPROTECTED; `romulus set backup ADDR:PORT` "
            "protects it again");
        announced = "-";
      }
      stop_.wait_for(ReconnectPolicy::kIdleRecheck);
      continue;
    }
    Status st = protect_with(*backup, policy);
    if (!st.is_ok()) {
      if (st.code() != StatusCode::kUnavailable && st.code() != StatusCode::kRefused) return st;
      if (local) {
        const std::string target = backup->to_string();
        const bool refused = st.code() == StatusCode::kRefused;
        ROMULUS_RETURN_IF_ERROR(
            protect_locally(fmt::format("backup {} {}: {}", target,
                                        refused ? "refused" : "unreachable", st.message()),
                            refused, policy, handoff));
        announced = target;
        continue;
      }
      // Could not connect: say so once per target (after the state changed), then retry.
      go_unprotected(loss_policy);
      const std::string target = backup->to_string();
      if (st.code() == StatusCode::kRefused) {
        log_(fmt::format("backup {} refused: {}", target, st.message()));
      } else if (announced != target) {
        log_(fmt::format(
            "backup {} unreachable: {}; the guest runs UNPROTECTED{}; retrying", target,
            st.message(),
            loss_policy == BackupLoss::kStall ? " and STALLED (--on-backup-loss stall)" : ""));
      }
      announced = target;
      if (loss_policy == BackupLoss::kStall && !im.guest_paused()) {
        Status ps = im.pause_guest(config_.engine.gate_timeout);
        if (ps.code() == StatusCode::kAborted) return ps;
      }
      stop_.wait_for(policy.after_failure(st.code() == StatusCode::kRefused));
      continue;
    }
    announced = backup->to_string();  // lost: already said
  }
  return Status::ok();
}

void PrimaryNode::record_ack(uint64_t epoch) {
  auto& im = *impl_;
  const auto now = Clock::now();
  stats_.record_ack(epoch, now);
  if (im.proxy) im.proxy->on_ack(epoch, now);
  std::lock_guard lock(im.mu);
  im.max_acked = std::max(im.max_acked, epoch);
}

// Protected from the moment the backup holds a consistent image, i.e.
// acknowledges the sync's first checkpoint, not when it was sent. The ack
// callback or the end of initial_sync(), whichever sees that first, takes
// this one step (with im.mu held); true if it made the node protected.
bool PrimaryNode::enter_protected() {
  auto& im = *impl_;
  im.sync_epoch = 0;
  im.in_sync.store(true);
  if (ownership_) ownership_->record_protected();
  return state_.transition(PrimaryState::kProtected);
}

void PrimaryNode::log_protected(const std::string& peer, uint64_t epoch) {
  log_(fmt::format("backup {} in sync at epoch {}; the guest is protected", peer, epoch));
}

Status PrimaryNode::protect_with(const common::Endpoint& backup, ReconnectPolicy& policy) {
  ROMULUS_ASSIGN_OR_RETURN(Connection c, connect_backup(backup));
  return run_stream(std::move(c), policy);
}

Result<PrimaryNode::Connection> PrimaryNode::connect_backup(const common::Endpoint& backup) {
  auto& im = *impl_;
  const std::string peer = backup.to_string();
  const protocol::Hello hello = link_hello(config_);
  const SenderOptions so = link_options(config_);
  SenderCallbacks cb;
  cb.on_ack = [this, &im, peer](uint64_t epoch) {
    record_ack(epoch);
    bool now_protected = false;
    {
      std::lock_guard lock(im.mu);
      if (im.sync_epoch != 0 && epoch >= im.sync_epoch) now_protected = enter_protected();
    }
    if (now_protected) log_protected(peer, epoch);
  };
  cb.on_lost = [&im](const Status& why) {
    std::lock_guard lock(im.mu);
    im.last_loss = why.message();
  };
  Connection c{backup, nullptr, {}};
  ROMULUS_ASSIGN_OR_RETURN(c.sender, TcpSender::connect(im.io, backup, hello, so, cb, &c.reply));
  return c;
}

Status PrimaryNode::run_stream(Connection c, ReconnectPolicy& policy) {
  auto& im = *impl_;
  const std::string peer = c.backup.to_string();
  const protocol::Reply reply = c.reply;
  im.sender = std::move(c.sender);
  policy.on_connected();
  {
    std::lock_guard lock(im.mu);
    im.streams++;
    im.local_failed = false;  // a later loss may protect to this node's own log again
  }
  // Protected again: output waits for acks (held during the sync too: a
  // failover before it completes would resume from the older image). Before
  // the log line, so that every reply read after it is held.
  if (im.proxy) im.proxy->set_buffering(im.buffering);
  if (im.guest_paused()) ROMULUS_RETURN_IF_ERROR(im.resume_guest());
  // Syncing before the line that says so: whoever reads the line (an
  // operator, a test) and then asks for the status sees the same state.
  state_.transition(PrimaryState::kSyncing);
  log_(fmt::format("connected to backup {} (its last committed epoch: {}); full live sync", peer,
                   reply.last_committed_epoch));
  im.engine->set_transport(im.sender.get(), reply.last_committed_epoch + 1);
  Status st = im.engine->initial_sync();
  if (st.is_ok()) {
    // The first consistent checkpoint is queued; "protected" once it is
    // acked (which may already have happened).
    uint64_t acked = 0;
    {
      std::lock_guard lock(im.mu);
      const uint64_t first = im.engine->last_epoch();
      if (im.max_acked >= first) {
        if (enter_protected()) acked = im.max_acked;
      } else {
        im.sync_epoch = first;
      }
    }
    if (acked != 0) log_protected(peer, acked);
    st = im.engine->run(stop_.flag());
  }
  if (auto gone = guest_gone()) return *gone;
  if (stop_.stop_requested()) return Status::ok();
  // The stream broke: the backup is lost (or refused a checkpoint).
  std::string why;
  BackupLoss loss_policy;
  {
    std::lock_guard lock(im.mu);
    why = im.last_loss.empty() ? st.message() : im.last_loss;
    im.last_loss = why;
    im.sync_epoch = 0;
    im.in_sync.store(false);
    loss_policy = im.on_backup_loss;
  }
  im.sender->drop();  // if still open: tell the backup we go on without it
  im.engine->set_transport(nullptr);
  if (protects_locally(loss_policy)) {
    // Output stays held: the loop protects to this node's own log next (after
    // one more try of the backup), whose ACKs release it.
    log_(fmt::format("BACKUP LOST ({}): protecting to this node's --data-dir; reconnecting to {}",
                     why, peer));
    return Status::ok();
  }
  go_unprotected(loss_policy);
  log_(fmt::format("BACKUP LOST ({}): the guest runs UNPROTECTED{}; reconnecting to {}", why,
                   loss_policy == BackupLoss::kStall ? " and STALLED" : "", peer));
  return Status::ok();
}

bool PrimaryNode::protects_locally(BackupLoss policy) const {
  std::lock_guard lock(impl_->mu);
  return config_.local_log && policy == BackupLoss::kContinue && !impl_->local_failed;
}

Status PrimaryNode::protect_locally(const std::string& why, bool refused, ReconnectPolicy& policy,
                                    std::unique_ptr<Connection>& handoff) {
  auto& im = *impl_;
  const bool sync = config_.durable.mode == storage::DurableMode::kSync;
  // Ends the local run: a backup connected, a stop, a fence, or the disk
  // failed under async. The engine looks at it within kStopPoll, at once
  // after wake().
  std::atomic<bool> local_stop{false};
  auto end_local_run = [&im, &local_stop] {
    local_stop.store(true);
    if (EpochEngine* e = im.engine_to_wake.load()) e->wake();
  };
  LocalLogHooks hooks;
  hooks.on_ack = [this](uint64_t epoch) { record_ack(epoch); };
  if (ownership_ && im.buffering) {
    // The other node's image is older than what this one serves from now on:
    // as before unprotected output, the witness records it before the first
    // ACK releases anything, and that this node's disk holds the newest image.
    hooks.before_first_ack = [this, &im](uint64_t base_epoch) {
      Status st = ownership_->record_unprotected();
      if (st.is_ok()) st = ownership_->record_image(base_epoch);
      std::lock_guard lock(im.mu);
      if (!st.is_ok() && !im.unprotected_refused) {
        log_(
            fmt::format("holding output: cannot record in the witness that this node serves what "
                        "no backup has ({}); output leaves once it can, or once a backup is back",
                        st.message()));
        im.unprotected_refused = true;
      } else if (st.is_ok() && im.unprotected_refused) {
        log_("recorded in the witness: output leaves on this node's own log now");
        im.unprotected_refused = false;
      }
      return st;
    };
  }
  hooks.on_disk_error = [this, &im, sync, end_local_run](const std::string& line) {
    log_(line);
    if (sync) return;  // output stays held; the backup, once back, releases it
    {
      std::lock_guard lock(im.mu);
      im.local_failed = true;
    }
    end_local_run();
  };
  auto opened = config_.local_log(std::move(hooks));
  if (!opened.is_ok()) {
    {
      std::lock_guard lock(im.mu);
      im.local_failed = true;
    }
    go_unprotected(BackupLoss::kContinue);
    log_(
        fmt::format("{}; this node's own log cannot be used ({}): the guest runs UNPROTECTED; "
                    "retrying the backup",
                    why, opened.status().message()));
    return Status::ok();
  }
  std::unique_ptr<LocalLogTransport> local = std::move(opened).value();
  // Output waits for the local log's ACKs (under sync: for its fdatasync).
  // The state changes before the line that announces it.
  if (im.proxy) im.proxy->set_buffering(im.buffering);
  if (im.guest_paused()) ROMULUS_RETURN_IF_ERROR(im.resume_guest());
  state_.transition(PrimaryState::kProtectedLocally);
  log_(fmt::format(
      "{}; the guest is protected by this node's --data-dir {} only ({}); retrying", why,
      config_.durable.data_dir,
      sync ? "--durable sync: replies wait for its fdatasync"
           : "--durable async: replies leave once a checkpoint is in memory, the disk lags"));
  {
    std::lock_guard lock(im.mu);
    im.local = local.get();
    im.local_stop = &local_stop;
  }
  if (stop_.stop_requested()) end_local_run();  // asked before the flag was reachable

  // The backup, tried at the ReconnectPolicy's pace while checkpoints go on.
  Status connect_error;
  std::thread connector([&] {
    auto delay = policy.after_failure(refused);
    while (!local_stop.load()) {
      if (stop_.wait_for(delay) || local_stop.load()) break;
      if (ownership_ && !ownership_->may_run(Clock::now())) break;  // the loop fences
      std::optional<common::Endpoint> backup;
      {
        std::lock_guard lock(im.mu);
        backup = im.backup;
      }
      if (!backup) {
        delay = ReconnectPolicy::kIdleRecheck;
        continue;
      }
      auto c = connect_backup(*backup);
      if (c.is_ok()) {
        handoff = std::make_unique<Connection>(std::move(c).value());
        break;
      }
      const StatusCode code = c.status().code();
      if (code != StatusCode::kUnavailable && code != StatusCode::kRefused) {
        connect_error = c.status();
        break;
      }
      delay = policy.after_failure(code == StatusCode::kRefused);
    }
    end_local_run();
  });

  im.engine->set_transport(local.get());
  Status st = im.engine->initial_sync();
  if (st.is_ok()) st = im.engine->run(local_stop);
  end_local_run();
  connector.join();
  // The writer drains: what was submitted becomes durable (and acknowledged);
  // the directory keeps the newest local epoch.
  local->stop();
  im.engine->set_transport(nullptr);
  {
    std::lock_guard lock(im.mu);
    im.local = nullptr;
    im.local_stop = nullptr;
  }
  const LocalLogReport last = local->report(Clock::now());
  local.reset();
  if (auto gone = guest_gone()) return *gone;
  if (stop_.stop_requested()) return Status::ok();
  if (!connect_error.is_ok()) return connect_error;
  if (!st.is_ok()) {
    log_(fmt::format("this node's own log stopped: {}; its --data-dir holds epoch {}", st.message(),
                     last.durable_epoch));
  } else if (handoff) {
    log_(
        fmt::format("this node's own log stopped at epoch {} (durable in --data-dir {}): "
                    "protecting to backup {} again",
                    last.durable_epoch, config_.durable.data_dir, handoff->backup.to_string()));
  }
  bool failed = false;
  {
    std::lock_guard lock(im.mu);
    failed = im.local_failed;
  }
  if (failed) go_unprotected(BackupLoss::kContinue);
  return Status::ok();
}

void PrimaryNode::shut_down(const Status& result) {
  auto& im = *impl_;
  log_release_interval();
  if (demoted_.load()) {
    state_.transition(PrimaryState::kDemoting);
    log_(
        fmt::format("DEMOTING ({}): stopping the guest; what it did since its last "
                    "acknowledged checkpoint is dropped",
                    demote_reason_));
    if (im.proxy) im.proxy->stop();
    if (im.sender && !im.sender->broken()) im.sender->drop();
  }
  state_.transition(PrimaryState::kStopping);
  if (im.proxy) im.proxy->stop();  // no output leaves from here on
  const bool requested = result.is_ok() && !demoted_.load();
  // With a witness, a requested stop hands the pair over: the lease first, so
  // that the backup wins the key at its first try.
  const bool hand_over = requested && ownership_ != nullptr;
  if (hand_over) {
    if (Status st = ownership_->give_up(); !st.is_ok()) log_(st.message());
  }
  if (im.sender && !im.sender->broken()) {
    if (hand_over) {
      log_("handing the pair over to the backup (HANDOVER): it takes over now");
      im.sender->handover(kGoodbyeWithin);
    } else if (requested) {
      // Without a witness: tell the backup it need not take over.
      im.sender->goodbye(kGoodbyeWithin);
    } else {
      // A failure (maybe in the middle of a checkpoint): as from a crash, the
      // backup takes over from its last committed checkpoint.
      im.sender->close();
    }
  }
  if (im.guest) {
    Status st = im.guest->stop(GuestProcess::kStopGrace);
    if (!st.is_ok()) log_(st.message());
  }
  if (im.vm) {
    Status st = im.vm->stop(GuestProcess::kStopGrace);
    if (!st.is_ok()) log_(st.message());
  }
}

}  // namespace romulus::checkpoint
