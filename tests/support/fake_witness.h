// FakeWitness: an in-memory Witness whose leases expire by a fake clock.
//
// Models etcd's rules: a lease expires `ttl` after its last grant or renewal
// was applied; when it expires, keys attached to it are deleted; acquire is
// create-if-absent in one step; release deletes only a key attached to the
// given lease. It can be made unreachable (every call fails, nothing applied)
// or slow (each call advances the fake clock by `latency`, half before it is
// applied and half after). Header-only; single-threaded, like the tests that use it.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "witness/witness.h"

namespace romulus::testing {

struct FakeClock {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1000)};
  void advance(std::chrono::steady_clock::duration d) { now += d; }
};

class FakeWitness final : public witness::Witness {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit FakeWitness(FakeClock& clock) : clock_(clock) {}

  void set_unreachable(bool u) { unreachable_ = u; }
  void set_latency(std::chrono::steady_clock::duration d) { latency_ = d; }

  // Test inspection.
  std::optional<TimePoint> expiry(witness::LeaseId lease) {
    expire();
    auto it = leases_.find(lease);
    if (it == leases_.end()) return std::nullopt;
    return it->second.expiry;
  }
  std::optional<witness::Owner> holder(const std::string& key) {
    expire();
    auto it = keys_.find(key);
    if (it == keys_.end()) return std::nullopt;
    return it->second;
  }
  // Simulates an operator (or a bug) deleting the key.
  void erase_key(const std::string& key) { keys_.erase(key); }

  Result<witness::LeaseGrant> grant(std::chrono::seconds ttl) override {
    ROMULUS_RETURN_IF_ERROR(begin());
    const witness::LeaseId id = next_id_++;
    leases_[id] = {clock_.now + ttl, ttl};
    end();
    return witness::LeaseGrant{id, ttl};
  }
  Result<std::chrono::seconds> keepalive(witness::LeaseId lease) override {
    ROMULUS_RETURN_IF_ERROR(begin());
    auto it = leases_.find(lease);
    std::chrono::seconds ttl{0};
    if (it != leases_.end()) {
      it->second.expiry = clock_.now + it->second.ttl;
      ttl = it->second.ttl;
    }
    end();
    return ttl;
  }
  Result<witness::AcquireOutcome> acquire(const std::string& key, const witness::OwnerValue& value,
                                          witness::LeaseId lease) override {
    ROMULUS_RETURN_IF_ERROR(begin());
    witness::AcquireOutcome out;
    auto it = keys_.find(key);
    if (it == keys_.end()) {
      if (leases_.count(lease) == 0) {
        end();
        return Status::refused("etcd: etcdserver: requested lease not found");
      }
      it = keys_.emplace(key, witness::Owner{value, lease, ++revision_}).first;
      out.won = true;
    }
    out.owner = it->second;
    end();
    return out;
  }
  Result<std::optional<witness::Owner>> get(const std::string& key) override {
    ROMULUS_RETURN_IF_ERROR(begin());
    auto it = keys_.find(key);
    std::optional<witness::Owner> out;
    if (it != keys_.end()) out = it->second;
    end();
    return out;
  }
  Result<std::chrono::milliseconds> lease_remaining(witness::LeaseId lease) override {
    ROMULUS_RETURN_IF_ERROR(begin());
    auto it = leases_.find(lease);
    std::chrono::milliseconds left{0};
    if (it != leases_.end()) {
      left = std::chrono::duration_cast<std::chrono::milliseconds>(it->second.expiry - clock_.now);
    }
    end();
    return left;
  }
  Status release(const std::string& key, witness::LeaseId lease) override {
    ROMULUS_RETURN_IF_ERROR(begin());
    auto it = keys_.find(key);
    if (it != keys_.end() && it->second.lease == lease) keys_.erase(it);
    revoke(lease);
    end();
    return Status::ok();
  }
  std::string describe() const override { return "fake://witness"; }

 private:
  struct Lease {
    TimePoint expiry;
    std::chrono::seconds ttl;
  };

  Status begin() {
    if (unreachable_) return Status::unavailable("fake witness unreachable");
    clock_.advance(latency_ / 2);
    expire();
    return Status::ok();
  }
  void end() { clock_.advance(latency_ - latency_ / 2); }

  void revoke(witness::LeaseId lease) {
    leases_.erase(lease);
    for (auto it = keys_.begin(); it != keys_.end();) {
      it = it->second.lease == lease ? keys_.erase(it) : std::next(it);
    }
  }
  void expire() {
    for (auto it = leases_.begin(); it != leases_.end();) {
      if (it->second.expiry <= clock_.now) {
        const witness::LeaseId id = it->first;
        it = leases_.erase(it);
        revoke(id);
      } else {
        ++it;
      }
    }
  }

  FakeClock& clock_;
  bool unreachable_ = false;
  std::chrono::steady_clock::duration latency_{0};
  std::map<witness::LeaseId, Lease> leases_;
  std::map<std::string, witness::Owner> keys_;
  witness::LeaseId next_id_ = 1000;
  int64_t revision_ = 1;
};

// A link to a witness that the test can cut: while `cut`, every call fails as
// unreachable; otherwise it goes to `target` (which must outlive the link).
class CuttableLink final : public witness::Witness {
 public:
  explicit CuttableLink(witness::Witness& target) : w_(target) {}
  std::atomic<bool> cut{false};

  Result<witness::LeaseGrant> grant(std::chrono::seconds ttl) override {
    if (cut) return down();
    return w_.grant(ttl);
  }
  Result<std::chrono::seconds> keepalive(witness::LeaseId l) override {
    if (cut) return down();
    return w_.keepalive(l);
  }
  Result<witness::AcquireOutcome> acquire(const std::string& k, const witness::OwnerValue& v,
                                          witness::LeaseId l) override {
    if (cut) return down();
    return w_.acquire(k, v, l);
  }
  Result<std::optional<witness::Owner>> get(const std::string& k) override {
    if (cut) return down();
    return w_.get(k);
  }
  Result<std::chrono::milliseconds> lease_remaining(witness::LeaseId l) override {
    if (cut) return down();
    return w_.lease_remaining(l);
  }
  Status release(const std::string& k, witness::LeaseId l) override {
    if (cut) return down();
    return w_.release(k, l);
  }
  std::string describe() const override { return w_.describe(); }

 private:
  static Status down() { return Status::unavailable("link cut by the test"); }
  witness::Witness& w_;
};

}  // namespace romulus::testing
