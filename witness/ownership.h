// Ownership: the pure state machine deciding whether ONE node owns its pair.
//
// No threads, no I/O, no clock of its own: time comes in as `now`, requests go
// out as Actions, and their results come back as events. LeaseKeeper
// (witness/lease_keeper.h) is the shell that performs the actions against a
// real witness with the real clock; tests drive it with a fake clock and
// tests/support/fake_witness.h. Not thread-safe: one caller at a time.
//
// The rules (the argument is in docs/design.md, "Ownership: the witness"):
//  1. Release. The node may release guest output, or run as primary, only in
//     kOwner and only before deadline() = (the time the last successful
//     renewal of its lease was SENT) + TTL - safety_margin(TTL). etcd expires a
//     lease no earlier than TTL after it RECEIVED the renewal, which is after
//     it was sent, so the key outlives deadline() at etcd.
//  2. Self-fencing. An owner whose deadline passes becomes kFenced (the node
//     stops output and guest) and keeps renewing. A renewal that succeeds means
//     the lease never expired, so the key cannot have passed to anyone else;
//     the node still re-reads the key (an acquire) and returns to kOwner only
//     if the key is attached to its lease. If the lease is gone, the node must
//     win the key again like anyone else (kCandidate).
//  3. Takeover. A node becomes owner only by winning acquire (the key was
//     absent, i.e. the old owner's lease expired or was released). While the
//     old owner's lease lives, a candidate waits, and reports how long is left.
//  4. Rejoin. A node that finds another owner becomes kFollower and reports
//     that owner (with its replication address): it must become its backup.
//
// States and the legal transitions (checked in one place, transition()):
//
//                          request_ownership()
//        ┌─────────────── kFollower ◄───────────────────────────┐
//        │                    ▲                                 │ verify finds
//        ▼                    │ another owner / stand_by()      │ another owner
//   kCandidate ───────────────┘                                 │
//     │   ▲  ▲                                                  │
//     │   │  └───────────── lease gone ──────────────────┐      │
//     │   └──── lease gone ────┐                         │      │
//     │ won acquire            │     deadline passed     │      │
//     ▼                        │   without a renewal     │      │
//   kOwner ────────────────────┴───────────────────► kFenced ───┘
//     ▲                                                  │
//     └──────────── renewed, key still ours ─────────────┘
//
//   any state but kReleased ── step_down() ──► kReleased (terminal)
//
// Commands are narrower: request_ownership() only from kFollower, stand_by()
// only from kCandidate (owner→candidate happens only when the lease is lost).
// Legal: follower→candidate; candidate→owner, candidate→follower;
// owner→fenced, owner→candidate (lease gone); fenced→owner, fenced→candidate,
// fenced→follower; {follower,candidate,owner,fenced}→released. Anything else
// is a bug: it is logged with both states and refused.
//
// Leases: a node holds a lease only while it wants the key (kCandidate) or has
// it (kOwner, kFenced). A follower only reads the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/fwd.hpp>

#include "common/status.h"
#include "witness/witness.h"

namespace romulus::witness {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

enum class OwnershipState {
  kFollower,   // does not own; observes the key (initial state)
  kCandidate,  // wants the key: holds a lease and tries to acquire
  kOwner,      // holds the key; may release until deadline()
  kFenced,     // held the key but could not renew in time: must not release
  kReleased,   // stepped down; terminal
};

// Stable snake_case names for status --json: "follower", "candidate", "owner",
// "fenced", "released".
std::string_view to_string(OwnershipState s);

// --- The safety margin (Rule 1) ---------------------------------------------
// The node's deadline is computed on its own steady clock, etcd's expiry on
// the etcd leader's. Their rates may differ a little (NTP-disciplined or
// free-running quartz: well under 0.1%); we allow kClockDriftPerMille = 1% of
// the TTL for that. On top, a fixed margin absorbs scheduling: the time between
// may_release() answering true and the bytes actually leaving the node (a
// thread preempted right after the check). That is max(kMinMargin, TTL/10).
// Both are subtracted from TTL; a TTL too small to leave a positive window is
// rejected by the config check (kMinTtl).
inline constexpr std::chrono::milliseconds kMinMargin{100};
inline constexpr int kMarginPerMille = 100;     // TTL/10
inline constexpr int kClockDriftPerMille = 10;  // 1% of TTL
inline constexpr std::chrono::seconds kMinTtl{1};
Duration safety_margin(std::chrono::seconds ttl);

// --- Cadence -----------------------------------------------------------------
// Renew every TTL/3 after the last successful send; after a failure, retry
// every retry_interval(TTL) = max(50 ms, TTL/20), so a few tries fit before the
// deadline. Followers read the key every TTL/3.
Duration renew_interval(std::chrono::seconds ttl);
Duration retry_interval(std::chrono::seconds ttl);
// A candidate whose old owner left evidence that its process is gone (its
// kernel closed the replication link, or it handed the pair over) tries the
// key every kPromptRetry for kPromptWindow, instead of every retry_interval:
// that owner's lease is about to be given up (by its lease guard, or by the
// owner itself: witness/lease_guard.h), and each try is one read at the
// witness. Past the window the candidate waits as before.
inline constexpr std::chrono::milliseconds kPromptRetry{5};
inline constexpr std::chrono::milliseconds kPromptWindow{1000};

struct OwnershipConfig {
  std::string pair;         // the pair's name; the key is owner_key(pair)
  std::string node_id;      // this node's id, stored in the key
  std::string replication;  // HOST:PORT stored in the key
  std::chrono::seconds ttl{kDefaultLeaseTtl};
  // Where illegal transitions and other bugs are reported; stderr if empty.
  std::function<void(const std::string&)> log;
};
Status check_config(const OwnershipConfig& c);

// What the driver should do next, and when.
struct Action {
  enum class Kind {
    kNone,            // nothing to do; call on_tick() again at `at`
    kGrant,           // witness.grant(ttl)
    kKeepAlive,       // witness.keepalive(lease())
    kAcquire,         // witness.acquire(key(), value(), lease())
    kGet,             // witness.get(key())
    kLeaseRemaining,  // witness.lease_remaining(waiting_for()->lease)
    kRelease,         // witness.release(key(), lease())
  };
  Kind kind = Kind::kNone;
  TimePoint at;  // do it at (or after) this time
};
std::string_view to_string(Action::Kind k);

// What a node reports of its ownership, taken at one instant (LeaseKeeper's
// snapshot()): status --json's "witness" object and the lease metrics are both
// written from it, so they never disagree. A plain value; no lock, no clock.
struct OwnershipSnapshot {
  OwnershipState state = OwnershipState::kFollower;
  LeaseId lease = 0;
  std::optional<Owner> owner;         // the holder last seen
  int64_t remaining_ms = 0;           // of our lease by our conservative clock (0 unless owner)
  std::optional<int64_t> waiting_ms;  // candidate: the old owner's lease had this left
  std::string detail;                 // "waiting for the old owner's lease (1200 ms left)"
  std::string witness;                // "etcd://..."
  std::string last_error;             // the last failed witness call, if any

  // Writes the members of status --json's "witness" object into `out`, in
  // this order: "state" (to_string), "lease" (decimal string: ids use all 64
  // bits, more than a JSON double holds), "owner" ({"node", "epoch",
  // "replication", "lease"} or null), "remaining_ms", "waiting_ms" (only
  // while waiting), "detail", "witness", "last_error" (only after an error).
  void write_json(boost::json::object& out) const;
};

// For request_ownership(): "the lease holding the key when I first look".
inline constexpr LeaseId kCurrentHolder = -1;

class Ownership {
 public:
  explicit Ownership(OwnershipConfig config);

  // --- Commands (from the node). Illegal in the current state: an error. ---
  // Want the key. `displacing` is the lease of the owner this node judged lost
  // (a backup taking over); while the key is held by that lease the node waits
  // as candidate. kCurrentHolder: wait out whoever holds the key at the first
  // try (a backup that never managed to read the key). Any other holder makes
  // the node a follower (Rule 4). `prompt`: that owner's process left evidence
  // that it is gone, so its lease is about to be given up: try the key every
  // kPromptRetry for kPromptWindow (a cadence only: the key is still won only
  // once it is absent, Rule 3).
  Status request_ownership(TimePoint now, std::optional<LeaseId> displacing = std::nullopt,
                           bool prompt = false);
  // A candidate gives up wanting the key (its primary turned out to be alive).
  Status stand_by(TimePoint now);
  // Stop owning (or wanting): releases the key if it is ours, revokes the lease.
  Status step_down(TimePoint now);
  // The epoch written into the key at the next acquire.
  void set_epoch(uint64_t epoch) { epoch_ = epoch; }

  // --- Events ---
  // Applies time-driven transitions (owner → fenced at the deadline) and says
  // what to do next. An action whose `at` <= now is now in flight: no other
  // action is returned until its result arrives.
  Action on_tick(TimePoint now);
  // `sent_at`: when the request was sent (before any retry to another endpoint).
  void on_grant_result(TimePoint sent_at, const Result<LeaseGrant>& r, TimePoint now);
  void on_keepalive_result(TimePoint sent_at, const Result<std::chrono::seconds>& r, TimePoint now);
  void on_acquire_result(const Result<AcquireOutcome>& r, TimePoint now);
  void on_get_result(const Result<std::optional<Owner>>& r, TimePoint now);
  void on_lease_remaining_result(const Result<std::chrono::milliseconds>& r, TimePoint now);
  void on_release_result(const Status& s, TimePoint now);

  // --- Queries ---
  OwnershipState state() const { return state_; }
  // Rule 1: true only in kOwner and strictly before deadline().
  bool may_release(TimePoint now) const {
    return state_ == OwnershipState::kOwner && now < deadline_;
  }
  // The conservative end of our lease (meaningful while we hold a lease).
  TimePoint deadline() const { return deadline_; }
  Duration remaining(TimePoint now) const;  // max(0, deadline - now) in kOwner, else 0
  LeaseId lease() const { return lease_; }
  std::chrono::seconds ttl() const { return ttl_; }
  const std::string& key() const { return key_; }
  OwnerValue value() const;
  // The last owner seen at the witness (from get or a lost acquire), if any.
  const std::optional<Owner>& known_owner() const { return known_owner_; }
  // Candidate waiting for the old owner's lease: that owner, and how long its
  // lease had left when last asked.
  const std::optional<Owner>& waiting_for() const { return waiting_for_; }
  std::optional<std::chrono::milliseconds> waiting_left() const { return waiting_left_; }
  // "waiting for the old owner's lease (1200 ms left)", "owner until ...", etc.
  std::string describe(TimePoint now) const;
  const Status& last_error() const { return last_error_; }
  bool release_done() const { return release_done_; }
  // After step_down(): how the release of the key and lease went (OK when
  // there was nothing to release).
  const Status& release_result() const { return release_result_; }

 private:
  // The one place that changes state_: refuses (and logs) illegal transitions.
  Status transition(OwnershipState to, std::string_view why);
  Status refuse(OwnershipState to, std::string_view why) const;  // logs, returns the error
  void renewed(TimePoint sent_at, std::chrono::seconds ttl);
  void lease_lost(std::string_view why);
  bool lease_valid(TimePoint now) const { return lease_ != 0 && now < deadline_; }
  void note_error(const Status& s) { last_error_ = s; }
  void log(const std::string& line) const;

  OwnershipConfig config_;
  std::string key_;
  OwnershipState state_ = OwnershipState::kFollower;
  uint64_t epoch_ = 0;

  LeaseId lease_ = 0;
  std::chrono::seconds ttl_{0};
  TimePoint deadline_{};      // last successful renewal sent + ttl - margin
  TimePoint next_renew_{};    // next keep-alive (or grant)
  TimePoint next_acquire_{};  // next acquire (candidate) / verify (fenced)
  TimePoint next_get_{};      // next read of the key (follower)
  bool verify_ = false;       // fenced: renewed, must check the key is still ours
  bool ask_remaining_ = false;
  std::optional<LeaseId> displacing_;
  TimePoint prompt_until_{};  // candidate: try the key every kPromptRetry until then
  std::optional<Owner> known_owner_;
  std::optional<Owner> waiting_for_;
  std::optional<std::chrono::milliseconds> waiting_left_;
  Action::Kind in_flight_ = Action::Kind::kNone;
  bool release_done_ = false;
  Status release_result_;
  Status last_error_;
};

}  // namespace romulus::witness
