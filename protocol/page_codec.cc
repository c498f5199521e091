#include "protocol/page_codec.h"

#include <fmt/format.h>

#include <cstring>

#include "protocol/runskip.h"
#include "protocol/xbzrle.h"

namespace romulus::protocol {

size_t max_record_size(CodecId codec) {
  switch (codec) {
    case CodecId::kNone:
      return kPageSize;
    case CodecId::kRunSkip:
      return kRunSkipMaxRecord;
    case CodecId::kXbzrle:
      return kXbzrleMaxRecord;
  }
  return kMaxPageRecord;
}

size_t encode_page_record(CodecId codec, const uint8_t* old, PageView cur, uint8_t* out) {
  switch (codec) {
    case CodecId::kRunSkip:
      return runskip_encode(old, cur, out);
    case CodecId::kXbzrle:
      return xbzrle_encode(old, cur, out);
    case CodecId::kNone:
      break;
  }
  std::memcpy(out, cur.data(), kPageSize);
  return kPageSize;
}

Result<size_t> decode_page_record(CodecId codec, ByteSpan in, MutablePageView page) {
  switch (codec) {
    case CodecId::kRunSkip:
      return runskip_decode(in, page);
    case CodecId::kXbzrle:
      return xbzrle_decode(in, page);
    case CodecId::kNone:
      if (in.size() < kPageSize) {
        return Status::truncated(
            fmt::format("raw page record: needs {} bytes, have {}", kPageSize, in.size()));
      }
      std::memcpy(page.data(), in.data(), kPageSize);
      return kPageSize;
  }
  return Status::corrupt(
      fmt::format("page record: unknown codec {}", static_cast<unsigned>(codec)));
}

bool record_needs_current(CodecId codec, ByteSpan in) {
  switch (codec) {
    case CodecId::kNone:
      return in.size() < kPageSize;
    case CodecId::kRunSkip:
      return !(runskip_is_whole_page(in) && in.size() >= kRunSkipMaxRecord);
    case CodecId::kXbzrle:
      return !(xbzrle_is_whole_page(in) && in.size() >= kXbzrleMaxRecord);
  }
  return true;
}

}  // namespace romulus::protocol
