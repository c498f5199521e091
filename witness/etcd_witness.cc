#include "witness/etcd_witness.h"

#include <fmt/format.h>

namespace romulus::witness {

namespace {

Result<Owner> to_owner(const etcd::KeyValue& kv) {
  Result<OwnerValue> v = parse_owner_value(kv.value);
  if (!v.is_ok()) return v.status().context(fmt::format("owner key {}", kv.key));
  return Owner{std::move(v).value(), kv.lease, kv.mod_revision};
}

}  // namespace

EtcdWitness::EtcdWitness(std::vector<etcd::Endpoint> endpoints, etcd::EtcdClient::Options options)
    : client_(std::move(endpoints), options) {}

Result<std::unique_ptr<EtcdWitness>> EtcdWitness::open(std::string_view url,
                                                       etcd::EtcdClient::Options options) {
  ROMULUS_ASSIGN_OR_RETURN(auto parsed, etcd::EtcdUrl::parse(url));
  return std::make_unique<EtcdWitness>(std::move(parsed.endpoints), options);
}

Result<LeaseGrant> EtcdWitness::grant(std::chrono::seconds ttl) {
  ROMULUS_ASSIGN_OR_RETURN(etcd::GrantReply g, client_.grant(ttl.count()));
  return LeaseGrant{g.id, std::chrono::seconds(g.ttl)};
}

Result<std::chrono::seconds> EtcdWitness::keepalive(LeaseId lease) {
  ROMULUS_ASSIGN_OR_RETURN(int64_t ttl, client_.keepalive(lease));
  return std::chrono::seconds(ttl);
}

Result<AcquireOutcome> EtcdWitness::acquire(const std::string& key, const OwnerValue& value,
                                            LeaseId lease) {
  ROMULUS_ASSIGN_OR_RETURN(
      etcd::AcquireReply r,
      client_.acquire(key, encode_owner_value(value), lease, guard_ ? &*guard_ : nullptr));
  AcquireOutcome out;
  out.won = r.won;
  if (r.current) {
    ROMULUS_ASSIGN_OR_RETURN(Owner o, to_owner(*r.current));
    out.owner = std::move(o);
  }
  return out;
}

Result<std::optional<Owner>> EtcdWitness::get(const std::string& key) {
  ROMULUS_ASSIGN_OR_RETURN(std::optional<etcd::KeyValue> kv, client_.get(key));
  if (!kv) return std::optional<Owner>();
  ROMULUS_ASSIGN_OR_RETURN(Owner o, to_owner(*kv));
  return std::optional<Owner>(std::move(o));
}

Result<std::chrono::milliseconds> EtcdWitness::lease_remaining(LeaseId lease) {
  ROMULUS_ASSIGN_OR_RETURN(int64_t ttl, client_.time_to_live(lease));
  // etcd answers in whole seconds, rounded down: the lease may live up to 1 s longer.
  return std::chrono::milliseconds(ttl <= 0 ? 0 : ttl * 1000);
}

Status EtcdWitness::release(const std::string& key, LeaseId lease) {
  return client_.release(key, lease).status();
}

std::string EtcdWitness::describe() const { return client_.describe(); }

}  // namespace romulus::witness
