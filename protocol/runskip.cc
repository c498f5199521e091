#include "protocol/runskip.h"

#include <fmt/format.h>

#include <cstring>

#include "protocol/page_compare.h"

namespace romulus::protocol {
namespace {

size_t encode_whole_page(PageView cur, uint8_t* out) {
  out[0] = kRunSkipWholePage;
  std::memcpy(out + 1, cur.data(), kPageSize);
  return kRunSkipMaxRecord;
}

// Copies n bytes, n a non-zero multiple of 4, with fixed-size (inlined) moves:
// 16-byte blocks and a final, possibly overlapping, block. Touches exactly
// [dst, dst + n) and [src, src + n). A variable-size memcpy call per short RUN
// dominated the cost of dense pages.
inline void copy_words(uint8_t* dst, const uint8_t* src, size_t n) {
  if (n >= 16) {
    for (size_t i = 0; i + 16 <= n; i += 16) std::memcpy(dst + i, src + i, 16);
    std::memcpy(dst + n - 16, src + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(dst, src, 8);
    std::memcpy(dst + n - 8, src + n - 8, 8);
  } else {
    std::memcpy(dst, src, 4);
  }
}

size_t markers_for(size_t words) { return (words + kRunSkipMaxRun - 1) / kRunSkipMaxRun; }

}  // namespace

size_t runskip_encode(const uint8_t* old, PageView cur, uint8_t* out) {
  if (old == nullptr) return encode_whole_page(cur, out);
  WordDiffMap map;
  if (!diff_words(old, cur.data(), &map)) {
    out[0] = kRunSkipEnd;
    return 1;
  }
  // A delta is sent only if it is at most kRunSkipDeltaBudget bytes.
  constexpr size_t kBudget = kRunSkipDeltaBudget;
  // The changed words' data alone bounds the delta from below: a dense page
  // goes whole without walking its runs.
  size_t changed = 0;
  for (const uint64_t m : map) changed += static_cast<size_t>(__builtin_popcountll(m));
  if (changed * kWordSize > kBudget) return encode_whole_page(cur, out);
  size_t pos = 0;
  size_t word = 0;
  while (true) {
    const size_t start = find_next_bit(map.data(), kWordsPerPage, word, true);
    if (start == kWordsPerPage) {
      if (word < kWordsPerPage) {
        if (pos + 1 > kBudget) return encode_whole_page(cur, out);
        out[pos++] = kRunSkipEnd;
      }
      return pos;
    }
    const size_t end = find_next_bit(map.data(), kWordsPerPage, start, false);
    const size_t gap = start - word;
    const size_t run = end - start;
    if (pos + markers_for(gap) + markers_for(run) + run * kWordSize > kBudget) {
      return encode_whole_page(cur, out);
    }
    if (gap > 0) {
      const size_t full = gap / kRunSkipMaxRun;  // SKIP 127 markers are 0xFF
      std::memset(out + pos, 0xFF, full);
      pos += full;
      if (gap % kRunSkipMaxRun != 0) {
        out[pos++] = static_cast<uint8_t>(kRunSkipSkipBit | (gap % kRunSkipMaxRun));
      }
    }
    for (size_t w = start; w < end;) {
      const size_t n = end - w < kRunSkipMaxRun ? end - w : kRunSkipMaxRun;
      out[pos++] = static_cast<uint8_t>(n);
      copy_words(out + pos, cur.data() + w * kWordSize, n * kWordSize);
      pos += n * kWordSize;
      w += n;
    }
    word = end;
  }
}

Result<size_t> runskip_decode(ByteSpan in, MutablePageView page) {
  if (in.empty()) return Status::truncated("runskip record: no bytes at offset 0");
  if (in[0] == kRunSkipWholePage) {
    if (in.size() < kRunSkipMaxRecord) {
      return Status::truncated(
          fmt::format("runskip record: whole-page record at offset 0 needs {} bytes, have {}",
                      kRunSkipMaxRecord, in.size()));
    }
    std::memcpy(page.data(), in.data() + 1, kPageSize);
    return kRunSkipMaxRecord;
  }

  // Pass 1: validate the whole record, so that an error leaves `page` unchanged.
  size_t pos = 0;
  size_t word = 0;
  while (word < kWordsPerPage) {
    if (pos >= in.size()) {
      return Status::truncated(
          fmt::format("runskip record: input ends at offset {} after {} of {} words", pos, word,
                      kWordsPerPage));
    }
    const uint8_t marker = in[pos];
    if (marker == kRunSkipEnd) {
      ++pos;
      break;
    }
    if (marker == kRunSkipWholePage) {
      return Status::corrupt(fmt::format(
          "runskip record: whole-page marker 0x80 at offset {} is not the first byte", pos));
    }
    const size_t n = marker & 0x7f;
    if (n > kWordsPerPage - word) {
      return Status::corrupt(
          fmt::format("runskip record: marker 0x{:02x} at offset {} covers words {}..{}, past the "
                      "end of the page",
                      marker, pos, word, word + n - 1));
    }
    if ((marker & kRunSkipSkipBit) == 0) {
      if (in.size() - pos - 1 < n * kWordSize) {
        return Status::truncated(
            fmt::format("runskip record: RUN of {} words at offset {} needs {} bytes, have {}", n,
                        pos, n * kWordSize, in.size() - pos - 1));
      }
      pos += n * kWordSize;
    }
    ++pos;
    word += n;
  }
  const size_t consumed = pos;

  // Pass 2: apply.
  pos = 0;
  word = 0;
  while (pos < consumed) {
    const uint8_t marker = in[pos++];
    if (marker == kRunSkipEnd) break;
    const size_t n = marker & 0x7f;
    if ((marker & kRunSkipSkipBit) == 0) {
      copy_words(page.data() + word * kWordSize, in.data() + pos, n * kWordSize);
      pos += n * kWordSize;
    }
    word += n;
  }
  return consumed;
}

}  // namespace romulus::protocol
