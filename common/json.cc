#include "common/json.h"

#include <fmt/format.h>

namespace romulus::common {

std::string json_error(std::string_view message) {
  json::object o;
  o["ok"] = false;
  o["error"] = message;
  return json::serialize(o);
}

std::string json_ok(json::object fields) {
  json::object o;
  o["ok"] = true;
  for (auto& [k, v] : fields) o[k] = std::move(v);
  return json::serialize(o);
}

Result<json::object> parse_json_object(std::string_view text, std::string_view what) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Status::corrupt(fmt::format("{} is not JSON ({})", what, ec.message()));
  if (!v.is_object()) return Status::corrupt(fmt::format("{} is not a JSON object", what));
  return std::move(v.as_object());
}

double to_ms(std::chrono::microseconds d) { return static_cast<double>(d.count()) / 1000.0; }

}  // namespace romulus::common
