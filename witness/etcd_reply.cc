#include "witness/etcd_reply.h"

#include <fmt/format.h>

#include <boost/beast/core/detail/base64.hpp>
#include <boost/json.hpp>
#include <charconv>

namespace romulus::witness::etcd {

namespace json = boost::json;

namespace {

// Parses the body as one JSON object and turns an etcd error reply into a Status.
Result<json::object> parse_object(std::string_view body) {
  if (body.size() > kMaxReplyBytes) {
    return Status::corrupt(
        fmt::format("etcd reply of {} bytes is over {}", body.size(), kMaxReplyBytes));
  }
  json::parse_options opt;
  opt.max_depth = 32;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec, {}, opt);
  if (ec) return Status::corrupt(fmt::format("etcd reply is not JSON: {}", ec.message()));
  json::object* o = v.if_object();
  if (o == nullptr) return Status::corrupt("etcd reply is not a JSON object");
  if (const json::value* err = o->if_contains("error")) {
    std::string what = err->is_string() ? std::string(err->get_string()) : "unknown error";
    if (what.size() > 200) what.resize(200);
    return Status::refused(fmt::format("etcd: {}", what));
  }
  return std::move(*o);
}

// An int64 that the gateway writes as a string; absent means 0.
Result<int64_t> int_field(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr) return int64_t{0};
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() <= INT64_MAX) return static_cast<int64_t>(v->get_uint64());
  if (v->is_string()) {
    const json::string& s = v->get_string();
    int64_t out = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return out;
  }
  return Status::corrupt(fmt::format("etcd reply field '{}' is not an integer", name));
}

Result<std::string> bytes_field(const json::object& o, std::string_view name) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr) return std::string();
  if (!v->is_string())
    return Status::corrupt(fmt::format("etcd reply field '{}' is not a string", name));
  return base64_decode(v->get_string());
}

Result<KeyValue> parse_kv(const json::value& v) {
  const json::object* o = v.if_object();
  if (o == nullptr) return Status::corrupt("etcd reply kv is not an object");
  KeyValue kv;
  ROMULUS_ASSIGN_OR_RETURN(kv.key, bytes_field(*o, "key"));
  ROMULUS_ASSIGN_OR_RETURN(kv.value, bytes_field(*o, "value"));
  ROMULUS_ASSIGN_OR_RETURN(kv.lease, int_field(*o, "lease"));
  ROMULUS_ASSIGN_OR_RETURN(kv.create_revision, int_field(*o, "create_revision"));
  ROMULUS_ASSIGN_OR_RETURN(kv.mod_revision, int_field(*o, "mod_revision"));
  return kv;
}

Result<std::optional<KeyValue>> first_kv(const json::object& o) {
  const json::value* kvs = o.if_contains("kvs");
  if (kvs == nullptr) return std::optional<KeyValue>();
  const json::array* a = kvs->if_array();
  if (a == nullptr) return Status::corrupt("etcd reply kvs is not an array");
  if (a->empty()) return std::optional<KeyValue>();
  ROMULUS_ASSIGN_OR_RETURN(KeyValue kv, parse_kv(a->front()));
  return std::optional<KeyValue>(std::move(kv));
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  namespace b64 = boost::beast::detail::base64;
  std::string out(b64::encoded_size(bytes.size()), '\0');
  out.resize(b64::encode(out.data(), bytes.data(), bytes.size()));
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  namespace b64 = boost::beast::detail::base64;
  if (text.size() % 4 != 0) return Status::corrupt("etcd reply has bad base64 (length)");
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
  std::string out(b64::decoded_size(text.size()), '\0');
  const auto [written, read] = b64::decode(out.data(), text.data(), text.size());
  if (read != text.size() - pad) return Status::corrupt("etcd reply has bad base64");
  out.resize(written);
  return out;
}

Result<GrantReply> parse_grant_reply(std::string_view body) {
  ROMULUS_ASSIGN_OR_RETURN(json::object o, parse_object(body));
  GrantReply r;
  ROMULUS_ASSIGN_OR_RETURN(r.id, int_field(o, "ID"));
  ROMULUS_ASSIGN_OR_RETURN(r.ttl, int_field(o, "TTL"));
  if (r.id == 0 || r.ttl <= 0) return Status::corrupt("etcd granted no lease");
  return r;
}

Result<int64_t> parse_keepalive_reply(std::string_view body) {
  ROMULUS_ASSIGN_OR_RETURN(json::object o, parse_object(body));
  const json::value* result = o.if_contains("result");
  const json::object* inner = result != nullptr ? result->if_object() : &o;
  if (inner == nullptr) return Status::corrupt("etcd keep-alive reply has a bad result");
  if (const json::value* err = inner->if_contains("error"); err != nullptr) {
    return Status::refused("etcd: keep-alive refused");
  }
  ROMULUS_ASSIGN_OR_RETURN(int64_t ttl, int_field(*inner, "TTL"));
  return std::max<int64_t>(ttl, 0);
}

Result<int64_t> parse_time_to_live_reply(std::string_view body) {
  ROMULUS_ASSIGN_OR_RETURN(json::object o, parse_object(body));
  return int_field(o, "TTL");
}

Result<std::optional<KeyValue>> parse_range_reply(std::string_view body) {
  ROMULUS_ASSIGN_OR_RETURN(json::object o, parse_object(body));
  return first_kv(o);
}

Result<TxnReply> parse_txn_reply(std::string_view body) {
  ROMULUS_ASSIGN_OR_RETURN(json::object o, parse_object(body));
  TxnReply r;
  if (const json::value* s = o.if_contains("succeeded")) {
    if (!s->is_bool()) return Status::corrupt("etcd txn reply 'succeeded' is not a bool");
    r.succeeded = s->get_bool();
  }
  const json::value* responses = o.if_contains("responses");
  if (responses == nullptr) return r;
  const json::array* a = responses->if_array();
  if (a == nullptr) return Status::corrupt("etcd txn reply 'responses' is not an array");
  for (const json::value& item : *a) {
    const json::object* io = item.if_object();
    if (io == nullptr) return Status::corrupt("etcd txn response is not an object");
    if (const json::value* rr = io->if_contains("response_range")) {
      const json::object* ro = rr->if_object();
      if (ro == nullptr) return Status::corrupt("etcd txn range response is not an object");
      if (!r.range_kv) {
        ROMULUS_ASSIGN_OR_RETURN(r.range_kv, first_kv(*ro));
      }
    } else if (const json::value* dr = io->if_contains("response_delete_range")) {
      const json::object* d = dr->if_object();
      if (d == nullptr) return Status::corrupt("etcd txn delete response is not an object");
      ROMULUS_ASSIGN_OR_RETURN(int64_t n, int_field(*d, "deleted"));
      if (n > 0) r.deleted = true;
    }
  }
  return r;
}

Status parse_empty_reply(std::string_view body) { return parse_object(body).status(); }

}  // namespace romulus::witness::etcd
