#include "replica/witness_link.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "witness/etcd_witness.h"

namespace romulus::replica {
namespace json = boost::json;
namespace etcd = witness::etcd;
using witness::OwnershipState;

WitnessLink::WitnessLink(const WitnessSettings& settings, std::string replication,
                         std::function<void(const std::string&)> log)
    : settings_(settings), replication_(std::move(replication)), log_(std::move(log)) {}

WitnessLink::~WitnessLink() {
  // The keeper first: it tells the guard nothing more once stopped. The
  // guard (destroyed with this) then waits for the process to exit and gives
  // up the lease it holds, if any (none after give_up()).
  if (keeper_) keeper_->stop();
  {
    std::lock_guard lock(marker_mu_);
    marker_stop_ = true;
  }
  marker_cv_.notify_all();
  if (marker_thread_.joinable()) marker_thread_.join();
}

Status WitnessLink::start() {
  etcd::EtcdClient::Options options;
  if (settings_.url.tls) {
    auto id = common::TlsIdentity::load(settings_.tls);
    if (!id.is_ok()) return id.status().context("the witness's TLS files");
    options.tls = *id;
    tls_ = *id;
    log_(fmt::format("witness over TLS: this node's {}", (*id)->describe()));
  }
  auto w = std::make_unique<witness::EtcdWitness>(settings_.url.endpoints, options);
  // No node may win the pair while the other serves what no backup has.
  marker_key_ = fmt::format("/romulus/{}/unprotected", settings_.pair);
  owner_key_ = witness::owner_key(settings_.pair);
  image_key_ = witness::image_key(settings_.pair);
  w->set_acquire_guard(etcd::AcquireGuard{marker_key_, settings_.node_id});
  marker_client_.emplace(settings_.url.endpoints, options);
  marker_thread_ = std::thread([this] { records_loop(); });
  start_guard();
  witness::LeaseKeeperOptions o;
  o.pair = settings_.pair;
  o.node_id = settings_.node_id;
  o.replication = replication_;
  o.ttl = settings_.lease_ttl;
  o.log = log_;
  if (!settings_.lease_file.empty()) {
    if (Status st = witness::write_lease_file(settings_.lease_file, {getpid(), 0}); !st.is_ok()) {
      log_(fmt::format("WARNING: {}; `romulus release-lease` cannot give this node's lease up",
                       st.message()));
    }
  }
  if (guard_ || !settings_.lease_file.empty()) {
    o.on_lease = [this](witness::LeaseId lease) {
      if (guard_) {
        if (Status st = guard_->held(lease); !st.is_ok()) log_(st.message());
      }
      if (!settings_.lease_file.empty()) {
        Status st = witness::write_lease_file(settings_.lease_file, {getpid(), lease});
        if (!st.is_ok()) log_(st.message());
      }
    };
  }
  keeper_.emplace(std::move(w), o, [this](const witness::OwnershipChange& c) { on_change(c); });
  return keeper_->start();
}

void WitnessLink::attach(checkpoint::PrimaryNode* primary) {
  std::lock_guard lock(mu_);
  primary_ = primary;
}

// ---- checkpoint::Ownership

bool WitnessLink::may_release(Clock::time_point now, bool acked) const {
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

bool WitnessLink::may_run(Clock::time_point now) const { return keeper_->may_release(now); }

std::optional<WitnessLink::Clock::time_point> WitnessLink::deadline() const {
  const auto s = keeper_->snapshot(Clock::now());
  if (s.state != OwnershipState::kOwner) return std::nullopt;
  return Clock::now() + std::chrono::milliseconds(s.remaining_ms);
}

std::string WitnessLink::why_not() const {
  const auto s = keeper_->snapshot(Clock::now());
  std::string why = fmt::format("this node does not hold the pair's lease ({}: {})",
                                witness::to_string(s.state), s.detail);
  if (!s.last_error.empty()) why += fmt::format("; last witness error: {}", s.last_error);
  return why;
}

json::object WitnessLink::status(Clock::time_point now) const {
  json::object o;
  keeper_->snapshot(now).write_json(o);
  return o;
}

Status WitnessLink::record_unprotected() {
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

void WitnessLink::record_protected() {
  {
    std::lock_guard lock(marker_mu_);
    clear_pending_ = true;
  }
  marker_cv_.notify_all();
}

Status WitnessLink::record_image(uint64_t base_epoch) {
  std::lock_guard lock(marker_mu_);
  image_pending_ = 0;  // this one is newer than any a backup role left pending
  image_done_ = nullptr;
  return put_image_record(base_epoch);
}

Status WitnessLink::give_up() {
  const auto before = keeper_->snapshot(Clock::now());
  if (before.state == OwnershipState::kReleased) return Status::ok();
  Status st = keeper_->step_down();
  if (!st.is_ok()) return st;
  // step_down() stopped releases; stop() waits for the key's release and the
  // lease's revocation (each bounded by the witness client's deadline).
  keeper_->stop();
  if (before.lease == 0) return Status::ok();  // held nothing
  Status released = keeper_->release_result();
  if (released.is_ok() && keeper_->snapshot(Clock::now()).lease != 0) {
    released = Status::unavailable("no answer");  // stopped before the release ran
  }
  if (!released.is_ok()) {
    return Status::unavailable(
        fmt::format("could not give the pair's lease up ({}); it expires by itself within {} s",
                    released.message(), settings_.lease_ttl.count()));
  }
  log_(fmt::format("gave the pair's lease up in the witness (lease {})", before.lease));
  return Status::ok();
}

// ---- TakeoverGate

void WitnessLink::request(bool prompt) {
  takeover_requested_ = true;
  Status st = keeper_->request_takeover(prompt);
  if (!st.is_ok()) log_(fmt::format("witness: {}", st.message()));
}

void WitnessLink::set_wake(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  wake_ = std::move(wake);
}

TakeoverGate::Verdict WitnessLink::poll(std::string* detail) {
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

void WitnessLink::cancel() {
  if (!takeover_requested_) return;
  takeover_requested_ = false;
  Status st = keeper_->stand_by();
  if (!st.is_ok()) log_(fmt::format("witness: {}", st.message()));
}

WitnessReport WitnessLink::report() const {
  const auto s = keeper_->snapshot(Clock::now());
  WitnessReport r;
  r.owner = s.state == OwnershipState::kOwner;
  r.remaining_ms = s.remaining_ms;
  s.write_json(r.status);
  return r;
}

Result<std::optional<TakeoverGate::ImageHolder>> WitnessLink::image_holder() {
  std::lock_guard lock(marker_mu_);
  auto kv = marker_client_->get(image_key_);
  if (!kv.is_ok()) {
    return kv.status().context(fmt::format("reading {} in the witness", image_key_));
  }
  if (!*kv) return std::optional<ImageHolder>();
  auto record = witness::parse_image_record((*kv)->value);
  if (!record.is_ok()) {
    return Status::corrupt(fmt::format(
        "{} in the witness is damaged ({}): delete it (`etcdctl del {}`) and let the nodes "
        "compare their images over the link",
        image_key_, record.status().message(), image_key_));
  }
  return std::optional<ImageHolder>(
      ImageHolder{record->node, record->epoch, record->node == settings_.node_id, image_key_});
}

void WitnessLink::record_image(uint64_t epoch, std::function<void()> done) {
  {
    std::lock_guard lock(marker_mu_);
    image_pending_ = epoch;
    image_done_ = std::move(done);
  }
  marker_cv_.notify_all();
}

void WitnessLink::forget_image_record() {
  std::lock_guard lock(marker_mu_);
  image_pending_ = 0;
  image_done_ = nullptr;
}

// ---- Private

void WitnessLink::start_guard() {
  if (settings_.guard_program.empty()) return;
  // `ps` shows the binary's name, not /proc/self/exe.
  std::error_code ec;
  std::string name = std::filesystem::read_symlink(settings_.guard_program, ec).string();
  if (ec || name.empty()) name = settings_.guard_program;
  std::vector<std::string> argv = {name,          "lease-guard",
                                   "--node-pid",  std::to_string(getpid()),
                                   "--witness",   settings_.url.to_string(),
                                   "--pair",      settings_.pair,
                                   "--lease-ttl", fmt::format("{}s", settings_.lease_ttl.count())};
  if (settings_.url.tls) {
    argv.insert(argv.end(), {"--witness-cert", settings_.tls.cert, "--witness-key",
                             settings_.tls.key, "--witness-ca", settings_.tls.ca});
  }
  auto guard = witness::LeaseGuardLink::spawn(settings_.guard_program, argv);
  if (!guard.is_ok()) {
    log_(
        fmt::format("WARNING: {}; if this process dies, the other node waits for its lease to "
                    "expire",
                    guard.status().message()));
    return;
  }
  guard_ = std::move(guard).value();
  log_(fmt::format("lease guard started (pid {}): if this process dies, it gives the lease up",
                   guard_->pid()));
}

void WitnessLink::records_loop() {
  std::unique_lock lock(marker_mu_);
  while (!marker_stop_) {
    marker_cv_.wait(lock, [&] { return marker_stop_ || clear_pending_ || image_pending_ != 0; });
    if (marker_stop_) return;
    bool answered = true;
    if (image_pending_ != 0) answered = write_image_record() && answered;
    if (clear_pending_) answered = clear_marker() && answered;
    if (!answered) marker_cv_.wait_for(lock, kMarkerClearRetry, [&] { return marker_stop_; });
  }
}

bool WitnessLink::clear_marker() {
  auto del = marker_client_->delete_if_value(marker_key_, settings_.node_id);
  if (!del.is_ok()) return false;
  clear_pending_ = false;
  if (*del || marked_) log_(fmt::format("cleared {} in the witness", marker_key_));
  marked_ = false;
  return true;
}

Status WitnessLink::put_image_record(uint64_t epoch) {
  Status st = marker_client_->put(
      image_key_, witness::encode_image_record(witness::ImageRecord{settings_.node_id, epoch}));
  if (!st.is_ok()) return st;
  log_(
      fmt::format("recorded {} in the witness: this node holds the newest durable image (from "
                  "epoch {})",
                  image_key_, epoch));
  return st;
}

bool WitnessLink::write_image_record() {
  const uint64_t epoch = image_pending_;
  Status st = put_image_record(epoch);
  if (!st.is_ok()) {
    if (!image_failure_logged_) {
      log_(fmt::format(
          "cannot record in the witness that this node holds the newest durable image ({}); "
          "retrying. Under --durable sync nothing of this stream is acknowledged until it is",
          st.message()));
      image_failure_logged_ = true;
    }
    return false;
  }
  image_failure_logged_ = false;
  // marker_mu_ is held throughout: no newer record was asked for meanwhile.
  image_pending_ = 0;
  if (auto done = std::move(image_done_)) done();
  image_done_ = nullptr;
  return true;
}

bool WitnessLink::blocked_by_marker() {
  const auto now = Clock::now();
  if (now < next_marker_look_) return last_marker_blocks_;
  next_marker_look_ = now + kMarkerLookEvery;
  std::lock_guard lock(marker_mu_);
  auto kv = marker_client_->get(marker_key_);
  last_marker_blocks_ = kv.is_ok() && *kv && (*kv)->value != settings_.node_id;
  return last_marker_blocks_;
}

void WitnessLink::on_change(const witness::OwnershipChange& c) {
  if (c.to == OwnershipState::kFenced) {
    fenced_since_.store(Clock::now().time_since_epoch().count());
  } else {
    fenced_since_.store(0);
  }
  std::lock_guard lock(mu_);
  if (wake_) wake_();
  if (!primary_) return;
  if (c.to == OwnershipState::kFollower && c.owner && c.owner->value.node != settings_.node_id) {
    primary_->demote(fmt::format("node {} owns the pair (replication {})", c.owner->value.node,
                                 c.owner->value.replication));
    return;
  }
  primary_->ownership_changed();
}

}  // namespace romulus::replica
