// Durations and sizes written as an operator types them: "50ms", "2s",
// "250us", "256M". The readers (parse_duration, parse_size) take what an
// operator types on the command line, in a --config file or to `romulus set`;
// the writers (duration_text, size_text) print the CLI's defaults and the
// settings' range errors, so what is printed parses back to the same value.
// Pure functions; any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/status.h"

namespace romulus::common {

// "50ms", "1s", "250us", "2m", "1.5s"; a bare number is milliseconds. The
// error quotes the text: "'banana' is not a duration (try 50ms)".
Result<std::chrono::microseconds> parse_duration(std::string_view text);
// "256M", "64MiB", "1G", "512k"; a bare number is bytes.
Result<uint64_t> parse_size(std::string_view text);

// The largest whole unit: "0", "250us", "1ms", "60s".
inline std::string duration_text(std::chrono::microseconds d) {
  const auto us = d.count();
  if (us == 0) return "0";
  if (us % 1'000'000 == 0) return fmt::format("{}s", us / 1'000'000);
  if (us % 1'000 == 0) return fmt::format("{}ms", us / 1'000);
  return fmt::format("{}us", us);
}

// The largest whole binary unit: "4096" below 1K, "64M", "1G", "1536K".
inline std::string size_text(uint64_t bytes) {
  if (bytes == 0) return "0";
  constexpr const char* kUnits[] = {"T", "G", "M", "K"};
  for (int i = 0; i < 4; ++i) {
    const unsigned shift = 10u * static_cast<unsigned>(4 - i);
    if (bytes % (uint64_t{1} << shift) == 0) return fmt::format("{}{}", bytes >> shift, kUnits[i]);
  }
  return fmt::format("{}", bytes);
}

}  // namespace romulus::common
