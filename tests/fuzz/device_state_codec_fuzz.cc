// Fuzz target for the DEVICE_STATE payload decoder (protocol/device_state_codec.h).
//
// Input: byte 0 selects the previous state (bit 0: none; else 1..3 KiB of a
// fixed pattern, or 5,000 bytes), the rest is the payload. A decoded state never
// exceeds the previous one's length for a delta; a payload the encoder makes from
// the decoded state decodes back to it.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "protocol/device_state_codec.h"
#include "protocol/wire_format.h"

using namespace romulus;
using namespace romulus::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<uint8_t> prev((data[0] & 6) == 6 ? 5000 : 1024 * ((data[0] >> 1) & 3) + 1);
  for (size_t i = 0; i < prev.size(); ++i) prev[i] = static_cast<uint8_t>(i * 31);
  std::optional<ByteSpan> previous;
  if ((data[0] & 1) == 0) previous = ByteSpan(prev);
  auto out = decode_device_state_payload(ByteSpan(data + 1, size - 1), previous);
  if (!out.is_ok()) return 0;
  if (data[1 % size] == kDeviceStateDelta && size > 1 && out->size() != prev.size()) {
    __builtin_trap();
  }
  if (out->size() > kMaxDeviceState) __builtin_trap();
  const Bytes again = encode_device_state_payload(*out, previous);
  auto back = decode_device_state_payload(again, previous);
  if (!back.is_ok() || *back != *out) __builtin_trap();
  return 0;
}
