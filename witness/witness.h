// Witness: the small interface the nodes use to decide who owns a pair.
//
// The witness is an external arbiter (etcd) holding one key per pair,
// "/romulus/<pair>/owner", under a lease. Whoever created the key, and keeps
// its lease alive, owns the pair. This header names exactly the operations the
// ownership state machine needs; EtcdWitness (witness/etcd_witness.h) does them
// against a real etcd, and tests/support/fake_witness.h against a fake clock.
//
// Every call is synchronous, bounded by a deadline, and returns an error value
// (never throws). A Witness is used by one thread at a time (the LeaseKeeper's);
// implementations need not be thread-safe.
//
// The key's value is a small JSON object, OwnerValue, so a node that finds
// another owner knows where to rejoin:
//   {"node":"<node id>","epoch":<epoch>,"replication":"HOST:PORT"}
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace romulus::witness {

using LeaseId = int64_t;  // etcd lease ids are positive; 0 means "no lease"

// What the owner key says about its owner.
struct OwnerValue {
  std::string node;         // node id
  uint64_t epoch = 0;       // last committed (or current) epoch when the key was written
  std::string replication;  // HOST:PORT where this node takes (or sends) checkpoints
  friend bool operator==(const OwnerValue&, const OwnerValue&) = default;
};

// The compact JSON form stored as the key's value.
std::string encode_owner_value(const OwnerValue& v);
// Parses the key's value; hostile input gives an error, never a crash.
Result<OwnerValue> parse_owner_value(std::string_view json);

// The pair's durable-image record, "/romulus/<pair>/image" (no lease: it
// outlives the nodes; docs/design.md, "The durable image"): which node holds
// the newest durable image, and the epoch of the base that made it the newest
// (its first durable checkpoint of a stream). A node writes it before it
// acknowledges anything of that stream from its disk; a node it does not
// name never starts from its own disk without the operator's word.
//   {"node":"<node id>","epoch":<epoch>}
struct ImageRecord {
  std::string node;
  uint64_t epoch = 0;
  friend bool operator==(const ImageRecord&, const ImageRecord&) = default;
};
std::string encode_image_record(const ImageRecord& r);
// Parses the record's value; hostile input gives an error, never a crash.
Result<ImageRecord> parse_image_record(std::string_view json);
// "/romulus/<pair>/image".
std::string image_key(std::string_view pair);

// The current holder of a pair's key.
struct Owner {
  OwnerValue value;
  LeaseId lease = 0;         // the lease the key is attached to
  int64_t mod_revision = 0;  // etcd revision of the last write to the key
  friend bool operator==(const Owner&, const Owner&) = default;
};

// The lease a node asks for unless told otherwise (--lease-ttl): about how
// long a pair waits for an owner that went silent before the other node may
// take over. The one default; every layer above starts from it.
inline constexpr std::chrono::seconds kDefaultLeaseTtl{2};

struct LeaseGrant {
  LeaseId id = 0;
  std::chrono::seconds ttl{0};  // as granted (etcd may raise a small TTL to its minimum)
};

struct AcquireOutcome {
  bool won = false;            // we created the key now
  std::optional<Owner> owner;  // the holder after the attempt (absent only if it vanished)
};

// The owner key of a pair: "/romulus/<pair>/owner".
std::string owner_key(std::string_view pair);

class Witness {
 public:
  virtual ~Witness() = default;

  // A new lease of at least `ttl`.
  virtual Result<LeaseGrant> grant(std::chrono::seconds ttl) = 0;
  // Renews `lease`; returns its TTL from now. 0 means the lease is gone (expired or revoked).
  virtual Result<std::chrono::seconds> keepalive(LeaseId lease) = 0;
  // One transaction: if `key` does not exist, create it with `value` under `lease`
  // (won); otherwise report who holds it.
  virtual Result<AcquireOutcome> acquire(const std::string& key, const OwnerValue& value,
                                         LeaseId lease) = 0;
  // Who holds `key` now (nullopt: nobody).
  virtual Result<std::optional<Owner>> get(const std::string& key) = 0;
  // How long `lease` has left at the witness; <= 0 when it is gone.
  virtual Result<std::chrono::milliseconds> lease_remaining(LeaseId lease) = 0;
  // Deletes `key` only if it is still attached to `lease`, then revokes `lease`.
  virtual Status release(const std::string& key, LeaseId lease) = 0;
  // For messages: "etcd://127.0.0.1:2379,127.0.0.1:22379".
  virtual std::string describe() const = 0;
};

}  // namespace romulus::witness
