#include "protocol/xbzrle.h"

#include <fmt/format.h>

#include <cstring>

#include "protocol/page_compare.h"

namespace romulus::protocol {
namespace {

size_t encode_whole_page(PageView cur, uint8_t* out) {
  out[0] = kXbzrleWholePage;
  std::memcpy(out + 1, cur.data(), kPageSize);
  return kXbzrleMaxRecord;
}

// Reads one varint of the delta at d[*pos], d.size() being the declared L.
// `base` is the delta's offset in the record, for messages.
Status read_delta_varint(ByteSpan d, size_t base, size_t* pos, uint64_t* v, const char* what) {
  const int n = load_varint(d.data() + *pos, d.data() + d.size(), v);
  if (n == 0) {
    return Status::corrupt(fmt::format(
        "xbzrle record: delta ends inside the {} varint at offset {}", what, base + *pos));
  }
  if (n < 0 || *v > kPageSize) {
    return Status::corrupt(
        fmt::format("xbzrle record: {} at offset {} exceeds {}", what, base + *pos, kPageSize));
  }
  if (static_cast<size_t>(n) != varint_length(*v)) {
    return Status::corrupt(
        fmt::format("xbzrle record: non-minimal {} varint at offset {}", what, base + *pos));
  }
  *pos += static_cast<size_t>(n);
  return Status::ok();
}

}  // namespace

size_t xbzrle_encode(const uint8_t* old, PageView cur, uint8_t* out) {
  if (old == nullptr) return encode_whole_page(cur, out);
  ByteDiffMap map;
  if (!diff_bytes(old, cur.data(), &map)) {
    out[0] = kXbzrleUnchanged;
    return 1;
  }
  // The delta is written at out + 3 (room for a 2-byte L) and moved down if L
  // turns out to need one byte.
  uint8_t* const data = out + 3;
  size_t len = 0;
  size_t covered = 0;  // page bytes described by the pairs written so far
  bool open = false;   // a pair is being grown: zrun, then [run_start, run_end)
  size_t zrun = 0, run_start = 0, run_end = 0;

  auto flush = [&]() -> bool {
    const size_t n = run_end - run_start;
    const size_t cost = varint_length(zrun) + varint_length(n) + n;
    if (len + cost > kXbzrleMaxDelta) return false;
    len += store_varint(data + len, zrun);
    len += store_varint(data + len, n);
    std::memcpy(data + len, cur.data() + run_start, n);
    len += n;
    covered = run_end;
    return true;
  };

  size_t p = 0;
  while (true) {
    const size_t s = find_next_bit(map.data(), kPageSize, p, true);
    if (s == kPageSize) break;
    const size_t e = find_next_bit(map.data(), kPageSize, s, false);
    p = e;
    if (open) {
      const size_t gap = s - run_end;
      if (gap <= 2) {
        const size_t a = run_end - run_start;
        const size_t b = e - s;
        const size_t merged = varint_length(a + gap + b) + a + gap + b;
        const size_t separate = varint_length(a) + a + varint_length(gap) + varint_length(b) + b;
        if (merged < separate) {
          run_end = e;
          continue;
        }
      }
      if (!flush()) return encode_whole_page(cur, out);
    }
    open = true;
    zrun = s - covered;
    run_start = s;
    run_end = e;
  }
  if (open && !flush()) return encode_whole_page(cur, out);

  out[0] = kXbzrleDelta;
  const size_t vl = store_varint(out + 1, len);
  if (vl == 1) std::memmove(out + 2, data, len);
  return 1 + vl + len;
}

Result<size_t> xbzrle_decode(ByteSpan in, MutablePageView page) {
  if (in.empty()) return Status::truncated("xbzrle record: no bytes at offset 0");
  switch (in[0]) {
    case kXbzrleUnchanged:
      return size_t{1};
    case kXbzrleWholePage:
      if (in.size() < kXbzrleMaxRecord) {
        return Status::truncated(
            fmt::format("xbzrle record: whole-page record at offset 0 needs {} bytes, have {}",
                        kXbzrleMaxRecord, in.size()));
      }
      std::memcpy(page.data(), in.data() + 1, kPageSize);
      return kXbzrleMaxRecord;
    case kXbzrleDelta:
      break;
    default:
      return Status::corrupt(fmt::format("xbzrle record: unknown tag 0x{:02x} at offset 0", in[0]));
  }

  uint64_t len = 0;
  const int vl = load_varint(in.data() + 1, in.data() + in.size(), &len);
  if (vl == 0) return Status::truncated("xbzrle record: input ends inside the length at offset 1");
  if (vl < 0 || len > kXbzrleMaxDelta || len == 0) {
    return Status::corrupt(
        fmt::format("xbzrle record: delta length at offset 1 must be 1..{}", kXbzrleMaxDelta));
  }
  if (static_cast<size_t>(vl) != varint_length(len)) {
    return Status::corrupt("xbzrle record: non-minimal length varint at offset 1");
  }
  const size_t base = 1 + static_cast<size_t>(vl);
  if (in.size() - base < len) {
    return Status::truncated(fmt::format(
        "xbzrle record: delta at offset {} needs {} bytes, have {}", base, len, in.size() - base));
  }
  const ByteSpan d = in.subspan(base, len);

  // Pass 1: validate, so that an error leaves `page` unchanged.
  size_t pos = 0;
  size_t offset = 0;  // in the page
  while (pos < d.size()) {
    uint64_t zrun = 0, nzrun = 0;
    const size_t pair_at = base + pos;
    ROMULUS_RETURN_IF_ERROR(read_delta_varint(d, base, &pos, &zrun, "zero run"));
    if (zrun == 0 && pair_at != base) {
      return Status::corrupt(fmt::format(
          "xbzrle record: empty zero run at offset {} (only the first pair may have one)",
          pair_at));
    }
    if (zrun > kPageSize - offset) {
      return Status::corrupt(
          fmt::format("xbzrle record: zero run at offset {} passes the end of the page", pair_at));
    }
    offset += zrun;
    const size_t nz_at = base + pos;
    ROMULUS_RETURN_IF_ERROR(read_delta_varint(d, base, &pos, &nzrun, "non-zero run"));
    if (nzrun == 0) {
      return Status::corrupt(fmt::format("xbzrle record: empty non-zero run at offset {}", nz_at));
    }
    if (nzrun > kPageSize - offset) {
      return Status::corrupt(fmt::format(
          "xbzrle record: non-zero run at offset {} passes the end of the page", nz_at));
    }
    if (nzrun > d.size() - pos) {
      return Status::corrupt(
          fmt::format("xbzrle record: non-zero run of {} bytes at offset {} passes the delta's end",
                      nzrun, nz_at));
    }
    pos += nzrun;
    offset += nzrun;
  }

  // Pass 2: apply.
  pos = 0;
  offset = 0;
  while (pos < d.size()) {
    uint64_t zrun = 0, nzrun = 0;
    pos += static_cast<size_t>(load_varint(d.data() + pos, d.data() + d.size(), &zrun));
    pos += static_cast<size_t>(load_varint(d.data() + pos, d.data() + d.size(), &nzrun));
    offset += zrun;
    std::memcpy(page.data() + offset, d.data() + pos, nzrun);
    pos += nzrun;
    offset += nzrun;
  }
  return base + len;
}

}  // namespace romulus::protocol
