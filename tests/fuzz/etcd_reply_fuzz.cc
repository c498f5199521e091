// Fuzz target for the etcd reply parsers (witness/etcd_reply.h) and the owner
// value parser (witness/witness.h).
//
// The input is fed to every parser as an HTTP body. Each must return a value
// or an error, never crash; a parsed owner value must re-encode and parse back
// to itself; bytes decoded from base64 must
// survive an encode/decode round trip.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "witness/etcd_reply.h"
#include "witness/witness.h"

using namespace romulus::witness;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)etcd::parse_grant_reply(body);
  (void)etcd::parse_keepalive_reply(body);
  (void)etcd::parse_time_to_live_reply(body);
  (void)etcd::parse_range_reply(body);
  (void)etcd::parse_txn_reply(body);
  (void)etcd::parse_empty_reply(body);
  auto owner = parse_owner_value(body);
  if (owner.is_ok()) {
    auto again = parse_owner_value(encode_owner_value(*owner));
    if (!again.is_ok() || !(*again == *owner)) __builtin_trap();
  }
  auto image = parse_image_record(body);
  if (image.is_ok()) {
    auto again = parse_image_record(encode_image_record(*image));
    if (!again.is_ok() || !(*again == *image)) __builtin_trap();
  }
  // Non-canonical base64 (stray low bits before '=') may decode; what it decodes to round-trips.
  auto bytes = etcd::base64_decode(body);
  if (bytes.is_ok()) {
    auto again = etcd::base64_decode(etcd::base64_encode(*bytes));
    if (!again.is_ok() || *again != *bytes) __builtin_trap();
  }
  return 0;
}
