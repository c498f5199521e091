#include "witness/witness.h"

#include <fmt/format.h>

#include <boost/json.hpp>

namespace romulus::witness {

namespace json = boost::json;

std::string owner_key(std::string_view pair) { return fmt::format("/romulus/{}/owner", pair); }

std::string encode_owner_value(const OwnerValue& v) {
  json::object o;
  o["node"] = v.node;
  o["epoch"] = v.epoch;
  o["replication"] = v.replication;
  return json::serialize(o);
}

Result<OwnerValue> parse_owner_value(std::string_view text) {
  constexpr size_t kMaxValue = 4096;
  if (text.size() > kMaxValue) {
    return Status::corrupt(
        fmt::format("owner value of {} bytes is over {}", text.size(), kMaxValue));
  }
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Status::corrupt(fmt::format("owner value is not JSON: {}", ec.message()));
  const json::object* o = v.if_object();
  if (o == nullptr) return Status::corrupt("owner value is not a JSON object");
  OwnerValue out;
  const json::value* node = o->if_contains("node");
  const json::value* epoch = o->if_contains("epoch");
  const json::value* repl = o->if_contains("replication");
  if (node == nullptr || !node->is_string()) return Status::corrupt("owner value has no node");
  out.node = std::string(node->get_string());
  if (epoch != nullptr) {
    if (epoch->is_uint64()) {
      out.epoch = epoch->get_uint64();
    } else if (epoch->is_int64() && epoch->get_int64() >= 0) {
      out.epoch = static_cast<uint64_t>(epoch->get_int64());
    } else {
      return Status::corrupt("owner value has a bad epoch");
    }
  }
  if (repl != nullptr) {
    if (!repl->is_string()) return Status::corrupt("owner value has a bad replication address");
    out.replication = std::string(repl->get_string());
  }
  return out;
}

}  // namespace romulus::witness
