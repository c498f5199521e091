#include "common/units.h"

#include <cctype>
#include <string>

namespace romulus::common {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Result<std::chrono::microseconds> parse_duration(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.'))
    ++pos;
  if (pos == 0)
    return Status::invalid_argument(fmt::format("'{}' is not a duration (try 50ms)", text));
  double value = 0;
  try {
    value = std::stod(std::string(text.substr(0, pos)));
  } catch (...) {
    return Status::invalid_argument(fmt::format("'{}' is not a duration (try 50ms)", text));
  }
  const std::string unit = lower(text.substr(pos));
  double us_per = 0;
  if (unit.empty() || unit == "ms")
    us_per = 1000;
  else if (unit == "us")
    us_per = 1;
  else if (unit == "s")
    us_per = 1e6;
  else if (unit == "m" || unit == "min")
    us_per = 60e6;
  else
    return Status::invalid_argument(
        fmt::format("'{}': unknown unit '{}' (use us, ms, s)", text, unit));
  return std::chrono::microseconds(static_cast<int64_t>(value * us_per));
}

Result<uint64_t> parse_size(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
  if (pos == 0 || pos > 15)
    return Status::invalid_argument(fmt::format("'{}' is not a size (try 256M)", text));
  const uint64_t value = std::stoull(std::string(text.substr(0, pos)));
  std::string unit = lower(text.substr(pos));
  if (unit.size() == 3 && unit[1] == 'i' && unit[2] == 'b') unit = unit.substr(0, 1);
  if (unit.size() == 2 && unit[1] == 'b') unit = unit.substr(0, 1);
  uint64_t mult = 0;
  if (unit.empty() || unit == "b")
    mult = 1;
  else if (unit == "k")
    mult = 1ull << 10;
  else if (unit == "m")
    mult = 1ull << 20;
  else if (unit == "g")
    mult = 1ull << 30;
  else if (unit == "t")
    mult = 1ull << 40;
  else
    return Status::invalid_argument(
        fmt::format("'{}': unknown unit '{}' (use K, M, G)", text, unit));
  return value * mult;
}

}  // namespace romulus::common
