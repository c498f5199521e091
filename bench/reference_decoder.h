// A plain RUN/SKIP decoder for comparison: one pass over the record, each
// marker checked and applied at once, each RUN copied with memcpy. This is
// how QEMU's xbzrle_decode_buffer is shaped (written here from the algorithm
// for the RUN/SKIP grammar of docs/protocol.md, not taken from QEMU). It is
// the speed bar for protocol/runskip.cc's decoder, which must be at least as
// fast while also leaving the page unchanged on a malformed record; this one
// may leave a malformed record half applied, so it is for benchmarks only.
//
// Pure function; safe from any thread.
#pragma once

#include <cstring>

#include "protocol/runskip.h"

namespace romulus::bench {

// Not inlined, like the decoder it is compared with (a call per record).
[[gnu::noinline]] inline Result<size_t> reference_runskip_decode(protocol::ByteSpan in,
                                                                 protocol::MutablePageView page) {
  using namespace romulus::protocol;
  const size_t size = in.size();
  if (size == 0) return Status::truncated("empty record");
  if (in[0] == kRunSkipWholePage) {
    if (size < kRunSkipMaxRecord) return Status::truncated("short whole page");
    std::memcpy(page.data(), in.data() + 1, kPageSize);
    return kRunSkipMaxRecord;
  }
  size_t pos = 0;
  size_t off = 0;  // byte offset in the page
  while (off < kPageSize) {
    if (pos >= size) return Status::truncated("record ends early");
    const uint8_t marker = in[pos++];
    if (marker == kRunSkipEnd) break;
    if (marker == kRunSkipWholePage) return Status::corrupt("0x80 inside a record");
    const size_t len = static_cast<size_t>(marker & 0x7f) * kWordSize;
    if (len > kPageSize - off) return Status::corrupt("marker past the page");
    if ((marker & kRunSkipSkipBit) == 0) {
      if (len > size - pos) return Status::truncated("RUN past the input");
      std::memcpy(page.data() + off, in.data() + pos, len);
      pos += len;
    }
    off += len;
  }
  return pos;
}

}  // namespace romulus::bench
