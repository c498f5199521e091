#include "protocol/device_state_codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "protocol/wire_format.h"
#include "protocol/xbzrle.h"

namespace romulus::protocol {

namespace {

// Block `i` of `state` as a whole page (the last one padded with zeros).
std::array<uint8_t, kPageSize> block(ByteSpan state, size_t i) {
  std::array<uint8_t, kPageSize> b{};
  const size_t at = i * kPageSize;
  std::memcpy(b.data(), state.data() + at, std::min(kPageSize, state.size() - at));
  return b;
}

}  // namespace

Bytes encode_device_state_payload(ByteSpan state, std::optional<ByteSpan> previous) {
  Bytes raw;
  raw.reserve(1 + state.size());
  raw.push_back(kDeviceStateRaw);
  raw.insert(raw.end(), state.begin(), state.end());
  if (!previous || previous->size() != state.size() || state.empty()) return raw;
  Bytes delta;
  delta.push_back(kDeviceStateDelta);
  put_u32(delta, static_cast<uint32_t>(state.size()));
  std::array<uint8_t, kXbzrleMaxRecord> record{};
  const size_t blocks = (state.size() + kPageSize - 1) / kPageSize;
  for (size_t i = 0; i < blocks; ++i) {
    const auto old = block(*previous, i);
    const auto cur = block(state, i);
    const size_t n = xbzrle_encode(old.data(), PageView(cur), record.data());
    delta.insert(delta.end(), record.begin(), record.begin() + static_cast<ptrdiff_t>(n));
    if (delta.size() >= raw.size()) return raw;  // no smaller: raw it is
  }
  return delta;
}

Result<Bytes> decode_device_state_payload(ByteSpan payload, std::optional<ByteSpan> previous) {
  if (payload.empty()) return Status::corrupt("device state: empty payload");
  if (payload[0] == kDeviceStateRaw) return Bytes(payload.begin() + 1, payload.end());
  if (payload[0] != kDeviceStateDelta) {
    return Status::corrupt(fmt::format("device state: unknown encoding 0x{:02x}", payload[0]));
  }
  if (payload.size() < 5) return Status::corrupt("device state: delta without its length");
  const uint32_t length = load_u32(payload.data() + 1);
  if (!previous) {
    return Status::corrupt("device state: a delta, but the stream has no previous state");
  }
  if (previous->size() != length || length == 0 || length > kMaxDeviceState) {
    return Status::corrupt(
        fmt::format("device state: a delta of {} bytes against a previous state of {} bytes",
                    length, previous->size()));
  }
  Bytes out(length);
  ByteSpan in = payload.subspan(5);
  const size_t blocks = (length + kPageSize - 1) / kPageSize;
  for (size_t i = 0; i < blocks; ++i) {
    auto b = block(*previous, i);
    auto used = xbzrle_decode(in, MutablePageView(b));
    if (!used.is_ok()) {
      return Status::corrupt(fmt::format("device state: block {}: {}", i, used.status().message()));
    }
    const size_t at = i * kPageSize;
    const size_t n = std::min(kPageSize, size_t{length} - at);
    // The padding of the last block stays zero: a record that writes there is corrupt.
    if (n < kPageSize && std::any_of(b.begin() + static_cast<ptrdiff_t>(n), b.end(),
                                     [](uint8_t v) { return v != 0; })) {
      return Status::corrupt(fmt::format("device state: block {} writes past the state's end", i));
    }
    std::memcpy(out.data() + at, b.data(), n);
    in = in.subspan(*used);
  }
  if (!in.empty()) {
    return Status::corrupt(fmt::format("device state: {} bytes after the last block", in.size()));
  }
  return out;
}

}  // namespace romulus::protocol
