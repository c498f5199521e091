#include "common/endpoint.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

namespace romulus::common {

std::string Endpoint::to_string() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

Result<Endpoint> Endpoint::parse(std::string_view text) {
  const auto not_an_endpoint = [&] {
    return Status::invalid_argument(
        fmt::format("'{}' is not ADDR:PORT (e.g. 127.0.0.1:7000, [::1]:7000)", text));
  };
  Endpoint ep;
  std::string_view port;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return not_an_endpoint();
    ep.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return not_an_endpoint();
    ep.host = std::string(text.substr(0, colon));
    // "::1:7000": a bare IPv6 literal is ambiguous; it must be written [::1]:7000.
    if (ep.host.find(':') != std::string::npos) return not_an_endpoint();
    port = text.substr(colon + 1);
  }
  // An address or a DNS name (an IPv6 zone after '%'): nothing else, so
  // that what is written back parses to the same endpoint.
  const auto host_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
           c == ':' || c == '%';
  };
  if (ep.host.empty() || !std::all_of(ep.host.begin(), ep.host.end(), host_char))
    return not_an_endpoint();
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    return Status::invalid_argument(fmt::format("'{}': port must be 1..65535", text));
  }
  ep.port = static_cast<uint16_t>(value);
  return ep;
}

}  // namespace romulus::common
