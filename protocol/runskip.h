// RUN/SKIP page codec (CodecId::kRunSkip, the default): one page record says,
// 4-byte word by word, what changed between the receiver's copy of a page and
// its current contents. Specified in docs/protocol.md, "Codecs"; grammar:
//
//   record   := 0x80 page[4096]            whole page (only as the first byte)
//             | marker* end
//   marker   := RUN(n)  words[4*n]          0x01..0x7F: n = 1..127 new words
//             | SKIP(n)                      0x81..0xFF: n = 1..127 unchanged words
//   end      := 0x00                         END: the rest of the page is unchanged
//             | (nothing)                    when the markers covered all 1024 words
//
// A marker that would run past word 1024, or 0x80 anywhere but the first byte,
// is corrupt. `00` alone is an unchanged page.
//
// The encoder is exact and minimal for this grammar: every changed word is in a
// RUN and every unchanged word before the last change is in a SKIP. Folding an
// unchanged gap of g >= 1 words into the surrounding RUN costs 4g data bytes and
// saves at most ceil(g/127) SKIP markers plus one RUN marker, i.e. at most
// g + 1 < 4g bytes, so skipping is always strictly smaller (for a single word
// between two changes: 2 marker bytes vs 4 data bytes). When the delta would be
// longer than kRunSkipDeltaBudget (3584 bytes), the encoder emits the
// whole-page record instead, so a record is never longer than
// kRunSkipMaxRecord. The decoder accepts any record the grammar allows, up to
// 5120 bytes (1024 RUNs of one word).
//
// Pure functions over caller memory; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol/coding.h"
#include "protocol/page.h"
#include "protocol/page_compare.h"
#include "common/status.h"

namespace romulus::protocol {

inline constexpr uint8_t kRunSkipEnd = 0x00;        // RUN 0: rest of page unchanged
inline constexpr uint8_t kRunSkipWholePage = 0x80;  // SKIP 0: 4096 raw bytes follow
inline constexpr uint8_t kRunSkipSkipBit = 0x80;    // marker bit 7: SKIP, else RUN
inline constexpr size_t kRunSkipMaxRun = 127;       // words per marker
inline constexpr size_t kRunSkipMaxRecord = 1 + kPageSize;
// The largest delta the encoder sends. A delta that saves less than an eighth
// of a page goes as a whole page instead: nearly as small, and it decodes at
// memcpy speed rather than marker by marker (a page with half its bytes
// changed would otherwise be ~60 short RUNs; docs/performance.md).
inline constexpr size_t kRunSkipDeltaBudget = kPageSize * 7 / 8;

// Encodes `cur` against the receiver's copy `old` (kPageSize bytes), or as a
// whole-page record if old is nullptr, into out (room for kRunSkipMaxRecord
// bytes) and returns the record's size. Bytes of out past the record, within
// kRunSkipMaxRecord, may have been written too (they are scratch).
size_t runskip_encode(const uint8_t* old, PageView cur, uint8_t* out);

// runskip_encode() with a chosen page comparison (protocol/page_compare.h),
// for tests and benchmarks; runskip_encode() uses the best the CPU supports
// (AVX-512BW, else AVX2, else SSE2). Precondition: compare_impl_available(impl).
size_t runskip_encode_with(CompareImpl impl, const uint8_t* old, PageView cur, uint8_t* out);

// Applies the record at the front of `in` to `page`, which holds the receiver's
// current copy, and returns the number of bytes the record occupies (bytes after
// it are left for the caller: the next record). On error (kTruncated or
// kCorrupt, naming the problem and its offset) `page` is left unchanged: what
// was applied of the record before its error is undone.
Result<size_t> runskip_decode(ByteSpan in, MutablePageView page);

// True if the record at the front of `in` is a whole-page record.
inline bool runskip_is_whole_page(ByteSpan in) { return !in.empty() && in[0] == kRunSkipWholePage; }

}  // namespace romulus::protocol
