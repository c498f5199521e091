// Pure parsers for etcd v3 JSON-gateway replies (etcd 3.4, /v3/...).
//
// Each function takes the HTTP body as text and returns a typed value or an
// error Status. Replies are hostile input: anything oversized, malformed or of
// the wrong shape is an error, never a crash (tests/fuzz/etcd_reply_fuzz.cc).
// In the gateway's JSON, int64 fields are strings ("TTL":"5"), bytes are
// base64, and fields with zero values are left out. An error reply looks like
// {"error":"etcdserver: requested lease not found","code":5,"message":"..."}.
// No state; callable from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace romulus::witness::etcd {

inline constexpr size_t kMaxReplyBytes = 1 << 20;  // 1 MiB: far above any reply we ask for

struct KeyValue {
  std::string key;
  std::string value;
  int64_t lease = 0;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
};

struct GrantReply {
  int64_t id = 0;
  int64_t ttl = 0;
};

struct TxnReply {
  bool succeeded = false;
  std::optional<KeyValue> range_kv;  // first kv of the first range response, if any
  bool deleted = false;              // a delete_range response deleted something
};

std::string base64_encode(std::string_view bytes);
Result<std::string> base64_decode(std::string_view text);

Result<GrantReply> parse_grant_reply(std::string_view body);
// Keep-alive replies arrive wrapped as {"result":{...}}; TTL absent or 0 = lease gone.
Result<int64_t> parse_keepalive_reply(std::string_view body);
// Remaining seconds; -1 when the lease does not exist.
Result<int64_t> parse_time_to_live_reply(std::string_view body);
// The first kv of a range reply (nullopt: no such key).
Result<std::optional<KeyValue>> parse_range_reply(std::string_view body);
Result<TxnReply> parse_txn_reply(std::string_view body);
// Any reply whose only interest is "not an error" (revoke).
Status parse_empty_reply(std::string_view body);

}  // namespace romulus::witness::etcd
