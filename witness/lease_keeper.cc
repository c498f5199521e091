#include "witness/lease_keeper.h"

#include <fmt/format.h>

namespace romulus::witness {

namespace {

OwnershipConfig to_config(const LeaseKeeperOptions& o) {
  OwnershipConfig c;
  c.pair = o.pair;
  c.node_id = o.node_id;
  c.replication = o.replication;
  c.ttl = o.ttl;
  c.log = o.log;
  return c;
}

// Never wait longer than this at once: a cap, not a poll (every wait is also woken by commands).
constexpr Duration kMaxWait = std::chrono::minutes(1);

}  // namespace

LeaseKeeper::LeaseKeeper(std::unique_ptr<Witness> witness, LeaseKeeperOptions options,
                         OnChange on_change)
    : witness_(std::move(witness)),
      options_(std::move(options)),
      on_change_(std::move(on_change)),
      witness_name_(witness_->describe()),
      own_(to_config(options_)) {}

LeaseKeeper::~LeaseKeeper() { stop(); }

Status LeaseKeeper::start() {
  ROMULUS_RETURN_IF_ERROR(check_config(to_config(options_)));
  if (thread_.joinable()) return Status::invalid_argument("lease keeper already started");
  // The keeper thread is not running yet: the witness is ours to call here.
  Result<std::optional<Owner>> probe = witness_->get(own_.key());
  if (!probe.is_ok() && probe.status().code() != StatusCode::kCorrupt) {
    return Status::unavailable(
        fmt::format("cannot reach the witness at {}: {}; start etcd or check --witness",
                    witness_name_, probe.status().message()));
  }
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void LeaseKeeper::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  release_until_.store(INT64_MIN, std::memory_order_release);
}

OwnershipState LeaseKeeper::state() const {
  std::lock_guard lk(mu_);
  return own_.state();
}

OwnershipSnapshot LeaseKeeper::snapshot(Clock::time_point now) const {
  std::lock_guard lk(mu_);
  OwnershipSnapshot s;
  s.state = own_.state();
  s.lease = own_.lease();
  s.owner = own_.known_owner();
  s.remaining_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(own_.remaining(now)).count();
  if (own_.waiting_left()) s.waiting_ms = own_.waiting_left()->count();
  s.detail = own_.describe(now);
  s.witness = witness_name_;
  if (!own_.last_error().is_ok()) s.last_error = own_.last_error().to_string();
  return s;
}

void LeaseKeeper::after_event_locked(OwnershipState before) {
  // Publish first: a transition out of kOwner must stop releases before anything else happens.
  release_until_.store(own_.state() == OwnershipState::kOwner
                           ? own_.deadline().time_since_epoch().count()
                           : INT64_MIN,
                       std::memory_order_release);
  if (own_.lease() != reported_lease_) {
    reported_lease_ = own_.lease();
    if (options_.on_lease) options_.on_lease(reported_lease_);
  }
  if (own_.state() == before) return;
  OwnershipChange c{before, own_.state(), own_.known_owner(), own_.describe(Clock::now())};
  if (options_.log) {
    options_.log(
        fmt::format("witness: {} -> {}: {}", to_string(c.from), to_string(c.to), c.detail));
  }
  changes_.push_back(std::move(c));
  state_.notify_all();
}

void LeaseKeeper::deliver_changes(std::unique_lock<std::mutex>& lk) {
  if (changes_.empty()) return;
  std::vector<OwnershipChange> changes;
  changes.swap(changes_);
  if (!on_change_) return;
  lk.unlock();
  for (const OwnershipChange& c : changes) on_change_(c);
  lk.lock();
}

namespace {

template <typename F>
Status command(std::mutex& mu, std::condition_variable& wake, bool& poked, F f) {
  Status s;
  {
    std::lock_guard lk(mu);
    s = f();
    poked = true;
  }
  wake.notify_all();
  return s;
}

}  // namespace

Status LeaseKeeper::try_acquire() {
  return command(mu_, wake_, poked_, [&] {
    const OwnershipState before = own_.state();
    Status s = own_.request_ownership(Clock::now());
    after_event_locked(before);
    return s;
  });
}

Status LeaseKeeper::request_takeover(bool prompt) {
  return command(mu_, wake_, poked_, [&] {
    const OwnershipState before = own_.state();
    // Wait out the owner last seen; if none was ever seen, whoever holds the key now.
    LeaseId displacing = kCurrentHolder;
    if (own_.known_owner()) displacing = own_.known_owner()->lease;
    Status s = own_.request_ownership(Clock::now(), displacing, prompt);
    after_event_locked(before);
    return s;
  });
}

Status LeaseKeeper::stand_by() {
  return command(mu_, wake_, poked_, [&] {
    const OwnershipState before = own_.state();
    Status s = own_.stand_by(Clock::now());
    after_event_locked(before);
    return s;
  });
}

Status LeaseKeeper::step_down() {
  return command(mu_, wake_, poked_, [&] {
    const OwnershipState before = own_.state();
    Status s = own_.step_down(Clock::now());
    after_event_locked(before);
    return s;
  });
}

void LeaseKeeper::set_epoch(uint64_t epoch) {
  std::lock_guard lk(mu_);
  own_.set_epoch(epoch);
}

Status LeaseKeeper::release_result() const {
  std::lock_guard lk(mu_);
  return own_.release_result();
}

OwnershipState LeaseKeeper::wait_while_candidate(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  state_.wait_for(lk, timeout, [&] { return own_.state() != OwnershipState::kCandidate; });
  return own_.state();
}

void LeaseKeeper::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    const TimePoint now = Clock::now();
    const OwnershipState before = own_.state();
    const Action a = own_.on_tick(now);
    after_event_locked(before);
    deliver_changes(lk);
    const bool due = a.kind != Action::Kind::kNone && a.at <= now;
    if (stopping_ && !(due && a.kind == Action::Kind::kRelease)) break;
    if (!due) {
      wake_.wait_until(lk, std::min(a.at, now + kMaxWait), [&] { return stopping_ || poked_; });
      poked_ = false;
      continue;
    }
    perform(lk, a);
    deliver_changes(lk);
    if (stopping_ && a.kind == Action::Kind::kRelease) break;
  }
}

// Runs one witness call without the lock, then feeds its result to own_.
void LeaseKeeper::perform(std::unique_lock<std::mutex>& lk, const Action& a) {
  const std::chrono::seconds ttl = own_.ttl();
  const LeaseId lease = own_.lease();
  const std::string key = own_.key();
  const OwnerValue value = own_.value();
  const LeaseId waited = own_.waiting_for() ? own_.waiting_for()->lease : 0;
  lk.unlock();
  const TimePoint sent = Clock::now();
  auto feed = [&](auto&& deliver) {
    lk.lock();
    const OwnershipState before = own_.state();
    deliver(Clock::now());
    after_event_locked(before);
  };
  using K = Action::Kind;
  switch (a.kind) {
    case K::kNone:
      break;
    case K::kGrant: {
      auto r = witness_->grant(ttl);
      return feed([&](TimePoint now) { own_.on_grant_result(sent, r, now); });
    }
    case K::kKeepAlive: {
      auto r = witness_->keepalive(lease);
      return feed([&](TimePoint now) { own_.on_keepalive_result(sent, r, now); });
    }
    case K::kAcquire: {
      auto r = witness_->acquire(key, value, lease);
      return feed([&](TimePoint now) { own_.on_acquire_result(r, now); });
    }
    case K::kGet: {
      auto r = witness_->get(key);
      return feed([&](TimePoint now) { own_.on_get_result(r, now); });
    }
    case K::kLeaseRemaining: {
      auto r = witness_->lease_remaining(waited);
      return feed([&](TimePoint now) { own_.on_lease_remaining_result(r, now); });
    }
    case K::kRelease: {
      Status s = witness_->release(key, lease);
      return feed([&](TimePoint now) { own_.on_release_result(s, now); });
    }
  }
  lk.lock();
}

}  // namespace romulus::witness
