#include "storage/log_format.h"

#include <lz4.h>

#include <cstring>

#include <fmt/format.h>

#include "protocol/crc32c.h"

namespace romulus::storage {

using protocol::Bytes;
using protocol::ByteSpan;

namespace {

constexpr uint8_t kLogMagic[8] = {'R', 'M', 'L', 'S', 'L', 'O', 'G', '1'};

}  // namespace

Bytes encode_log_header(const LogHeader& header) {
  Bytes out(kLogMagic, kLogMagic + 8);
  protocol::put_u64(out, header.generation);
  protocol::put_u64(out, header.base_epoch);
  protocol::put_u32(out, protocol::crc32c(out));
  return out;
}

Result<LogHeader> decode_log_header(ByteSpan bytes) {
  if (bytes.size() < kLogHeaderSize) {
    return Status::truncated(
        fmt::format("log header: {} of its {} bytes", bytes.size(), kLogHeaderSize));
  }
  if (std::memcmp(bytes.data(), kLogMagic, 8) != 0) {
    return Status::corrupt("log header: not a Romulus checkpoint log (bad magic)");
  }
  if (protocol::load_u32(bytes.data() + 24) != protocol::crc32c(bytes.first(24))) {
    return Status::corrupt("log header: checksum mismatch");
  }
  LogHeader h;
  h.generation = protocol::load_u64(bytes.data() + 8);
  h.base_epoch = protocol::load_u64(bytes.data() + 16);
  return h;
}

void encode_record(uint64_t epoch, bool continued, std::span<const uint64_t> pfns,
                   const uint8_t* pages, uint64_t durable_offset, bool try_lz4, Bytes& out) {
  const size_t n = pfns.size();
  const size_t raw_length = n * kRecordBytesPerPage;
  const size_t start = out.size();
  out.resize(start + kRecordHeaderSize + raw_length);
  uint8_t* body = out.data() + start + kRecordHeaderSize;
  for (size_t i = 0; i < n; ++i) protocol::store_u64(body + 8 * i, pfns[i]);
  if (n > 0) std::memcpy(body + 8 * n, pages, n * protocol::kPageSize);

  uint32_t flags = continued ? kRecordContinued : 0;
  size_t body_length = raw_length;
  if (try_lz4) {
    Bytes packed(static_cast<size_t>(LZ4_compressBound(static_cast<int>(raw_length))));
    const int c = LZ4_compress_default(
        reinterpret_cast<const char*>(body), reinterpret_cast<char*>(packed.data()),
        static_cast<int>(raw_length), static_cast<int>(packed.size()));
    if (c > 0 && static_cast<size_t>(c) <= raw_length - raw_length / 8) {
      flags |= kRecordLz4;
      body_length = static_cast<size_t>(c);
      std::memcpy(body, packed.data(), body_length);
      out.resize(start + kRecordHeaderSize + body_length);
      body = out.data() + start + kRecordHeaderSize;
    }
  }
  uint8_t* h = out.data() + start;
  protocol::store_u32(h, kRecordMagic);
  protocol::store_u32(h + 4, flags);
  protocol::store_u64(h + 8, epoch);
  protocol::store_u32(h + 16, static_cast<uint32_t>(n));
  protocol::store_u32(h + 20, static_cast<uint32_t>(body_length));
  protocol::store_u64(h + 24, durable_offset);
  protocol::store_u32(h + 32, protocol::crc32c(ByteSpan(h, 32)));
  uint32_t crc = protocol::crc32c(ByteSpan(h, 36));
  crc = protocol::crc32c_extend(crc, ByteSpan(body, body_length));
  protocol::store_u32(h + 36, crc);
}

Result<RecordHeader> decode_record_header(ByteSpan bytes, uint64_t arena_pages) {
  if (bytes.size() < kRecordHeaderSize) {
    return Status::truncated(
        fmt::format("record header: {} of its {} bytes", bytes.size(), kRecordHeaderSize));
  }
  const uint8_t* h = bytes.data();
  if (protocol::load_u32(h) != kRecordMagic) return Status::corrupt("record: bad magic");
  if (protocol::load_u32(h + 32) != protocol::crc32c(bytes.first(32))) {
    return Status::corrupt("record: header checksum mismatch");
  }
  RecordHeader r;
  r.flags = protocol::load_u32(h + 4);
  r.epoch = protocol::load_u64(h + 8);
  r.page_count = protocol::load_u32(h + 16);
  r.body_length = protocol::load_u32(h + 20);
  r.durable_offset = protocol::load_u64(h + 24);
  r.crc = protocol::load_u32(h + 36);
  if ((r.flags & ~kKnownRecordFlags) != 0) {
    return Status::corrupt(
        fmt::format("record of epoch {}: unknown flags {:#x}", r.epoch, r.flags));
  }
  if (r.page_count > kMaxRecordPages || r.page_count > arena_pages) {
    return Status::corrupt(fmt::format("record of epoch {}: {} pages (at most {} allowed)", r.epoch,
                                       r.page_count,
                                       std::min<uint64_t>(kMaxRecordPages, arena_pages)));
  }
  const bool length_ok = r.lz4() ? r.body_length > 0 && r.body_length < r.raw_body_length()
                                 : r.body_length == r.raw_body_length();
  if (!length_ok) {
    return Status::corrupt(fmt::format("record of epoch {}: body of {} bytes for {} pages{}",
                                       r.epoch, r.body_length, r.page_count,
                                       r.lz4() ? " (LZ4)" : ""));
  }
  return r;
}

Status decode_record_body(const RecordHeader& header, ByteSpan header_bytes, ByteSpan body,
                          uint64_t arena_pages, RecordPages& out) {
  if (header_bytes.size() < kRecordHeaderSize || body.size() != header.body_length) {
    return Status::truncated(fmt::format("record of epoch {}: {} of its {} body bytes",
                                         header.epoch, body.size(), header.body_length));
  }
  uint32_t crc = protocol::crc32c(header_bytes.first(36));
  crc = protocol::crc32c_extend(crc, body);
  if (crc != header.crc) {
    return Status::corrupt(fmt::format("record of epoch {}: checksum mismatch", header.epoch));
  }
  const size_t n = header.page_count;
  const size_t raw_length = header.raw_body_length();
  Bytes raw;
  ByteSpan decoded = body;
  if (header.lz4()) {
    raw.resize(raw_length);
    const int d = LZ4_decompress_safe(reinterpret_cast<const char*>(body.data()),
                                      reinterpret_cast<char*>(raw.data()),
                                      static_cast<int>(body.size()), static_cast<int>(raw_length));
    if (d < 0 || static_cast<size_t>(d) != raw_length) {
      return Status::corrupt(
          fmt::format("record of epoch {}: LZ4 body does not decode to its pages", header.epoch));
    }
    decoded = raw;
  }
  out.pfns.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t pfn = protocol::load_u64(decoded.data() + 8 * i);
    if (pfn >= arena_pages || (i > 0 && pfn <= out.pfns[i - 1])) {
      out.pfns.clear();
      return Status::corrupt(
          fmt::format("record of epoch {}: PFN {} out of order or past the arena's {} pages",
                      header.epoch, pfn, arena_pages));
    }
    out.pfns[i] = pfn;
  }
  if (header.lz4()) {
    raw.erase(raw.begin(), raw.begin() + static_cast<ptrdiff_t>(8 * n));
    out.pages = std::move(raw);
  } else {
    out.pages.assign(decoded.begin() + static_cast<ptrdiff_t>(8 * n), decoded.end());
  }
  return Status::ok();
}

}  // namespace romulus::storage
