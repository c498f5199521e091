// A network address as operators write it: HOST:PORT, with brackets around an
// IPv6 literal ("10.0.0.2:7000", "node-b:7000", "[::1]:7000"). The one parser
// and the one formatter for every address Romulus reads or prints: the CLI's
// options, `romulus set backup`, the witness list, log lines and errors.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace romulus::common {

struct Endpoint {
  std::string host;  // an address or a name, without brackets
  uint16_t port = 0;

  // HOST:PORT, "[HOST]:PORT" when the host holds a ':' (an IPv6 literal).
  std::string to_string() const;

  // Hostile text in, an Endpoint or one line naming the text and the fix out.
  // The port is 1..65535 in decimal digits only; the host is letters,
  // digits and . - _ % only, and ':' only inside brackets (an IPv6 literal).
  static Result<Endpoint> parse(std::string_view text);

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

}  // namespace romulus::common
