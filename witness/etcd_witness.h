// EtcdWitness: the Witness interface over a real etcd (via EtcdClient).
//
// Owns its EtcdClient; one thread at a time (the LeaseKeeper's).
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "witness/etcd_client.h"
#include "witness/witness.h"

namespace romulus::witness {

class EtcdWitness final : public Witness {
 public:
  explicit EtcdWitness(std::vector<etcd::Endpoint> endpoints,
                       etcd::EtcdClient::Options options = {});
  // From the --witness option's text, "etcd://h:p,h:p".
  static Result<std::unique_ptr<EtcdWitness>> open(std::string_view url,
                                                   etcd::EtcdClient::Options options = {});

  Result<LeaseGrant> grant(std::chrono::seconds ttl) override;
  Result<std::chrono::seconds> keepalive(LeaseId lease) override;
  Result<AcquireOutcome> acquire(const std::string& key, const OwnerValue& value,
                                 LeaseId lease) override;
  Result<std::optional<Owner>> get(const std::string& key) override;
  Result<std::chrono::milliseconds> lease_remaining(LeaseId lease) override;
  Status release(const std::string& key, LeaseId lease) override;
  std::string describe() const override;

  etcd::EtcdClient& client() { return client_; }
  // Every acquire from now on also requires the guard (set before the keeper starts).
  void set_acquire_guard(etcd::AcquireGuard guard) { guard_ = std::move(guard); }

 private:
  etcd::EtcdClient client_;
  std::optional<etcd::AcquireGuard> guard_;
};

}  // namespace romulus::witness
