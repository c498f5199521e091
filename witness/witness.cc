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

namespace {

// A record's JSON object (`what` names it in errors): at most 4 KiB, with a
// string "node".
Result<json::object> parse_record(std::string_view text, std::string_view what) {
  constexpr size_t kMaxValue = 4096;
  if (text.size() > kMaxValue) {
    return Status::corrupt(fmt::format("{} of {} bytes is over {}", what, text.size(), kMaxValue));
  }
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Status::corrupt(fmt::format("{} is not JSON: {}", what, ec.message()));
  json::object* o = v.if_object();
  if (o == nullptr) return Status::corrupt(fmt::format("{} is not a JSON object", what));
  const json::value* node = o->if_contains("node");
  if (node == nullptr || !node->is_string()) {
    return Status::corrupt(fmt::format("{} has no node", what));
  }
  return std::move(*o);
}

// Member "epoch": absent is 0; else a non-negative integer.
Result<uint64_t> parse_epoch(const json::object& o, std::string_view what) {
  const json::value* epoch = o.if_contains("epoch");
  if (epoch == nullptr) return uint64_t{0};
  if (epoch->is_uint64()) return epoch->get_uint64();
  if (epoch->is_int64() && epoch->get_int64() >= 0) {
    return static_cast<uint64_t>(epoch->get_int64());
  }
  return Status::corrupt(fmt::format("{} has a bad epoch", what));
}

}  // namespace

std::string image_key(std::string_view pair) { return fmt::format("/romulus/{}/image", pair); }

std::string encode_image_record(const ImageRecord& r) {
  json::object o;
  o["node"] = r.node;
  o["epoch"] = r.epoch;
  return json::serialize(o);
}

Result<ImageRecord> parse_image_record(std::string_view text) {
  ROMULUS_ASSIGN_OR_RETURN(const json::object o, parse_record(text, "image record"));
  ImageRecord out;
  out.node = std::string(o.at("node").get_string());
  ROMULUS_ASSIGN_OR_RETURN(out.epoch, parse_epoch(o, "image record"));
  return out;
}

Result<OwnerValue> parse_owner_value(std::string_view text) {
  ROMULUS_ASSIGN_OR_RETURN(const json::object o, parse_record(text, "owner value"));
  OwnerValue out;
  out.node = std::string(o.at("node").get_string());
  ROMULUS_ASSIGN_OR_RETURN(out.epoch, parse_epoch(o, "owner value"));
  const json::value* repl = o.if_contains("replication");
  if (repl != nullptr) {
    if (!repl->is_string()) return Status::corrupt("owner value has a bad replication address");
    out.replication = std::string(repl->get_string());
  }
  return out;
}

}  // namespace romulus::witness
