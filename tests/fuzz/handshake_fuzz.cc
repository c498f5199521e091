// Fuzz target for the handshake parsers (protocol/handshake.h).
//
// The input is parsed as a Hello and as a Reply. Whatever parses must
// re-encode to the bytes it came from and parse again to the same message;
// every prefix of a parsed message must be "need more bytes"; a parsed Hello
// is checked for compatibility against a fixed geometry (must not crash).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "protocol/handshake.h"

using namespace romulus::protocol;

namespace {

template <typename T, typename Parse, typename Encode>
void check(const uint8_t* data, size_t size, Parse parse, Encode encode) {
  auto r = parse(ByteSpan(data, size));
  if (!r.is_ok() || !r->has_value()) return;
  const auto& [msg, used] = **r;
  if (used > size) __builtin_trap();
  const Bytes again = encode(msg);
  if (again.size() != used || std::memcmp(again.data(), data, used) != 0) __builtin_trap();
  for (size_t n = 0; n < used; n += 1 + n / 8) {
    auto partial = parse(ByteSpan(data, n));
    if (!partial.is_ok() || partial->has_value()) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check<Hello>(data, size, parse_hello, encode_hello);
  check<Reply>(data, size, parse_reply, encode_reply);
  auto hello = parse_hello(ByteSpan(data, size));
  if (hello.is_ok() && hello->has_value()) {
    LocalGeometry ours;
    ours.guest_page_count = 65536;
    const romulus::Status s = check_hello_compatible((*hello)->first, ours);
    if (!s.is_ok() && s.code() != romulus::StatusCode::kRefused) __builtin_trap();
  }
  return 0;
}
