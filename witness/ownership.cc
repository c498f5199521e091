#include "witness/ownership.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include <boost/json.hpp>

namespace romulus::witness {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// When nothing is due (or a request is in flight), the next tick is asked for
// this far ahead, meaning "not until something happens" (LeaseKeeper caps each
// wait at its own kMaxWait anyway).
constexpr Duration kFar = std::chrono::hours(1);
// retry_interval's floor: with a short TTL, TTL/20 would retry the witness
// faster than a request round trip is worth.
constexpr Duration kMinRetry = milliseconds(50);

bool legal(OwnershipState from, OwnershipState to) {
  using S = OwnershipState;
  switch (from) {
    case S::kFollower:
      return to == S::kCandidate || to == S::kReleased;
    case S::kCandidate:
      return to == S::kOwner || to == S::kFollower || to == S::kReleased;
    case S::kOwner:
      return to == S::kFenced || to == S::kCandidate || to == S::kReleased;
    case S::kFenced:
      return to == S::kOwner || to == S::kCandidate || to == S::kFollower || to == S::kReleased;
    case S::kReleased:
      return false;
  }
  return false;
}

long long ms(Duration d) { return std::chrono::duration_cast<milliseconds>(d).count(); }

}  // namespace

std::string_view to_string(OwnershipState s) {
  switch (s) {
    case OwnershipState::kFollower:
      return "follower";
    case OwnershipState::kCandidate:
      return "candidate";
    case OwnershipState::kOwner:
      return "owner";
    case OwnershipState::kFenced:
      return "fenced";
    case OwnershipState::kReleased:
      return "released";
  }
  return "unknown";
}

std::string_view to_string(Action::Kind k) {
  switch (k) {
    case Action::Kind::kNone:
      return "none";
    case Action::Kind::kGrant:
      return "grant";
    case Action::Kind::kKeepAlive:
      return "keepalive";
    case Action::Kind::kAcquire:
      return "acquire";
    case Action::Kind::kGet:
      return "get";
    case Action::Kind::kLeaseRemaining:
      return "lease_remaining";
    case Action::Kind::kRelease:
      return "release";
  }
  return "unknown";
}

void OwnershipSnapshot::write_json(boost::json::object& o) const {
  namespace json = boost::json;
  o["state"] = to_string(state);
  o["lease"] = std::to_string(lease);
  if (owner) {
    o["owner"] = json::object{{"node", owner->value.node},
                              {"epoch", owner->value.epoch},
                              {"replication", owner->value.replication},
                              {"lease", std::to_string(owner->lease)}};
  } else {
    o["owner"] = nullptr;
  }
  o["remaining_ms"] = remaining_ms;
  if (waiting_ms) o["waiting_ms"] = *waiting_ms;
  o["detail"] = detail;
  o["witness"] = witness;
  if (!last_error.empty()) o["last_error"] = last_error;
}

Duration safety_margin(seconds ttl) {
  const Duration t = std::chrono::duration_cast<Duration>(ttl);  // not whole seconds: no truncation
  const Duration fixed = std::max<Duration>(kMinMargin, t * kMarginPerMille / 1000);
  const Duration drift = t * kClockDriftPerMille / 1000;
  return fixed + drift;
}

Duration renew_interval(seconds ttl) { return std::chrono::duration_cast<Duration>(ttl) / 3; }

Duration retry_interval(seconds ttl) {
  return std::max<Duration>(kMinRetry, std::chrono::duration_cast<Duration>(ttl) / 20);
}

Status check_config(const OwnershipConfig& c) {
  if (c.pair.empty() || c.pair.find('/') != std::string::npos) {
    return Status::invalid_argument(
        fmt::format("pair name '{}' must be non-empty, without '/'", c.pair));
  }
  if (c.node_id.empty()) return Status::invalid_argument("node id must not be empty");
  if (c.ttl < kMinTtl) {
    return Status::invalid_argument(fmt::format(
        "witness lease TTL {} s is below the minimum of {} s", c.ttl.count(), kMinTtl.count()));
  }
  return Status::ok();
}

Ownership::Ownership(OwnershipConfig config)
    : config_(std::move(config)), key_(owner_key(config_.pair)), ttl_(config_.ttl) {}

void Ownership::log(const std::string& line) const {
  if (config_.log) {
    config_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

Status Ownership::refuse(OwnershipState to, std::string_view why) const {
  const std::string msg = fmt::format("ownership: illegal transition {} -> {} refused ({})",
                                      to_string(state_), to_string(to), why);
  log(msg);
  return Status::invalid_argument(msg);
}

Status Ownership::transition(OwnershipState to, std::string_view why) {
  if (!legal(state_, to)) return refuse(to, why);
  state_ = to;
  return Status::ok();
}

OwnerValue Ownership::value() const {
  return OwnerValue{config_.node_id, epoch_, config_.replication};
}

Duration Ownership::remaining(TimePoint now) const {
  if (!may_release(now)) return Duration::zero();
  return deadline_ - now;
}

// --- Commands ------------------------------------------------------------------

Status Ownership::request_ownership(TimePoint now, std::optional<LeaseId> displacing, bool prompt) {
  // Only a follower asks; other states reach kCandidate by events, not by command.
  if (state_ != OwnershipState::kFollower)
    return refuse(OwnershipState::kCandidate, "ownership requested");
  ROMULUS_RETURN_IF_ERROR(transition(OwnershipState::kCandidate, "ownership requested"));
  displacing_ = displacing;
  prompt_until_ = prompt ? now + kPromptWindow : TimePoint{};
  waiting_for_.reset();
  waiting_left_.reset();
  ask_remaining_ = false;
  lease_ = 0;
  deadline_ = {};
  next_renew_ = now;
  next_acquire_ = now;
  return Status::ok();
}

Status Ownership::stand_by(TimePoint now) {
  if (state_ != OwnershipState::kCandidate) return refuse(OwnershipState::kFollower, "stood by");
  ROMULUS_RETURN_IF_ERROR(transition(OwnershipState::kFollower, "stood by"));
  lease_ = 0;  // holds no key; it expires by itself within its TTL
  deadline_ = {};
  waiting_for_.reset();
  waiting_left_.reset();
  next_get_ = now;
  return Status::ok();
}

Status Ownership::step_down(TimePoint /*now*/) {
  ROMULUS_RETURN_IF_ERROR(transition(OwnershipState::kReleased, "stepped down"));
  release_done_ = (lease_ == 0);
  return Status::ok();
}

// --- Ticks ---------------------------------------------------------------------

Action Ownership::on_tick(TimePoint now) {
  if (state_ == OwnershipState::kOwner && now >= deadline_) {
    (void)transition(OwnershipState::kFenced, "lease deadline passed without a renewal");
    verify_ = false;
    next_renew_ = std::min(next_renew_, now);
  }
  if (in_flight_ != Action::Kind::kNone) return {Action::Kind::kNone, now + kFar};

  Action a{Action::Kind::kNone, now + kFar};
  const Action renew{Action::Kind::kKeepAlive, next_renew_};
  switch (state_) {
    case OwnershipState::kFollower:
      a = {Action::Kind::kGet, next_get_};
      break;
    case OwnershipState::kCandidate: {
      if (lease_ == 0) {
        a = {Action::Kind::kGrant, next_renew_};
      } else if (!lease_valid(now)) {
        a = renew;
      } else {
        const Action other = ask_remaining_ ? Action{Action::Kind::kLeaseRemaining, now}
                                            : Action{Action::Kind::kAcquire, next_acquire_};
        a = renew.at <= other.at ? renew : other;
      }
      break;
    }
    case OwnershipState::kOwner:
      a = renew.at < deadline_ ? renew : Action{Action::Kind::kNone, deadline_};
      break;
    case OwnershipState::kFenced:
      a = verify_ ? Action{Action::Kind::kAcquire, next_acquire_} : renew;
      break;
    case OwnershipState::kReleased:
      if (!release_done_) a = {Action::Kind::kRelease, now};
      break;
  }
  if (a.kind != Action::Kind::kNone && a.at <= now) in_flight_ = a.kind;
  return a;
}

// --- Results -------------------------------------------------------------------

void Ownership::renewed(TimePoint sent_at, seconds ttl) {
  ttl_ = ttl;
  deadline_ = std::max(deadline_, sent_at + ttl - safety_margin(ttl));
  next_renew_ = sent_at + renew_interval(ttl);
}

void Ownership::lease_lost(std::string_view why) {
  lease_ = 0;
  deadline_ = {};
  verify_ = false;
  next_renew_ = {};
  if (state_ == OwnershipState::kOwner || state_ == OwnershipState::kFenced) {
    displacing_.reset();
    waiting_for_.reset();
    waiting_left_.reset();
    (void)transition(OwnershipState::kCandidate, why);
  }
}

void Ownership::on_grant_result(TimePoint sent_at, const Result<LeaseGrant>& r, TimePoint now) {
  if (in_flight_ != Action::Kind::kGrant) return;
  in_flight_ = Action::Kind::kNone;
  if (!r.is_ok()) {
    note_error(r.status().context("grant a lease"));
    next_renew_ = now + retry_interval(ttl_);
    return;
  }
  if (r->id == 0 || r->ttl <= seconds(0)) {
    note_error(Status::corrupt("grant a lease: the witness granted no usable lease"));
    next_renew_ = now + retry_interval(ttl_);
    return;
  }
  if (state_ == OwnershipState::kReleased) {
    lease_ = r->id;  // so the release revokes it
    release_done_ = false;
    return;
  }
  if (state_ != OwnershipState::kCandidate) return;  // stood by meanwhile; it expires unused
  lease_ = r->id;
  deadline_ = {};
  renewed(sent_at, r->ttl);
  next_acquire_ = now;
}

void Ownership::on_keepalive_result(TimePoint sent_at, const Result<seconds>& r, TimePoint now) {
  if (in_flight_ != Action::Kind::kKeepAlive) return;
  in_flight_ = Action::Kind::kNone;
  if (lease_ == 0 || state_ == OwnershipState::kFollower || state_ == OwnershipState::kReleased) {
    return;
  }
  if (!r.is_ok()) {
    note_error(r.status().context("renew the lease"));
    next_renew_ = now + retry_interval(ttl_);
    return;
  }
  if (*r <= seconds(0)) {
    note_error(Status::unavailable("renew the lease: the witness says our lease is gone"));
    lease_lost("our lease is gone at the witness");
    next_renew_ = now;
    return;
  }
  renewed(sent_at, *r);
  if (state_ == OwnershipState::kFenced && lease_valid(now)) {
    verify_ = true;  // Rule 2: the lease lived; check the key is still ours before owning again
    next_acquire_ = now;
  }
}

void Ownership::on_acquire_result(const Result<AcquireOutcome>& r, TimePoint now) {
  if (in_flight_ != Action::Kind::kAcquire) return;
  in_flight_ = Action::Kind::kNone;
  if (state_ != OwnershipState::kCandidate && state_ != OwnershipState::kFenced) return;
  if (!r.is_ok()) {
    note_error(r.status().context("acquire the owner key"));
    next_acquire_ = now + retry_interval(ttl_);
    return;
  }
  const std::optional<Owner>& holder = r->owner;
  if (holder) known_owner_ = holder;
  // An earlier acquire that timed out may have landed: a key under our own lease is ours.
  const bool ours = r->won || (holder && lease_ != 0 && holder->lease == lease_);
  if (ours) {
    verify_ = false;
    if (lease_valid(now)) {
      waiting_for_.reset();
      waiting_left_.reset();
      (void)transition(OwnershipState::kOwner, "won the owner key");
    } else {
      next_renew_ = now;  // renew first; acquire again after
      next_acquire_ = now;
    }
    return;
  }
  // While the old owner is known to be gone, look again soon; its lease is
  // about to be given up (kPromptRetry).
  const bool prompt = now < prompt_until_;
  const Duration again = prompt ? Duration(kPromptRetry) : retry_interval(ttl_);
  if (!holder) {  // nobody holds it, yet we did not win: try again soon
    next_acquire_ = now + again;
    return;
  }
  if (state_ == OwnershipState::kCandidate && displacing_ == kCurrentHolder) {
    displacing_ = holder->lease;  // the holder we find is the owner we judged lost
  }
  if (state_ == OwnershipState::kCandidate && displacing_ && holder->lease == *displacing_) {
    waiting_for_ = holder;     // Rule 3: the old owner's lease is still alive
    ask_remaining_ = !prompt;  // prompt: the next try comes before the answer would
    next_acquire_ = now + again;
    return;
  }
  // Rule 4: someone else owns the pair.
  lease_ = 0;
  deadline_ = {};
  verify_ = false;
  waiting_for_.reset();
  waiting_left_.reset();
  next_get_ = now + renew_interval(ttl_);
  (void)transition(OwnershipState::kFollower,
                   fmt::format("the pair is owned by {}", holder->value.node));
}

void Ownership::on_get_result(const Result<std::optional<Owner>>& r, TimePoint now) {
  if (in_flight_ != Action::Kind::kGet) return;
  in_flight_ = Action::Kind::kNone;
  if (state_ != OwnershipState::kFollower) return;
  if (!r.is_ok()) {
    note_error(r.status().context("read the owner key"));
    next_get_ = now + retry_interval(ttl_);
    return;
  }
  known_owner_ = *r;
  next_get_ = now + renew_interval(ttl_);
}

void Ownership::on_lease_remaining_result(const Result<std::chrono::milliseconds>& r,
                                          TimePoint now) {
  if (in_flight_ != Action::Kind::kLeaseRemaining) return;
  in_flight_ = Action::Kind::kNone;
  ask_remaining_ = false;
  if (state_ != OwnershipState::kCandidate) return;
  if (!r.is_ok()) {
    note_error(r.status().context("ask how long the old owner's lease has left"));
    next_acquire_ = now + retry_interval(ttl_);
    return;
  }
  const Duration left = std::max<Duration>(Duration::zero(), *r);
  waiting_left_ = std::chrono::duration_cast<milliseconds>(left);
  // Try again when it should have expired, but at least every retry and at most every renewal.
  next_acquire_ = now + std::clamp<Duration>(left, retry_interval(ttl_), renew_interval(ttl_));
}

void Ownership::on_release_result(const Status& s, TimePoint /*now*/) {
  if (in_flight_ != Action::Kind::kRelease) return;
  in_flight_ = Action::Kind::kNone;
  release_result_ = s.is_ok() ? s : s.context("release the owner key");
  if (!s.is_ok()) note_error(release_result_);
  release_done_ = true;
  lease_ = 0;
}

std::string Ownership::describe(TimePoint now) const {
  switch (state_) {
    case OwnershipState::kFollower:
      if (known_owner_) {
        return fmt::format("following {} (replication {})", known_owner_->value.node,
                           known_owner_->value.replication);
      }
      return "following; the pair has no owner";
    case OwnershipState::kCandidate:
      if (waiting_for_ && now < prompt_until_) {
        return fmt::format(
            "waiting for the old owner's lease: its process left the pair (its link closed), so "
            "its lease guard should give the lease up; trying every {} ms",
            kPromptRetry.count());
      }
      if (waiting_for_) {
        return fmt::format("waiting for the old owner's lease ({} ms left)",
                           waiting_left_ ? waiting_left_->count() : ms(config_.ttl));
      }
      return lease_ == 0 ? "candidate: getting a lease" : "candidate: acquiring the owner key";
    case OwnershipState::kOwner:
      return fmt::format("owner ({} ms of lease left)", ms(remaining(now)));
    case OwnershipState::kFenced:
      return "fenced: lease not renewed in time; output stopped";
    case OwnershipState::kReleased:
      return "released";
  }
  return "unknown";
}

}  // namespace romulus::witness
