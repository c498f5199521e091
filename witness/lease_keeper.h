// LeaseKeeper: the thin shell that drives one node's Ownership against a real
// witness with the real clock.
//
// It owns a thread that performs Ownership's actions (grant, keep-alive every
// TTL/3 or sooner after a failure, acquire, read the key) one at a time,
// waiting on a condition variable with a deadline between them; commands from
// the node (try_acquire, request_takeover, stand_by, step_down) wake it.
//
// Threads: every public method may be called from any thread. may_release()
// takes no lock: it reads one atomic (the conservative deadline, published
// only while the node owns the key), so the engine can call it on its hot
// path. The change callback runs on the keeper's thread with no lock held; it
// may call back into the LeaseKeeper but should not block for long.
//
// Timing: may_release() turns false exactly at the deadline. The kFenced
// callback comes when the thread next ticks, which may lag the deadline by the
// witness call in progress (at most the client's timeout per endpoint), so
// output must be gated by may_release(), not by the callback alone.
//
// Lifetime: start() once, stop() (or the destructor) joins promptly: it waits
// for at most the witness call in progress (bounded by the client's deadline),
// plus the release if step_down() was called. stop() without step_down() is
// like a crash: the lease simply expires at the witness.
//
// Use from a node (the engine checks may_release() right before each release
// of held output; the callback turns state changes into role changes):
//
//   auto w = EtcdWitness::open(options.witness);          // "etcd://h:p,h:p"
//   if (!w.is_ok()) return w.status();
//   LeaseKeeper keeper(std::move(w).value(),
//                      {.pair = "kv", .node_id = "node-a", .replication = "10.0.0.1:7000"},
//                      [&](const OwnershipChange& c) {
//                        if (c.to == OwnershipState::kFenced) engine.fence();  // stop output,
//                        guest if (c.to == OwnershipState::kFollower && c.owner)
//                          become_backup_of(c.owner->value.replication);
//                      });
//   ROMULUS_RETURN_IF_ERROR(keeper.start());  // one line if etcd is unreachable
//   keeper.try_acquire();                     // primary: want the pair
//   switch (keeper.wait_while_candidate(std::chrono::seconds(10))) {
//     case OwnershipState::kOwner: run_as_primary(); break;
//     case OwnershipState::kFollower: run_as_backup(); break;  // someone else owns it
//     default: /* still waiting: report keeper.snapshot(now).detail */ break;
//   }
//   ... on the hot path:  if (keeper.may_release(Clock::now())) release(epoch_output);
//   ... backup, primary judged lost:  keeper.request_takeover();  activate on kOwner only
//   ... clean shutdown:  keeper.step_down(); keeper.stop();
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "witness/ownership.h"
#include "witness/witness.h"

namespace romulus::witness {

struct LeaseKeeperOptions {
  std::string pair;         // the pair's name (one owner key per pair)
  std::string node_id;      // this node's id
  std::string replication;  // HOST:PORT others use to reach this node for checkpoints
  std::chrono::seconds ttl{kDefaultLeaseTtl};
  std::function<void(const std::string&)> log;  // one line per state change; none if empty
  // Told the lease this node holds whenever it changes (an id once granted;
  // 0 once released, lost or no longer needed), on the keeper's thread with
  // its lock held, before any witness call uses the new lease: the node's
  // lease guard (witness/lease_guard.h) learns of a lease before it can hold
  // the key. Must not block or call into the keeper. None if empty.
  std::function<void(LeaseId)> on_lease;
};

// A state change, as the node sees it.
struct OwnershipChange {
  OwnershipState from;
  OwnershipState to;
  std::optional<Owner> owner;  // the holder last seen (for kFollower: whom to rejoin)
  std::string detail;          // Ownership::describe() after the change
};

class LeaseKeeper {
 public:
  using OnChange = std::function<void(const OwnershipChange&)>;

  LeaseKeeper(std::unique_ptr<Witness> witness, LeaseKeeperOptions options,
              OnChange on_change = {});
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // Checks the options, reads the owner key once (so an unreachable witness is
  // reported here, in one line: "cannot reach the witness at etcd://...: <why>;
  // start etcd or check --witness"), then starts the thread as a follower.
  Status start();
  void stop();

  // Rule 1: true only while this node owns the key, before its conservative deadline.
  bool may_release(Clock::time_point now) const noexcept {
    return now.time_since_epoch().count() < release_until_.load(std::memory_order_acquire);
  }
  OwnershipState state() const;
  // For status --json and the metrics (witness/ownership.h).
  OwnershipSnapshot snapshot(Clock::time_point now) const;

  // Want the key, displacing nobody: a primary at start. If another node owns
  // it, this node becomes a follower (the callback says whom to rejoin).
  Status try_acquire();
  // A backup that judged its primary lost: wait out the last known owner's
  // lease (if it never read the key: the lease of whoever holds it now), then
  // win the key (or find that someone else won it: follower). `prompt`: the
  // primary's process left evidence that it is gone, so its lease is about to
  // be given up: look every kPromptRetry for a while (witness/ownership.h).
  Status request_takeover(bool prompt = false);
  // A candidate gives up (its primary turned out to be alive).
  Status stand_by();
  // Stop owning: may_release() is false when this returns; the key is then
  // released and the lease revoked (in the background, and at stop()).
  Status step_down();
  // The epoch written into the key at the next acquire.
  void set_epoch(uint64_t epoch);
  // After step_down() and stop(): how the release went (Ownership::release_result()).
  Status release_result() const;
  // Waits until the state is not kCandidate, or `timeout`; returns the state.
  OwnershipState wait_while_candidate(std::chrono::milliseconds timeout);

 private:
  void run();
  void perform(std::unique_lock<std::mutex>& lk, const Action& a);
  // After every change to own_: publishes the deadline, queues a change event.
  void after_event_locked(OwnershipState before);
  void deliver_changes(std::unique_lock<std::mutex>& lk);

  const std::unique_ptr<Witness> witness_;
  const LeaseKeeperOptions options_;
  const OnChange on_change_;
  const std::string witness_name_;

  mutable std::mutex mu_;
  std::condition_variable wake_;   // the keeper thread waits here
  std::condition_variable state_;  // wait_while_candidate() waits here
  Ownership own_;
  bool stopping_ = false;
  bool poked_ = false;
  std::vector<OwnershipChange> changes_;
  LeaseId reported_lease_ = 0;                     // the last lease told to options_.on_lease
  std::atomic<int64_t> release_until_{INT64_MIN};  // steady_clock ticks; INT64_MIN: not owner
  std::thread thread_;
};

}  // namespace romulus::witness
