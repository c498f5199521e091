// Page geometry shared by every layer, and the codec identifiers carried on
// the wire (docs/protocol.md, "Codecs").
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "common/enum_names.h"

namespace romulus::protocol {

inline constexpr size_t kPageSize = 4096;  // bytes; fixed by the handshake
inline constexpr size_t kWordSize = 4;     // RUN/SKIP word, bytes
inline constexpr size_t kWordsPerPage = kPageSize / kWordSize;

using PageView = std::span<const uint8_t, kPageSize>;
using MutablePageView = std::span<uint8_t, kPageSize>;

// Codec of the page records inside one XC_SAVE_ID_COMPRESSED_DATA chunk.
enum class CodecId : uint8_t {
  kNone = 0,     // each record is the 4096 raw bytes of the page
  kRunSkip = 1,  // marker-based RUN/SKIP words (protocol/runskip.h), the default
  kXbzrle = 2,   // XOR-based zero-run / non-zero-run (protocol/xbzrle.h)
};

// The names of --codec and `set codec`, in the order help texts list them.
inline constexpr EnumName<CodecId> kCodecNames[] = {
    {CodecId::kRunSkip, "runskip"}, {CodecId::kXbzrle, "xbzrle"}, {CodecId::kNone, "none"}};

inline std::string_view codec_name(CodecId c) { return enum_name(kCodecNames, c); }

inline std::optional<CodecId> codec_from_wire(uint8_t v) {
  if (v <= static_cast<uint8_t>(CodecId::kXbzrle)) return static_cast<CodecId>(v);
  return std::nullopt;
}

}  // namespace romulus::protocol
