#include "protocol/runskip.h"

#include <fmt/format.h>

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// copy_words() for n <= kUndoMaxBytes (64): a RUN of one or two words, the
// common case of a sparse page, takes one branch.
inline void copy_short(uint8_t* dst, const uint8_t* src, size_t n) {
  if (n <= 8) {
    uint32_t a, b;
    std::memcpy(&a, src, 4);
    std::memcpy(&b, src + n - 4, 4);
    std::memcpy(dst, &a, 4);
    std::memcpy(dst + n - 4, &b, 4);
  } else {
    copy_words(dst, src, n);
  }
}

// Bits set in x, inline: __builtin_popcountll is a libgcc call unless the
// build targets POPCNT, which the x86-64 baseline does not.
inline size_t popcount64(uint64_t x) {
  x -= (x >> 1) & 0x5555555555555555;
  x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F;
  return static_cast<size_t>((x * 0x0101010101010101) >> 56);
}

size_t markers_for(size_t words) { return (words + kRunSkipMaxRun - 1) / kRunSkipMaxRun; }

// Writes the record of a page delta, run by run, into out; each run is written
// with the SKIPs for the unchanged gap before it. Returns false as soon as the
// record would exceed kRunSkipDeltaBudget (out then holds a partial record).
class DeltaWriter {
 public:
  // Continues a record of which out[0, pos) covers words [0, word).
  DeltaWriter(const uint8_t* cur, uint8_t* out, size_t pos = 0, size_t word = 0)
      : cur_(cur), out_(out), pos_(pos), word_(word) {}

  // Words [start, end) changed, and words [word_, start) did not.
  bool run(size_t start, size_t end) {
    const size_t gap = start - word_;
    const size_t words = end - start;
    const size_t full = gap / kRunSkipMaxRun;  // SKIP 127 markers (0xFF): at most 8
    const size_t rest = gap - full * kRunSkipMaxRun;
    const size_t skips = full + (rest != 0);
    if (pos_ + skips + markers_for(words) + words * kWordSize > kRunSkipDeltaBudget) {
      return false;
    }
    // Without a branch on the gap (its length is random, and a memset of 0..8
    // bytes mispredicted on it): eight 0xFF bytes, of which the RUN below
    // overwrites what is not SKIP 127s, and a SKIP of the rest, overwritten
    // by the RUN marker when the rest is 0. Stays within kRunSkipDeltaBudget + 8.
    static_assert(kWordsPerPage / kRunSkipMaxRun <= 8);
    constexpr uint64_t kSkipFull = ~uint64_t{0};
    std::memcpy(out_ + pos_, &kSkipFull, 8);
    pos_ += full;
    out_[pos_] = static_cast<uint8_t>(kRunSkipSkipBit | rest);
    pos_ += rest != 0;
    for (size_t w = start; w < end;) {
      const size_t n = end - w < kRunSkipMaxRun ? end - w : kRunSkipMaxRun;
      out_[pos_++] = static_cast<uint8_t>(n);
      copy_words(out_ + pos_, cur_ + w * kWordSize, n * kWordSize);
      pos_ += n * kWordSize;
      w += n;
    }
    word_ = end;
    return true;
  }

  // Ends the record after the last run; returns its size, or 0 if over budget.
  size_t finish() {
    if (word_ < kWordsPerPage) {
      if (pos_ + 1 > kRunSkipDeltaBudget) return 0;
      out_[pos_++] = kRunSkipEnd;
    }
    return pos_;
  }

 private:
  const uint8_t* cur_;
  uint8_t* out_;
  size_t pos_;   // bytes written
  size_t word_;  // words [0, word_) are covered by the markers written
};

// The record of cur given its word diff map and block summary, continuing
// from block `first` a record of which out[0, pos) covers words [0, word)
// (word <= 64 * first; no run of the earlier blocks reaches block `first`).
//
// One pass over the differing blocks of the page (diff_word_blocks) and, in
// each, over its runs of set bits: the lowest run of m is cleared by
// m & (m + lowest bit), and the carry's position is where the run ends. A run
// that reaches the end of a block is held back until the next block shows
// whether it goes on (a maximal run must be written as one, or its RUN
// markers would split differently).
size_t encode_delta(const WordDiffMap& map, uint32_t blocks, PageView cur, uint8_t* out,
                    size_t first = 0, size_t pos = 0, size_t word = 0) {
  if (blocks == 0) {
    out[0] = kRunSkipEnd;
    return 1;
  }
  // A delta is sent only if it is at most kRunSkipDeltaBudget bytes. The
  // changed words' data alone bounds it from below: a dense page goes whole
  // without walking its runs. Counting them is worth it only when at least 15
  // of the 16 blocks differ (14 blocks hold at most 896 words, 3584 bytes):
  // at most one bit of `blocks` clear.
  static_assert(kRunSkipDeltaBudget / (64 * kWordSize) == 14 && kWordsPerPage == 16 * 64);
  const uint32_t same = ~blocks & 0xFFFF;
  if ((same & (same - 1)) == 0) {
    size_t changed = 0;
    for (const uint64_t m : map) changed += popcount64(m);
    if (changed * kWordSize > kRunSkipDeltaBudget) return encode_whole_page(cur, out);
  }
  DeltaWriter writer(cur.data(), out, pos, word);
  size_t run_start = 0;  // the held run [run_start, run_end), if run_end > run_start
  size_t run_end = 0;
  for (uint32_t rest = blocks & (~0u << first); rest != 0; rest &= rest - 1) {
    const size_t base = static_cast<size_t>(__builtin_ctz(rest)) * 64;
    uint64_t m = map[base / 64];
    do {
      const uint64_t low = m & (~m + 1);
      const uint64_t carry = m + low;  // 0 if the run reaches bit 63
      const size_t start = base + static_cast<size_t>(__builtin_ctzll(low));
      const size_t end =
          carry == 0 ? base + 64 : base + static_cast<size_t>(__builtin_ctzll(carry));
      m &= carry;
      if (start == run_end && run_end > run_start) {
        run_end = end;  // continues the held run across the block boundary
        continue;
      }
      if (run_end > run_start && !writer.run(run_start, run_end)) {
        return encode_whole_page(cur, out);
      }
      run_start = start;
      run_end = end;
    } while (m != 0);
  }
  if (!writer.run(run_start, run_end)) return encode_whole_page(cur, out);
  const size_t n = writer.finish();
  return n != 0 ? n : encode_whole_page(cur, out);
}

#if defined(__x86_64__)

// Bit i set when word i of the 256-byte blocks at a and b differs.
__attribute__((target("avx512f,avx512bw"), always_inline)) inline uint64_t block_diff_avx512(
    const uint8_t* a, const uint8_t* b) {
  const __mmask16 k0 = _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(a), _mm512_loadu_si512(b));
  const __mmask16 k1 =
      _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(a + 64), _mm512_loadu_si512(b + 64));
  const __mmask16 k2 =
      _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(a + 128), _mm512_loadu_si512(b + 128));
  const __mmask16 k3 =
      _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(a + 192), _mm512_loadu_si512(b + 192));
  return _cvtmask64_u64(_mm512_kunpackd(_mm512_kunpackw(k3, k2), _mm512_kunpackw(k1, k0)));
}

// The encoder for CPUs with AVX-512BW. First every block is compared (into
// mask registers; loads of all blocks in flight at once), then the differing
// blocks are written. A block whose changed words are one run (every block of
// a sparse page), possibly going on into the low words of the next block (a
// cluster across a block boundary), is written with a fixed sequence of stores
// and no branch on the gap. At the first other block (several runs, or a run
// longer than that) encode_delta() writes the rest, as it writes every block
// of a page on other CPUs. The result is the same record either way.
__attribute__((target("avx512f,avx512bw,avx512vl,bmi,bmi2,lzcnt,popcnt"))) size_t encode_avx512(
    const uint8_t* old, PageView page, uint8_t* out) {
  const uint8_t* const cur = page.data();
  WordDiffMap map;
  uint32_t blocks = 0;
  for (size_t i = 0; i < map.size(); ++i) {
    map[i] = block_diff_avx512(old + i * 256, cur + i * 256);
    blocks |= static_cast<uint32_t>(map[i] != 0) << i;
  }
  size_t pos = 0;  // out[0, pos) is the record of words [0, word)
  size_t word = 0;
  for (uint32_t rest_blocks = blocks; rest_blocks != 0; rest_blocks &= rest_blocks - 1) {
    const size_t k = static_cast<size_t>(_tzcnt_u32(rest_blocks));
    const uint64_t m = map[k];
    const uint64_t tz = _tzcnt_u64(m);
    const uint64_t run = m >> tz;
    if ((run & (run + 1)) != 0) {  // more than one run in the block
      return encode_delta(map, blocks, page, out, k, pos, word);
    }
    size_t n = static_cast<size_t>(_mm_popcnt_u64(m));  // changed words
    if ((m >> 63) != 0 && k + 1 < map.size() && (map[k + 1] & 1) != 0) {
      // The run goes on into the next block: take that block's low run too,
      // unless the run may go on further still.
      const uint64_t next = map[k + 1];
      const uint64_t ones = _tzcnt_u64(~next);
      if (ones == 64) return encode_delta(map, blocks, page, out, k, pos, word);
      n += ones;                       // at most 64 + 63 = 127 words: one RUN marker
      map[k + 1] = next & (next + 1);  // what is left of the next block
      if (map[k + 1] == 0) {
        blocks &= ~(2u << k);
        rest_blocks &= ~(2u << k);
      }
    }
    const size_t start = k * 64 + tz;
    const size_t gap = start - word;
    const size_t full = gap / kRunSkipMaxRun;  // at most 8: as DeltaWriter::run
    const size_t rest = gap - full * kRunSkipMaxRun;
    const size_t next_pos = pos + full + (rest != 0) + 1 + n * kWordSize;
    // Checked before writing: out[0, pos) is within the budget, so what a run
    // writes (up to 16 bytes past next_pos) stays within kRunSkipMaxRecord.
    if (next_pos > kRunSkipDeltaBudget) return encode_whole_page(page, out);
    constexpr uint64_t kSkipFull = ~uint64_t{0};
    std::memcpy(out + pos, &kSkipFull, 8);
    size_t p = pos + full;
    out[p] = static_cast<uint8_t>(kRunSkipSkipBit | rest);
    p += rest != 0;
    out[p++] = static_cast<uint8_t>(n);
    // Up to four words without a branch; a masked load never reads past the
    // run (nor the page). Longer runs copy the rest.
    const __mmask8 first4 =
        static_cast<__mmask8>(_bzhi_u32(0xF, static_cast<unsigned>(n > 4 ? 4 : n)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + p),
                     _mm_maskz_loadu_epi32(first4, cur + start * kWordSize));
    if (n > 4) copy_words(out + p + 16, cur + (start + 4) * kWordSize, (n - 4) * kWordSize);
    pos = next_pos;
    word = start + n;
  }
  if (word == kWordsPerPage) return pos;
  if (pos + 1 > kRunSkipDeltaBudget) return encode_whole_page(page, out);
  out[pos] = kRunSkipEnd;
  return pos + 1;
}

bool have_avx512bw() {
  static const bool kHave = __builtin_cpu_supports("avx512f") &&
                            __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("bmi2") &&
                            __builtin_cpu_supports("popcnt");
  return kHave;
}

#endif  // __x86_64__

}  // namespace

size_t runskip_encode(const uint8_t* old, PageView cur, uint8_t* out) {
  if (old == nullptr) return encode_whole_page(cur, out);
#if defined(__x86_64__)
  if (have_avx512bw()) return encode_avx512(old, cur, out);
#endif
  WordDiffMap map;
  const uint32_t blocks = diff_word_blocks(old, cur.data(), &map);
  return encode_delta(map, blocks, cur, out);
}

size_t runskip_encode_with(CompareImpl impl, const uint8_t* old, PageView cur, uint8_t* out) {
  if (old == nullptr) return encode_whole_page(cur, out);
#if defined(__x86_64__)
  if (impl == CompareImpl::kAvx512 && have_avx512bw()) return encode_avx512(old, cur, out);
#endif
  WordDiffMap map;
  const uint32_t blocks = diff_word_blocks_with(impl, old, cur.data(), &map);
  return encode_delta(map, blocks, cur, out);
}

namespace {

// Undoes what runskip_decode() applied of a malformed record, and names the
// record's first error and its offset: walks the record again from the start
// and, for every RUN whose marker is before offset `applied` (each of them was
// applied, and saved in `undo` first), copies the page's former words back.
// Cold: valid records never come here.
[[gnu::cold, gnu::noinline]] Status undo_and_describe(ByteSpan in, size_t applied, uint8_t* page,
                                                      const uint8_t* undo) {
  size_t pos = 0;
  size_t word = 0;
  while (word < kWordsPerPage) {
    if (pos >= in.size()) {
      return Status::truncated(
          fmt::format("runskip record: input ends at offset {} after {} of {} words", pos, word,
                      kWordsPerPage));
    }
    const uint8_t marker = in[pos];
    if (marker == kRunSkipEnd) break;
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
      if (pos < applied) {
        std::memcpy(page + word * kWordSize, undo + word * kWordSize, n * kWordSize);
      }
      pos += n * kWordSize;
    }
    ++pos;
    word += n;
  }
  return Status::corrupt("runskip record: malformed");  // not reached for a failed record
}

}  // namespace

namespace {

// RUNs longer than this are not saved for undo: the rest of the record is
// checked first instead (a marker-only walk), then applied without undo.
constexpr size_t kUndoMaxBytes = 64;

// Marker-only walk over the rest of a delta record, from the marker at `pos`
// that covers page bytes from `off`: returns where the record ends, or 0 if it
// is malformed. Reads no RUN data.
inline size_t scan_rest(const uint8_t* rec, size_t size, size_t pos, size_t off) {
  while (off < kPageSize) {
    if (pos >= size) return 0;
    const uint8_t marker = rec[pos];
    const size_t len = static_cast<size_t>(marker & 0x7f) * kWordSize;
    if (len - 1 >= kPageSize - off) return marker == kRunSkipEnd ? pos + 1 : 0;
    off += len;
    pos += 1 + ((marker & kRunSkipSkipBit) != 0 ? 0 : len);
  }
  return pos <= size ? pos : 0;
}

// Applies the markers [pos, end) of a record that scan_rest() accepted.
inline void apply_checked(const uint8_t* rec, size_t pos, size_t end, size_t off, uint8_t* dst) {
  while (pos < end) {
    const uint8_t marker = rec[pos++];
    const size_t len = static_cast<size_t>(marker & 0x7f) * kWordSize;
    if ((marker & kRunSkipSkipBit) == 0) {
      if (len == 0) return;  // END
      copy_words(dst + off, rec + pos, len);
      pos += len;
    }
    off += len;
  }
}

}  // namespace

// One pass, as a decoder that trusts its input would make, applying each
// marker as soon as it is checked; the words a short RUN overwrites are saved
// first in `undo`, so that an error found later can put the page back as it
// was. At the first long RUN, saving would cost as much as applying: the rest
// of the record is validated by a marker-only walk instead, then applied.
// Measured against validating the whole record first and applying it in a
// second walk: the walk from marker to marker is a chain of dependent loads,
// and walking a sparse page's many markers twice cost more than saving the
// few words they change (docs/performance.md, "Codecs").
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
  const uint8_t* const rec = in.data();
  const size_t size = in.size();
  uint8_t* const dst = page.data();
  uint8_t undo[kPageSize];  // undo[b] is valid where a RUN applied so far wrote page[b]
  size_t pos = 0;
  size_t off = 0;  // page bytes [0, off) are covered by the markers applied
  while (off < kPageSize) {
    if (pos >= size) [[unlikely]]
      return undo_and_describe(in, pos, dst, undo);
    const uint8_t marker = rec[pos];
    const size_t len = static_cast<size_t>(marker & 0x7f) * kWordSize;
    if (len - 1 >= kPageSize - off) [[unlikely]] {  // len == 0 (END, 0x80) or past the page
      if (marker == kRunSkipEnd) return pos + 1;
      return undo_and_describe(in, pos, dst, undo);
    }
    ++pos;
    if ((marker & kRunSkipSkipBit) == 0) {
      if (len > size - pos) [[unlikely]]
        return undo_and_describe(in, pos - 1, dst, undo);
      if (len > kUndoMaxBytes) {
        const size_t end = scan_rest(rec, size, pos - 1, off);
        if (end == 0) return undo_and_describe(in, pos - 1, dst, undo);
        apply_checked(rec, pos - 1, end, off, dst);
        return end;
      }
      copy_short(undo + off, dst + off, len);
      copy_short(dst + off, rec + pos, len);
      pos += len;
    }
    off += len;
  }
  return pos;
}

}  // namespace romulus::protocol
