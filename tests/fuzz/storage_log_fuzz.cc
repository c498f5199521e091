// Fuzz target for the durable image's on-disk formats (storage/log_format.h,
// storage/image_meta.h) and for recovery from a hostile log.
//
// Input: one mode byte, then bytes.
//   mode % 3 == 0: byte 1 sets the arena's pages (1..256); the rest is one log
//                  record, decoded as decode_record_header + decode_record_body.
//   mode % 3 == 1: the rest is a log header and, separately, a meta file.
//   mode % 3 == 2: the rest is log.1 of a data directory whose meta and (zero)
//                  image are valid (8 pages, base epoch 1); the directory is
//                  opened (with --force if mode & 4), read, appended to and
//                  synced. With mode & 8 the log is one a compaction was
//                  folding when it stopped (meta names log.2 as current), and
//                  open() finishes that compaction. Recovery must refuse or
//                  succeed, never crash.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "protocol/crc32c.h"
#include "storage/durable_image.h"
#include "storage/fault_injection.h"
#include "storage/image_meta.h"
#include "storage/log_format.h"

using namespace romulus;
using namespace romulus::storage;

namespace {

constexpr uint64_t kPages = 8;

void fuzz_record(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const uint64_t arena_pages = 1 + data[0];
  const protocol::ByteSpan in(data + 1, size - 1);
  Result<RecordHeader> h = decode_record_header(in, arena_pages);
  if (!h.is_ok()) return;
  if (h->record_length() > in.size()) return;
  RecordPages pages;
  if (decode_record_body(*h, in.first(kRecordHeaderSize),
                         in.subspan(kRecordHeaderSize, h->body_length), arena_pages, pages)
          .is_ok()) {
    if (pages.pfns.size() != h->page_count) __builtin_trap();
    if (pages.pages.size() != pages.pfns.size() * protocol::kPageSize) __builtin_trap();
  }
}

void fuzz_headers(const uint8_t* data, size_t size) {
  (void)decode_log_header(protocol::ByteSpan(data, size));
  Result<ImageMeta> m = decode_meta(protocol::ByteSpan(data, size));
  if (m.is_ok() && encode_meta(*m) != std::vector<uint8_t>(data, data + size)) __builtin_trap();
}

void fuzz_recovery(const uint8_t* data, size_t size, bool force, bool folding) {
  FaultInjectingFileSystem fs;
  if (!fs.make_dir("/d").is_ok()) __builtin_trap();
  ImageMeta meta;
  meta.page_count = kPages;
  meta.base_epoch = meta.checked_epoch = 1;
  meta.image_generation = meta.log_generation = 1;
  if (folding) {
    meta.folding_log_generation = 1;
    meta.log_generation = 2;
  }
  meta.pages_per_block = 2;
  const std::vector<uint8_t> zero_block(2 * protocol::kPageSize, 0);
  meta.block_crcs.assign(meta.block_count(), protocol::crc32c(zero_block));
  (void)fs.set_contents("/d/meta", encode_meta(meta));
  (void)fs.set_contents("/d/image.1", std::vector<uint8_t>(kPages * protocol::kPageSize, 0));
  (void)fs.set_contents("/d/log.1", std::vector<uint8_t>(data, data + size));
  DurableImage::Options options;
  options.force = force;
  options.pages_per_block = 2;
  Result<std::unique_ptr<DurableImage>> image = DurableImage::open(fs, "/d", {kPages, ""}, options);
  if (!image.is_ok()) return;
  if ((*image)->epoch() < 1) __builtin_trap();
  if ((*image)->epoch() == UINT64_MAX) return;
  std::vector<uint8_t> arena(kPages * protocol::kPageSize);
  if (!(*image)->read_image(arena.data(), arena.size()).is_ok()) __builtin_trap();
  const uint64_t next = (*image)->epoch() + 1;
  const std::vector<uint64_t> pfn = {3};
  if (!(*image)->append(next, pfn, arena.data()).is_ok()) __builtin_trap();
  if (!(*image)->sync().is_ok()) __builtin_trap();
  image->reset();
  Result<std::unique_ptr<DurableImage>> again = DurableImage::open(fs, "/d", {kPages, ""}, options);
  if (!again.is_ok() || (*again)->epoch() != next) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  switch (data[0] % 3) {
    case 0:
      fuzz_record(data + 1, size - 1);
      break;
    case 1:
      fuzz_headers(data + 1, size - 1);
      break;
    default:
      fuzz_recovery(data + 1, size - 1, (data[0] & 4) != 0, (data[0] & 8) != 0);
  }
  return 0;
}
