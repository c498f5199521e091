// JSON for the control socket and status replies, through Boost.JSON.
//
// Every reply of a node is one JSON object on one line: {"ok":true,...} or
// {"ok":false,"error":"what happened and what to do"}. Pure functions.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "common/status.h"

namespace romulus::common {

namespace json = boost::json;

// {"ok":false,"error":message}
std::string json_error(std::string_view message);
// {"ok":true} followed by the members of `fields`.
std::string json_ok(json::object fields = {});
// Parses text as one JSON object; anything else (including trailing bytes) is
// an error Status naming `what` (e.g. "reply of /run/romulus/primary.sock").
Result<json::object> parse_json_object(std::string_view text, std::string_view what);

// Milliseconds as a JSON number with microsecond resolution.
double to_ms(std::chrono::microseconds d);

}  // namespace romulus::common
