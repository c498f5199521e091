#include "storage/snapshot_file.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "protocol/coding.h"
#include "protocol/crc32c.h"
#include "protocol/page.h"
#include "storage/image_meta.h"

namespace romulus::storage {

using protocol::Bytes;
using protocol::ByteSpan;
using protocol::kPageSize;

namespace {

constexpr uint8_t kSnapshotMagic[8] = {'R', 'M', 'L', 'S', 'S', 'N', 'A', 'P'};
constexpr uint8_t kEndMagic[8] = {'R', 'M', 'L', 'S', 'E', 'N', 'D', '1'};
constexpr uint32_t kSnapshotVersion = 1;
constexpr size_t kFixedHeaderSize = 8 + 4 + 4 + 8 * 4 + 2;  // before the pair id
constexpr size_t kRunHeaderSize = 12;
constexpr size_t kTrailerSize = 12;
constexpr size_t kBufferBytes = size_t{1} << 20;

bool is_zero_page(const uint8_t* p) {
  static const uint8_t kZero[kPageSize] = {};
  return std::memcmp(p, kZero, kPageSize) == 0;
}

// Sequential writes through a buffer, CRC32C of everything written.
class SnapshotWriter {
 public:
  explicit SnapshotWriter(File& file) : file_(file) { buffer_.reserve(kBufferBytes); }
  Status write(const uint8_t* p, size_t n) {
    crc_ = protocol::crc32c_extend(crc_, ByteSpan(p, n));
    if (buffer_.size() + n > kBufferBytes) ROMULUS_RETURN_IF_ERROR(flush());
    if (n >= kBufferBytes) {
      ROMULUS_RETURN_IF_ERROR(file_.pwrite(offset_, p, n));
      offset_ += n;
      return Status::ok();
    }
    buffer_.insert(buffer_.end(), p, p + n);
    return Status::ok();
  }
  Status write(const Bytes& b) { return write(b.data(), b.size()); }
  Status flush() {
    if (buffer_.empty()) return Status::ok();
    ROMULUS_RETURN_IF_ERROR(file_.pwrite(offset_, buffer_.data(), buffer_.size()));
    offset_ += buffer_.size();
    buffer_.clear();
    return Status::ok();
  }
  uint32_t crc() const { return crc_; }

 private:
  File& file_;
  Bytes buffer_;
  uint64_t offset_ = 0;
  uint32_t crc_ = 0;
};

struct Run {
  uint64_t first = 0;
  uint32_t pages = 0;
};

struct Header {
  SnapshotInfo info;
  uint64_t run_count = 0;
  size_t length = 0;  // bytes, pair id included
};

// Reads and checks the header and the file's size against it.
Result<Header> read_header(File& file, const std::string& path) {
  ROMULUS_ASSIGN_OR_RETURN(const uint64_t size, file.size());
  const auto bad = [&](const std::string& what) {
    return Status::corrupt(fmt::format("snapshot {}: {}", path, what));
  };
  Bytes fixed(kFixedHeaderSize);
  if (size < kFixedHeaderSize + kTrailerSize) {
    return Status::truncated(
        fmt::format("snapshot {}: {} bytes is too short for a snapshot", path, size));
  }
  ROMULUS_RETURN_IF_ERROR(file.pread(0, fixed.data(), fixed.size()));
  if (std::memcmp(fixed.data(), kSnapshotMagic, 8) != 0) {
    return bad("not a Romulus snapshot (bad magic)");
  }
  protocol::ByteReader in(ByteSpan(fixed).subspan(8));
  uint32_t version = 0, flags = 0;
  uint16_t pair_length = 0;
  Header h;
  ROMULUS_RETURN_IF_ERROR(in.read_u32(&version, "version"));
  ROMULUS_RETURN_IF_ERROR(in.read_u32(&flags, "flags"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&h.info.page_count, "page count"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&h.info.epoch, "epoch"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&h.info.data_pages, "data pages"));
  ROMULUS_RETURN_IF_ERROR(in.read_u64(&h.run_count, "run count"));
  ROMULUS_RETURN_IF_ERROR(in.read_u16(&pair_length, "pair id length"));
  if (version != kSnapshotVersion) {
    return Status::unsupported(fmt::format("snapshot {}: format version {} (this build reads {})",
                                           path, version, kSnapshotVersion));
  }
  if (flags != 0) return bad(fmt::format("unknown flags {:#x}", flags));
  if (h.info.page_count == 0 || h.info.page_count > kMaxArenaPages) {
    return bad(fmt::format("page count {} out of range", h.info.page_count));
  }
  if (h.info.epoch == 0) return bad("epoch 0");
  if (h.info.data_pages > h.info.page_count || h.run_count > h.info.data_pages ||
      (h.info.data_pages > 0 && h.run_count == 0)) {
    return bad(fmt::format("{} pages in {} runs for an arena of {} pages", h.info.data_pages,
                           h.run_count, h.info.page_count));
  }
  if (pair_length > kMaxPairIdLength) return bad("pair id too long");
  h.length = kFixedHeaderSize + pair_length;
  // No overflow: each term is below 2^36 * 4096.
  const uint64_t expected =
      h.length + h.run_count * kRunHeaderSize + h.info.data_pages * kPageSize + kTrailerSize;
  if (size != expected) {
    return Status::truncated(
        fmt::format("snapshot {}: {} bytes, but its header announces {} (a copy cut short?)", path,
                    size, expected));
  }
  h.info.pair_id.resize(pair_length);
  ROMULUS_RETURN_IF_ERROR(
      file.pread(kFixedHeaderSize, reinterpret_cast<uint8_t*>(h.info.pair_id.data()), pair_length));
  return h;
}

// Reads the runs and the trailer into `arena` (zeroed), checking everything.
Status read_body(File& file, const std::string& path, const Header& h, Bytes& header_bytes,
                 uint8_t* arena) {
  const auto bad = [&](const std::string& what) {
    return Status::corrupt(fmt::format("snapshot {}: {}", path, what));
  };
  uint32_t crc = protocol::crc32c(header_bytes);
  uint64_t offset = h.length;
  uint64_t next_free = 0;  // the first PFN a run may start at
  uint64_t pages = 0;
  uint8_t run_header[kRunHeaderSize];
  for (uint64_t r = 0; r < h.run_count; ++r) {
    ROMULUS_RETURN_IF_ERROR(file.pread(offset, run_header, kRunHeaderSize));
    crc = protocol::crc32c_extend(crc, ByteSpan(run_header, kRunHeaderSize));
    const uint64_t first = protocol::load_u64(run_header);
    const uint32_t count = protocol::load_u32(run_header + 8);
    if (count == 0 || count > kMaxSnapshotRunPages || first < next_free ||
        first > h.info.page_count || h.info.page_count - first < count ||
        h.info.data_pages - pages < count) {
      return bad(fmt::format("run {} ({} pages at PFN {}) out of place", r, count, first));
    }
    offset += kRunHeaderSize;
    uint8_t* dst = arena + first * kPageSize;
    ROMULUS_RETURN_IF_ERROR(file.pread(offset, dst, size_t{count} * kPageSize));
    crc = protocol::crc32c_extend(crc, ByteSpan(dst, size_t{count} * kPageSize));
    offset += size_t{count} * kPageSize;
    pages += count;
    next_free = first + count;
  }
  if (pages != h.info.data_pages) {
    return bad(fmt::format("runs hold {} pages, the header says {}", pages, h.info.data_pages));
  }
  uint8_t trailer[kTrailerSize];
  ROMULUS_RETURN_IF_ERROR(file.pread(offset, trailer, kTrailerSize));
  if (std::memcmp(trailer + 4, kEndMagic, 8) != 0) return bad("bad trailer");
  if (protocol::load_u32(trailer) != crc) {
    return bad("checksum mismatch: the file is damaged; use another snapshot");
  }
  return Status::ok();
}

}  // namespace

Status write_snapshot(FileSystem& fs, const std::string& path, const SnapshotInfo& info,
                      const uint8_t* arena, size_t bytes) {
  if (info.page_count == 0 || info.page_count > kMaxArenaPages ||
      bytes != info.page_count * kPageSize) {
    return Status::invalid_argument(
        fmt::format("snapshot: {} bytes for an arena of {} pages", bytes, info.page_count));
  }
  if (info.epoch == 0) return Status::invalid_argument("snapshot: epoch 0 holds no image");
  if (info.pair_id.size() > kMaxPairIdLength) {
    return Status::invalid_argument("snapshot: pair id longer than 255 bytes");
  }
  std::vector<Run> runs;
  uint64_t data_pages = 0;
  for (uint64_t pfn = 0; pfn < info.page_count; ++pfn) {
    if (is_zero_page(arena + pfn * kPageSize)) continue;
    if (runs.empty() || runs.back().first + runs.back().pages != pfn ||
        runs.back().pages == kMaxSnapshotRunPages) {
      runs.push_back({pfn, 0});
    }
    ++runs.back().pages;
    ++data_pages;
  }

  Bytes header(kSnapshotMagic, kSnapshotMagic + 8);
  protocol::put_u32(header, kSnapshotVersion);
  protocol::put_u32(header, 0);
  protocol::put_u64(header, info.page_count);
  protocol::put_u64(header, info.epoch);
  protocol::put_u64(header, data_pages);
  protocol::put_u64(header, runs.size());
  protocol::put_u16(header, static_cast<uint16_t>(info.pair_id.size()));
  header.insert(header.end(), info.pair_id.begin(), info.pair_id.end());

  const std::string tmp = path + ".tmp";
  const Status st = [&]() -> Status {
    ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> file, fs.open(tmp, OpenMode::kCreate));
    SnapshotWriter out(*file);
    ROMULUS_RETURN_IF_ERROR(out.write(header));
    for (const Run& run : runs) {
      uint8_t run_header[kRunHeaderSize];
      protocol::store_u64(run_header, run.first);
      protocol::store_u32(run_header + 8, run.pages);
      ROMULUS_RETURN_IF_ERROR(out.write(run_header, kRunHeaderSize));
      ROMULUS_RETURN_IF_ERROR(
          out.write(arena + run.first * kPageSize, size_t{run.pages} * kPageSize));
    }
    uint8_t trailer[kTrailerSize];
    protocol::store_u32(trailer, out.crc());
    std::memcpy(trailer + 4, kEndMagic, 8);
    ROMULUS_RETURN_IF_ERROR(out.write(trailer, kTrailerSize));
    ROMULUS_RETURN_IF_ERROR(out.flush());
    ROMULUS_RETURN_IF_ERROR(file->sync());
    file.reset();
    ROMULUS_RETURN_IF_ERROR(fs.rename(tmp, path));
    return fs.sync_dir(parent_dir(path));
  }();
  if (!st.is_ok()) {
    (void)fs.remove(tmp);  // best effort: a partial file is never left under `path`
    return st.context(fmt::format("write snapshot {}", path));
  }
  return Status::ok();
}

Result<SnapshotInfo> read_snapshot_info(FileSystem& fs, const std::string& path) {
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> file, fs.open(path, OpenMode::kRead));
  ROMULUS_ASSIGN_OR_RETURN(Header h, read_header(*file, path));
  return h.info;
}

Result<SnapshotInfo> read_snapshot(FileSystem& fs, const std::string& path, uint8_t* arena,
                                   size_t bytes) {
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> file, fs.open(path, OpenMode::kRead));
  ROMULUS_ASSIGN_OR_RETURN(Header h, read_header(*file, path));
  if (bytes != h.info.page_count * kPageSize) {
    return Status::invalid_argument(
        fmt::format("snapshot {} holds an arena of {} pages; this one has {} pages", path,
                    h.info.page_count, bytes / kPageSize));
  }
  Bytes header_bytes(h.length);
  ROMULUS_RETURN_IF_ERROR(file->pread(0, header_bytes.data(), header_bytes.size()));
  std::memset(arena, 0, bytes);
  const Status st = read_body(*file, path, h, header_bytes, arena);
  if (!st.is_ok()) {
    std::memset(arena, 0, bytes);
    return st;
  }
  return h.info;
}

}  // namespace romulus::storage
