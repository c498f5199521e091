// The checkpoint log's bytes: the log header and the records, as pure
// encode/decode functions (the file handling is DurableImage's).
//
//   log         := log_header record*
//   log_header  := magic "RMLSLOG1" (8) | generation u64 | base_epoch u64
//                  | crc u32 (CRC32C of the 24 bytes before)                  28 bytes
//   record      := record_header body
//   record_header := magic u32 0x4452524c ("LRRD") | flags u32 | epoch u64
//                  | page_count u32 | body_length u32 | durable_offset u64
//                  | header_crc u32 (CRC32C of the 32 bytes before)
//                  | crc u32 (CRC32C of the 36 bytes before and the body)     40 bytes
//   body        := pfn u64 {page_count} | page (4096 bytes) {page_count}
//                  or, with flag kRecordLz4, the LZ4 block of those bytes
//
// Every integer is little-endian (protocol/coding.h). Flags: kRecordLz4 (the
// body is compressed; body_length is the block's size, and the raw body is
// exactly page_count * 4104 bytes), kRecordContinued (this checkpoint goes on
// in the next record: one checkpoint larger than kMaxRecordPages is split,
// and counts only once its last record, without the flag, is whole).
// durable_offset is the size of the log known durable when the record was
// written; recovery uses it to tell a torn tail from a damaged middle
// (docs/design.md, "The durable image").
//
// Worked example: epoch 7, one page (pfn 3, 4096 bytes of 0xab), written when
// 28 bytes were durable, not compressed (LZ4 would pay here; say it was off):
//   4c 52 52 44  00 00 00 00  07 00 00 00 00 00 00 00  01 00 00 00
//   08 10 00 00  1c 00 00 00 00 00 00 00  <header_crc>  <crc>
//   03 00 00 00 00 00 00 00  ab ab ... (4096)
//
// Validity, checked before anything is used (input is hostile): magic; header
// CRC; no unknown flag; page_count <= kMaxRecordPages and <= the arena's
// pages; body_length exactly the raw size (uncompressed) or below it (LZ4);
// then the CRC over header and body; an LZ4 block that decodes to exactly the
// raw size; PFNs strictly increasing and below the arena's page count.
//
// Pure functions; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "protocol/coding.h"
#include "protocol/page.h"

namespace romulus::storage {

inline constexpr size_t kLogHeaderSize = 28;
inline constexpr size_t kRecordHeaderSize = 40;
inline constexpr uint32_t kRecordMagic = 0x4452524c;  // "LRRD" as bytes
inline constexpr uint32_t kRecordLz4 = 1u << 0;
inline constexpr uint32_t kRecordContinued = 1u << 1;
inline constexpr uint32_t kKnownRecordFlags = kRecordLz4 | kRecordContinued;
// Pages in one record: bounds the memory a record needs (64 MiB of pages).
inline constexpr uint32_t kMaxRecordPages = 16384;
inline constexpr size_t kRecordBytesPerPage = 8 + protocol::kPageSize;

struct LogHeader {
  uint64_t generation = 0;
  uint64_t base_epoch = 0;
};

protocol::Bytes encode_log_header(const LogHeader& header);
// `bytes` is the first kLogHeaderSize bytes of the file (or fewer: kTruncated).
Result<LogHeader> decode_log_header(protocol::ByteSpan bytes);

struct RecordHeader {
  uint32_t flags = 0;
  uint64_t epoch = 0;
  uint32_t page_count = 0;
  uint32_t body_length = 0;
  uint64_t durable_offset = 0;
  uint32_t crc = 0;

  bool lz4() const { return (flags & kRecordLz4) != 0; }
  bool continued() const { return (flags & kRecordContinued) != 0; }
  uint64_t raw_body_length() const { return uint64_t{page_count} * kRecordBytesPerPage; }
  uint64_t record_length() const { return kRecordHeaderSize + body_length; }
};

// Appends one record to `out`: pfns.size() <= kMaxRecordPages pages at `pages`
// (4096 bytes each; none for a checkpoint that changed nothing). The caller
// has checked the PFNs. With try_lz4 the body is compressed when that saves at
// least an eighth.
void encode_record(uint64_t epoch, bool continued, std::span<const uint64_t> pfns,
                   const uint8_t* pages, uint64_t durable_offset, bool try_lz4,
                   protocol::Bytes& out);

// Checks a record header (the first kRecordHeaderSize bytes) against the
// rules above that need no body.
Result<RecordHeader> decode_record_header(protocol::ByteSpan bytes, uint64_t arena_pages);

// A record's pages, decoded.
struct RecordPages {
  std::vector<uint64_t> pfns;
  protocol::Bytes pages;  // pfns.size() * 4096 bytes
};

// Checks the CRC of `header_bytes` + `body` (body.size() must be the header's
// body_length), decodes the body into `out` and checks the PFNs.
Status decode_record_body(const RecordHeader& header, protocol::ByteSpan header_bytes,
                          protocol::ByteSpan body, uint64_t arena_pages, RecordPages& out);

}  // namespace romulus::storage
