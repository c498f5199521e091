// EtcdClient: a small synchronous client for etcd's v3 JSON gateway (etcd 3.4).
//
// HTTP/1.1 over TCP, or over mutual TLS with Options::tls (`etcds://`: the
// client shows its certificate and checks etcd's against the CA and the
// endpoint's address or name), with Boost.Beast on a private io_context: every request runs
// under a deadline (Options::timeout per endpoint attempt), so no call can
// hang; a call tries each endpoint in turn, starting with the one that last
// answered, and returns within about timeout x endpoints. The connection to
// the endpoint that answered is kept open and reused (HTTP keep-alive).
// Replies are parsed by the pure functions of witness/etcd_reply.h. Give IP
// addresses: a host name goes through the system resolver, whose own timeouts
// can outlast the deadline.
//
// Thread-safety: one thread at a time (it owns a socket). Movable-free: hold it
// by value or unique_ptr. Errors are Status values; no exception escapes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/endpoint.h"
#include "common/status.h"
#include "common/tls.h"
#include "witness/etcd_reply.h"

namespace romulus::witness::etcd {

using common::Endpoint;

// The witness as operators name it (--witness): etcd://HOST:PORT[,HOST:PORT...],
// or etcds:// for mutual TLS; each endpoint as common::Endpoint writes it
// ("[::1]:2379" for an IPv6 literal).
struct EtcdUrl {
  std::vector<Endpoint> endpoints;
  bool tls = false;

  // Hostile text in: the scheme is required, every endpoint must parse, and
  // the list may not be empty or end with a comma.
  static Result<EtcdUrl> parse(std::string_view text);
  std::string to_string() const;
  friend bool operator==(const EtcdUrl&, const EtcdUrl&) = default;
};

struct AcquireReply {
  bool won = false;
  std::optional<KeyValue> current;  // the key as it is after the txn (ours if won)
  bool blocked = false;             // the key was free, but the guard forbade taking it
};

// A key that must be absent (or hold exactly `allowed_value`) for an acquire
// to win: the pair's "unprotected" marker (docs/design.md, "Ownership").
struct AcquireGuard {
  std::string key;
  std::string allowed_value;
};

class EtcdClient {
 public:
  struct Options {
    std::chrono::milliseconds timeout{500};  // per endpoint attempt
    // Mutual TLS with this identity (its peer name is ignored: each
    // endpoint's certificate must carry the endpoint's host); nullptr: HTTP.
    std::shared_ptr<common::TlsIdentity> tls;
  };

  explicit EtcdClient(std::vector<Endpoint> endpoints);
  EtcdClient(std::vector<Endpoint> endpoints, Options options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  // "etcd://h:p,h:p" ("etcds://" with TLS), for log lines and errors.
  std::string describe() const;
  // How many TCP connections this client has opened (keep-alive reuse keeps it low).
  size_t connections_opened() const { return connections_opened_; }

  Result<GrantReply> grant(int64_t ttl_seconds);
  // Remaining TTL in seconds; 0 when the lease is gone.
  Result<int64_t> keepalive(int64_t lease);
  // Revoking a lease that is already gone is not an error.
  Status revoke(int64_t lease);
  // Remaining seconds; -1 when the lease does not exist.
  Result<int64_t> time_to_live(int64_t lease);
  Result<std::optional<KeyValue>> get(std::string_view key);
  // if create_revision(key) == 0 then put(key, value, lease) else range(key).
  Result<AcquireReply> acquire(std::string_view key, std::string_view value, int64_t lease,
                               const AcquireGuard* guard = nullptr);
  // if lease(owner_key) == lease then put(key, value), without a lease (it
  // outlives this node's). True if it was put.
  Result<bool> put_if_owner(std::string_view key, std::string_view value,
                            std::string_view owner_key, int64_t lease);
  // if value(key) == value then delete(key). True if deleted.
  Result<bool> delete_if_value(std::string_view key, std::string_view value);
  // if lease(key) == lease then delete(key); then revoke(lease). True if the key was deleted.
  Result<bool> release(std::string_view key, int64_t lease);
  // Writes `key` without a lease (it outlives this node), whatever it held.
  Status put(std::string_view key, std::string_view value);
  // Deletes `key` whatever holds it (tests and operators).
  Status remove(std::string_view key);

  // POSTs `body` to `path` and returns the reply body (any HTTP status: the
  // gateway reports errors in a JSON body).
  Result<std::string> post(std::string_view path, const std::string& body);

 private:
  class Connection;
  Result<std::string> post_once(size_t endpoint, std::string_view path, const std::string& body);

  std::vector<Endpoint> endpoints_;
  Options options_;
  size_t current_ = 0;  // the endpoint that answered last
  size_t connections_opened_ = 0;
  std::unique_ptr<Connection> conn_;
};

}  // namespace romulus::witness::etcd
