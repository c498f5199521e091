// Fuzz target for the address parsers: common::Endpoint (every ADDR:PORT
// option, `romulus set backup` from the control socket) and etcd::EtcdUrl
// (--witness).
//
// Each must return a value or an error, never crash; whatever parses must be
// written back (to_string) as text that parses to the same value.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/endpoint.h"
#include "witness/etcd_client.h"

using romulus::common::Endpoint;
using romulus::witness::etcd::EtcdUrl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ep = Endpoint::parse(text);
  if (ep.is_ok()) {
    if (ep->port == 0 || ep->host.empty()) __builtin_trap();
    auto again = Endpoint::parse(ep->to_string());
    if (!again.is_ok() || !(*again == *ep)) __builtin_trap();
  }
  auto url = EtcdUrl::parse(text);
  if (url.is_ok()) {
    if (url->endpoints.empty()) __builtin_trap();
    auto again = EtcdUrl::parse(url->to_string());
    if (!again.is_ok() || !(*again == *url)) __builtin_trap();
  }
  return 0;
}
