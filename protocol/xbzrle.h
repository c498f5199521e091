// XBZRLE page codec (CodecId::kXbzrle), after QEMU's migration/xbzrle.c: one
// page record says, byte by byte, what changed between the receiver's copy of a
// page and its current contents. Specified in docs/protocol.md, "Codecs":
//
//   record := 0x00                        unchanged page
//           | 0x01 varint(L) delta[L]      L = 1..kXbzrleMaxDelta
//           | 0x02 page[4096]              whole page
//   delta  := pair+                        exactly L bytes, nothing left over
//   pair   := varint(zrun) varint(nzrun) new_bytes[nzrun]
//
// zrun counts bytes left unchanged, then nzrun bytes are replaced by the new
// bytes that follow (the new values, as QEMU sends them, not an XOR). The
// trailing unchanged stretch is not written. Validity rules, all checked by the
// decoder so that every accepted record has one meaning:
//   - every varint is minimal (no trailing 0x80 groups) and at most 4096;
//   - nzrun >= 1; zrun >= 1 except in the first pair (a page may start changed),
//     so two non-zero runs are never adjacent and no pair is empty;
//   - the running offset never passes 4096;
//   - the pairs end exactly at L; L >= 1 (an unchanged page is tag 0x00) and
//     L <= kXbzrleMaxDelta, so that a delta record is smaller than a whole page.
//
// The encoder folds an unchanged gap of 1 or 2 bytes inside a changed region
// into the non-zero run when that makes the record smaller (the gap costs g
// bytes, a new pair at least 2), and falls back to the whole-page record when
// the delta would not be smaller than 1 + 4096 bytes.
//
// Pure functions over caller memory; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol/coding.h"
#include "protocol/page.h"
#include "common/status.h"

namespace romulus::protocol {

inline constexpr uint8_t kXbzrleUnchanged = 0x00;
inline constexpr uint8_t kXbzrleDelta = 0x01;
inline constexpr uint8_t kXbzrleWholePage = 0x02;
// Largest L: 1 tag + 2 varint bytes + 4093 = 4096 bytes, one less than a whole page.
inline constexpr size_t kXbzrleMaxDelta = kPageSize - 3;
inline constexpr size_t kXbzrleMaxRecord = 1 + kPageSize;

// Encodes `cur` against the receiver's copy `old` (kPageSize bytes), or as a
// whole-page record if old is nullptr. Returns the record's size n; out has
// room for kXbzrleMaxRecord bytes, and bytes of it past n may have been used as
// scratch.
size_t xbzrle_encode(const uint8_t* old, PageView cur, uint8_t* out);

// Applies the record at the front of `in` to `page` (the receiver's current
// copy) and returns the bytes the record occupies; later bytes are the caller's.
// On error (kTruncated / kCorrupt, naming the problem and its offset) `page` is
// unchanged: the record is validated before any byte is written.
Result<size_t> xbzrle_decode(ByteSpan in, MutablePageView page);

inline bool xbzrle_is_whole_page(ByteSpan in) { return !in.empty() && in[0] == kXbzrleWholePage; }

}  // namespace romulus::protocol
