#include "storage/durable_image.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>

#include "protocol/crc32c.h"
#include "protocol/page.h"
#include "storage/log_format.h"

namespace romulus::storage {

using protocol::Bytes;
using protocol::ByteSpan;
using protocol::kPageSize;

namespace {

constexpr char kMetaName[] = "meta";
constexpr char kLockName[] = "LOCK";
constexpr size_t kIoBytes = size_t{1} << 20;  // one read or write of the image
constexpr size_t kIoPages = kIoBytes / kPageSize;

std::string image_name(uint64_t g) { return fmt::format("image.{}", g); }
std::string log_name(uint64_t g) { return fmt::format("log.{}", g); }

// "image.12" with prefix "image." -> 12.
bool parse_generation(const std::string& name, std::string_view prefix, uint64_t* g) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  const auto [p, ec] = std::from_chars(first, last, *g);
  return ec == std::errc() && p == last;
}

// A file this layer writes in a data directory (or leaves behind when it crashes).
bool is_our_file(const std::string& name) {
  uint64_t g = 0;
  return name == kMetaName || name == "meta.tmp" || name == kLockName ||
         parse_generation(name, "image.", &g) || parse_generation(name, "log.", &g);
}

bool is_zero_page(const uint8_t* p) {
  static const uint8_t kZero[kPageSize] = {};
  return std::memcmp(p, kZero, kPageSize) == 0;
}

// What the operator can do about a failed system call, from its errno text.
std::string hint_for(const Status& st) {
  if (st.message().find("No space left on device") != std::string::npos) {
    return " Free space on that disk, then restart the node.";
  }
  if (st.message().find("Input/output error") != std::string::npos) {
    return " The disk reported an I/O error: check it (dmesg, SMART).";
  }
  return "";
}

}  // namespace

struct DurableImage::LogScan {
  std::unique_ptr<File> file;  // null: no such log
  uint64_t end = 0;            // bytes of whole records (and header)
  uint64_t last_epoch = 0;
  uint64_t records = 0;
};

DurableImage::DurableImage(FileSystem& fs, std::string dir, ImageIdentity identity, Options options)
    : fs_(fs), dir_(std::move(dir)), identity_(std::move(identity)), options_(options) {}

DurableImage::~DurableImage() = default;

Result<std::unique_ptr<DurableImage>> DurableImage::open(FileSystem& fs, const std::string& dir,
                                                         const ImageIdentity& identity,
                                                         Options options) {
  if (identity.page_count == 0 || identity.page_count > kMaxArenaPages) {
    return Status::invalid_argument(
        fmt::format("durable image: an arena of {} pages", identity.page_count));
  }
  if (identity.pair_id.size() > kMaxPairIdLength) {
    return Status::invalid_argument("durable image: pair id longer than 255 bytes");
  }
  if (options.pages_per_block == 0 || options.pages_per_block > (1u << 20)) {
    return Status::invalid_argument("durable image: pages_per_block must be 1 to 2^20");
  }
  if (options.record_pages == 0 || options.record_pages > kMaxRecordPages) {
    return Status::invalid_argument(
        fmt::format("durable image: record_pages must be 1 to {}", kMaxRecordPages));
  }
  std::unique_ptr<DurableImage> image(new DurableImage(fs, dir, identity, options));
  ROMULUS_RETURN_IF_ERROR(image->recover());
  return image;
}

Status DurableImage::recover() {
  ROMULUS_ASSIGN_OR_RETURN(const bool dir_exists, fs_.exists(dir_));
  if (!dir_exists) {
    ROMULUS_RETURN_IF_ERROR(fs_.make_dir(dir_).context("--data-dir"));
    ROMULUS_RETURN_IF_ERROR(fs_.sync_dir(parent_dir(dir_)).context("--data-dir"));
  }
  Result<std::unique_ptr<FileLock>> lock = fs_.lock(join_path(dir_, kLockName));
  if (!lock.is_ok()) {
    if (lock.status().code() == StatusCode::kRefused) {
      return Status::refused(fmt::format(
          "--data-dir {} is in use by another node: give each node a directory of its own", dir_));
    }
    return lock.status().context("--data-dir");
  }
  lock_ = std::move(lock).value();
  if (!dir_exists) return Status::ok();
  ROMULUS_ASSIGN_OR_RETURN(const std::vector<std::string> names, fs_.list(dir_));
  if (std::find(names.begin(), names.end(), kMetaName) == names.end()) {
    // No image yet (or a crash during the very first write_base): only our
    // leftovers may be here.
    for (const std::string& name : names) {
      if (!is_our_file(name) && name != "lost+found" && !options_.force) {
        return Status::refused(fmt::format(
            "--data-dir {} is not empty and holds no Romulus image (it holds '{}'): point "
            "--data-dir at an empty directory",
            dir_, name));
      }
    }
    for (const std::string& name : names) {
      if (is_our_file(name) && name != kLockName) (void)fs_.remove(join_path(dir_, name));
    }
    return Status::ok();
  }

  ROMULUS_ASSIGN_OR_RETURN(const Bytes meta_bytes,
                           read_whole_file(fs_, join_path(dir_, kMetaName)));
  Result<ImageMeta> meta = decode_meta(meta_bytes);
  if (!meta.is_ok()) {
    const std::string what =
        fmt::format("--data-dir {}: its meta file is damaged ({})", dir_, meta.status().message());
    if (!options_.force) {
      return Status::corrupt(what +
                             ": restore the directory from a snapshot or start with an empty "
                             "one, or pass --force-data-dir to discard it at the next full sync");
    }
    notes_.push_back(what + "; --force-data-dir: the image is discarded");
    return Status::ok();
  }
  const bool other_pair =
      !meta->pair_id.empty() && !identity_.pair_id.empty() && meta->pair_id != identity_.pair_id;
  if (meta->page_count != identity_.page_count || other_pair) {
    const std::string what = fmt::format(
        "--data-dir {} holds a {}-page image of pair '{}'; this node's arena is {} pages of pair "
        "'{}'",
        dir_, meta->page_count, meta->pair_id, identity_.page_count, identity_.pair_id);
    if (!options_.force) {
      return Status::refused(
          what +
          ": point --data-dir at an empty directory, or pass --force-data-dir to "
          "replace that image at the next full sync");
    }
    notes_.push_back(what + "; --force-data-dir: that image is discarded");
    return Status::ok();
  }

  const std::string image_path = join_path(dir_, image_name(meta->image_generation));
  const uint64_t image_bytes = meta->page_count * kPageSize;
  Result<uint64_t> image_size = Status::io_error("missing");
  {
    Result<std::unique_ptr<File>> image = fs_.open(image_path, OpenMode::kRead);
    if (image.is_ok()) image_size = (*image)->size();
  }
  if (!image_size.is_ok() || *image_size != image_bytes) {
    const std::string what = fmt::format(
        "--data-dir {}: the base image {} is {} (expected {} bytes)", dir_, image_path,
        image_size.is_ok() ? fmt::format("{} bytes", *image_size) : image_size.status().message(),
        image_bytes);
    if (!options_.force) {
      return Status::corrupt(what +
                             ": restore the directory from a snapshot or start with an empty "
                             "one, or pass --force-data-dir to discard it at the next full sync");
    }
    notes_.push_back(what + "; --force-data-dir: the image is discarded");
    return Status::ok();
  }

  meta_ = std::move(*meta);
  has_base_ = true;
  appended_epoch_ = durable_epoch_ = meta_.base_epoch;
  remove_stale_files();
  // Whatever this directory shows now (a crashed process may have left
  // entries that were never synced) is durable from here on.
  ROMULUS_RETURN_IF_ERROR(fs_.sync_dir(dir_).context("--data-dir"));
  uint64_t epoch = meta_.base_epoch;
  LogScan folding;
  if (meta_.folding()) {
    // It was synced whole before meta named it: no tail of it may be torn.
    ROMULUS_RETURN_IF_ERROR(
        recover_log(meta_.folding_log_generation, epoch, /*tail_may_be_torn=*/false, &folding));
    if (folding.end <= kLogHeaderSize ||
        (meta_.checksums_after_fold() && folding.last_epoch != meta_.checked_epoch)) {
      return Status::corrupt(fmt::format(
          "--data-dir {}: a compaction up to epoch {} was interrupted but its log {} ends at "
          "epoch {}: restore the directory from a snapshot or from the peer",
          dir_, meta_.checked_epoch, log_name(meta_.folding_log_generation), folding.last_epoch));
    }
    epoch = folding.last_epoch;
  }
  LogScan current;
  ROMULUS_RETURN_IF_ERROR(
      recover_log(meta_.log_generation, epoch, /*tail_may_be_torn=*/true, &current));
  log_ = std::move(current.file);
  log_end_ = log_synced_end_ = current.end;
  log_base_epoch_ = epoch;
  appended_epoch_ = durable_epoch_ = current.last_epoch;
  stats_.log_records = current.records;
  if (meta_.folding()) {
    notes_.push_back(fmt::format("finished a compaction up to epoch {} that was interrupted",
                                 folding.last_epoch));
    compaction_running_ = true;
    std::unique_ptr<Compaction> job(
        new Compaction(fs_, dir_, meta_, folding.end, folding.last_epoch));
    folding.file.reset();
    (void)job->run();
    ROMULUS_RETURN_IF_ERROR(finish_compaction(std::move(job)));
  }
  return Status::ok();
}

namespace {

// Reads the record at `pos` of a log of `size` bytes, whole and verified.
Status read_record(File& log, uint64_t pos, uint64_t size, uint64_t arena_pages,
                   RecordHeader* header, Bytes& header_bytes, Bytes& body, RecordPages& pages) {
  if (size - pos < kRecordHeaderSize) return Status::truncated("record header cut short");
  header_bytes.resize(kRecordHeaderSize);
  ROMULUS_RETURN_IF_ERROR(log.pread(pos, header_bytes.data(), kRecordHeaderSize));
  ROMULUS_ASSIGN_OR_RETURN(*header, decode_record_header(header_bytes, arena_pages));
  if (size - pos < header->record_length()) {
    return Status::truncated(fmt::format("record of epoch {} cut short", header->epoch));
  }
  body.resize(header->body_length);
  ROMULUS_RETURN_IF_ERROR(log.pread(pos + kRecordHeaderSize, body.data(), body.size()));
  return decode_record_body(*header, header_bytes, body, arena_pages, pages);
}

// True if some whole, valid record starts after `from` and says that the log
// was durable beyond `committed_end` when it was written: then the damage at
// `from` hit bytes that had been synced, and is no torn tail.
Result<bool> durable_record_after(File& log, uint64_t from, uint64_t size, uint64_t committed_end,
                                  uint64_t arena_pages) {
  Bytes window, header_bytes, body;
  RecordPages pages;
  uint64_t window_start = 0;
  for (uint64_t p = from + 1; p + kRecordHeaderSize <= size; ++p) {
    if (window.empty() || p + kRecordHeaderSize > window_start + window.size()) {
      window_start = p;
      window.resize(std::min<uint64_t>(kIoBytes, size - p));
      ROMULUS_RETURN_IF_ERROR(log.pread(p, window.data(), window.size()));
    }
    const uint8_t* h = window.data() + (p - window_start);
    if (protocol::load_u32(h) != kRecordMagic) continue;
    Result<RecordHeader> header = decode_record_header(ByteSpan(h, kRecordHeaderSize), arena_pages);
    if (!header.is_ok() || header->durable_offset <= committed_end) continue;
    RecordHeader full;
    if (read_record(log, p, size, arena_pages, &full, header_bytes, body, pages).is_ok()) {
      return true;
    }
  }
  return false;
}

}  // namespace

Status DurableImage::recover_log(uint64_t generation, uint64_t base_epoch, bool tail_may_be_torn,
                                 LogScan* out) {
  out->last_epoch = base_epoch;
  const std::string name = log_name(generation);
  const std::string path = join_path(dir_, name);
  ROMULUS_ASSIGN_OR_RETURN(const bool exists, fs_.exists(path));
  if (!exists) return Status::ok();
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> log, fs_.open(path, OpenMode::kReadWrite));
  ROMULUS_ASSIGN_OR_RETURN(const uint64_t size, log->size());

  uint64_t committed_end = 0;  // end of the last whole checkpoint
  uint64_t committed_epoch = base_epoch;
  uint64_t records = 0;
  uint64_t pos = 0;
  bool bad = false, hard = false;
  std::string why;
  if (size > 0) {
    Bytes header(std::min<uint64_t>(size, kLogHeaderSize));
    ROMULUS_RETURN_IF_ERROR(log->pread(0, header.data(), header.size()));
    Result<LogHeader> h = decode_log_header(header);
    if (!h.is_ok()) {
      bad = true;
      why = h.status().message();
    } else if (h->generation != generation || h->base_epoch != base_epoch) {
      bad = hard = true;
      why = fmt::format("it continues epoch {} of generation {}, not this image's", h->base_epoch,
                        h->generation);
    } else {
      pos = committed_end = kLogHeaderSize;
    }
  }
  Bytes header_bytes, body;
  RecordPages pages;
  bool in_split = false;
  uint64_t split_epoch = 0;
  while (!bad && pos < size) {
    RecordHeader h;
    const Status st = read_record(*log, pos, size, meta_.page_count, &h, header_bytes, body, pages);
    if (!st.is_ok()) {
      if (st.code() == StatusCode::kIoError) return st.context("--data-dir: read the log");
      bad = true;
      why = st.message();
      break;
    }
    if (in_split ? h.epoch != split_epoch : h.epoch <= committed_epoch) {
      bad = hard = true;  // a whole, valid record out of place: not a torn write
      why = fmt::format("record of epoch {} follows epoch {}", h.epoch,
                        in_split ? split_epoch : committed_epoch);
      break;
    }
    pos += h.record_length();
    in_split = h.continued();
    split_epoch = h.epoch;
    if (!in_split) {
      committed_end = pos;
      committed_epoch = h.epoch;
      ++records;
    }
  }
  if (!bad && committed_end < size) {
    bad = true;
    why = "a checkpoint split over several records ends early";
  }
  if (bad) {
    const uint64_t at = pos;
    bool damaged = hard || !tail_may_be_torn;
    if (!damaged) {
      ROMULUS_ASSIGN_OR_RETURN(
          damaged, durable_record_after(*log, at, size, committed_end, meta_.page_count));
    }
    if (damaged) {
      const std::string what = fmt::format(
          "--data-dir {}: {} is damaged at byte {} after epoch {} ({}), and what follows was "
          "durable",
          dir_, name, at, committed_epoch, why);
      if (!options_.force) {
        return Status::corrupt(
            what + fmt::format(": restore the directory from a snapshot or from the "
                               "peer, or pass --force-data-dir to keep epochs up to {} and "
                               "drop the rest of the log",
                               committed_epoch));
      }
      notes_.push_back(what +
                       fmt::format("; --force-data-dir: kept epochs up to {}, dropped {} bytes",
                                   committed_epoch, size - committed_end));
    } else {
      notes_.push_back(fmt::format(
          "cut a torn tail of {} bytes after epoch {} from {} (written, never synced: {})",
          size - committed_end, committed_epoch, name, why));
    }
    ROMULUS_RETURN_IF_ERROR(log->truncate(committed_end).context("--data-dir: cut the log"));
  }
  // What a crashed process wrote and this one read is durable from here on.
  ROMULUS_RETURN_IF_ERROR(log->sync().context("--data-dir: sync the log"));
  out->file = std::move(log);
  out->end = committed_end;
  out->last_epoch = committed_epoch;
  out->records = records;
  return Status::ok();
}

namespace {

// Calls f(header, pages) for every record of `log` up to `end`, in order.
template <typename F>
Status for_each_record(File* log, uint64_t end, uint64_t page_count, const std::string& name,
                       F&& f) {
  if (log == nullptr || end <= kLogHeaderSize) return Status::ok();
  Bytes header_bytes, body;
  RecordPages pages;
  for (uint64_t pos = kLogHeaderSize; pos < end;) {
    RecordHeader h;
    const Status st = read_record(*log, pos, end, page_count, &h, header_bytes, body, pages);
    if (!st.is_ok()) {
      return st.context(
          fmt::format("{} at byte {} (it verified when the directory was opened)", name, pos));
    }
    ROMULUS_RETURN_IF_ERROR(f(h, pages));
    pos += h.record_length();
  }
  return Status::ok();
}

Status write_meta_file(FileSystem& fs, const std::string& dir, const ImageMeta& meta,
                       uint64_t* bytes_written) {
  const Bytes bytes = encode_meta(meta);
  ROMULUS_RETURN_IF_ERROR(
      write_file_atomically(fs, join_path(dir, kMetaName), bytes.data(), bytes.size()));
  *bytes_written += bytes.size();
  return Status::ok();
}

}  // namespace

Status DurableImage::check_usable() const { return failed_; }

Status DurableImage::finish_failed(Status st, const std::string& what) {
  failed_ = Status(st.code(),
                   fmt::format("--data-dir {}: {}: {}.{} Epoch {} is durable; the node must open "
                               "the directory again to go on",
                               dir_, what, st.message(), hint_for(st), durable_epoch_));
  return failed_;
}

Status DurableImage::write_meta(const ImageMeta& meta) {
  return write_meta_file(fs_, dir_, meta, &stats_.bytes_written);
}

uint64_t DurableImage::next_generation() {
  uint64_t generation =
      std::max({meta_.image_generation, meta_.log_generation, meta_.folding_log_generation});
  if (Result<std::vector<std::string>> names = fs_.list(dir_); names.is_ok()) {
    for (const std::string& name : *names) {
      uint64_t g = 0;
      if (parse_generation(name, "image.", &g) || parse_generation(name, "log.", &g)) {
        generation = std::max(generation, g);
      }
    }
  }
  return generation + 1;
}

void DurableImage::remove_stale_files() {
  Result<std::vector<std::string>> names = fs_.list(dir_);
  if (!names.is_ok()) return;
  for (const std::string& name : *names) {
    uint64_t g = 0;
    const bool stale = name == "meta.tmp" ||
                       (parse_generation(name, "image.", &g) && g != meta_.image_generation) ||
                       (parse_generation(name, "log.", &g) && g != meta_.log_generation &&
                        g != meta_.folding_log_generation);
    if (stale) (void)fs_.remove(join_path(dir_, name));  // unreferenced: a failure costs space only
  }
}

Status DurableImage::read_image(uint8_t* arena, size_t bytes) {
  ROMULUS_RETURN_IF_ERROR(check_usable());
  if (!has_base_) {
    return Status::invalid_argument(fmt::format("--data-dir {} holds no image", dir_));
  }
  if (compaction_running_) {
    return Status::invalid_argument("read_image: a compaction is under way");
  }
  if (bytes != meta_.page_count * kPageSize) {
    return Status::invalid_argument(
        fmt::format("read_image: {} bytes for an image of {} pages", bytes, meta_.page_count));
  }
  const std::string image_path = join_path(dir_, image_name(meta_.image_generation));
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> image, fs_.open(image_path, OpenMode::kRead));
  const size_t block_bytes = size_t{meta_.pages_per_block} * kPageSize;
  const size_t blocks_per_read = std::max<size_t>(1, kIoBytes / block_bytes);
  std::vector<uint64_t> bad;
  for (uint64_t b = 0; b < meta_.block_count(); b += blocks_per_read) {
    const uint64_t begin = b * block_bytes;
    const uint64_t end = std::min<uint64_t>(bytes, begin + blocks_per_read * block_bytes);
    ROMULUS_RETURN_IF_ERROR(
        image->pread(begin, arena + begin, end - begin).context("--data-dir: read the base image"));
    for (uint64_t off = begin, i = b; off < end; off += block_bytes, ++i) {
      const size_t n = std::min<uint64_t>(block_bytes, end - off);
      if (protocol::crc32c(ByteSpan(arena + off, n)) != meta_.block_crcs[i]) bad.push_back(i);
    }
  }
  if (!bad.empty()) {
    const std::string what = fmt::format(
        "--data-dir {}: {} of the {} blocks of {} fail their checksum (the first holds pages "
        "{} to {})",
        dir_, bad.size(), meta_.block_count(), image_name(meta_.image_generation),
        bad[0] * meta_.pages_per_block,
        std::min<uint64_t>(meta_.page_count, (bad[0] + 1) * meta_.pages_per_block) - 1);
    if (!options_.force) {
      return Status::corrupt(what +
                             ": restore the directory from a snapshot or from the peer, or "
                             "pass --force-data-dir to load the rest with those pages zeroed");
    }
    for (uint64_t i : bad) {
      const uint64_t off = i * block_bytes;
      std::memset(arena + off, 0, std::min<uint64_t>(block_bytes, bytes - off));
    }
    notes_.push_back(what + "; --force-data-dir: those pages were zeroed");
  }
  return for_each_record(log_.get(), log_end_, meta_.page_count, log_name(meta_.log_generation),
                         [&](const RecordHeader&, const RecordPages& r) {
                           for (size_t i = 0; i < r.pfns.size(); ++i) {
                             std::memcpy(arena + r.pfns[i] * kPageSize,
                                         r.pages.data() + i * kPageSize, kPageSize);
                           }
                           return Status::ok();
                         });
}

Status DurableImage::write_base(uint64_t epoch, const uint8_t* arena, size_t bytes) {
  ROMULUS_RETURN_IF_ERROR(check_usable());
  const uint64_t page_count = identity_.page_count;
  if (bytes != page_count * kPageSize) {
    return Status::invalid_argument(
        fmt::format("write_base: {} bytes for an arena of {} pages", bytes, page_count));
  }
  if (epoch == 0 || epoch <= appended_epoch_) {
    return Status::invalid_argument(fmt::format(
        "write_base: epoch {} is not after the image's epoch {}", epoch, appended_epoch_));
  }
  if (compaction_running_) {
    return Status::invalid_argument("write_base: a compaction is under way: finish it first");
  }
  const uint64_t generation = next_generation();  // no file of this directory has used it

  ImageMeta meta;
  meta.page_count = page_count;
  meta.pair_id = identity_.pair_id;
  meta.base_epoch = meta.checked_epoch = epoch;
  meta.image_generation = meta.log_generation = generation;
  meta.pages_per_block = options_.pages_per_block;
  const size_t block_bytes = size_t{meta.pages_per_block} * kPageSize;
  meta.block_crcs.resize(meta.block_count());
  for (uint64_t b = 0; b < meta.block_crcs.size(); ++b) {
    const uint64_t off = b * block_bytes;
    meta.block_crcs[b] =
        protocol::crc32c(ByteSpan(arena + off, std::min<uint64_t>(block_bytes, bytes - off)));
  }

  const std::string what = fmt::format("write a base image at epoch {}", epoch);
  const std::string path = join_path(dir_, image_name(generation));
  const Status written = [&]() -> Status {
    ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> image, fs_.open(path, OpenMode::kCreate));
    ROMULUS_RETURN_IF_ERROR(image->truncate(bytes));  // holes where pages stay zero
    uint64_t run = 0, run_pages = 0;
    auto flush = [&]() -> Status {
      if (run_pages == 0) return Status::ok();
      ROMULUS_RETURN_IF_ERROR(
          image->pwrite(run * kPageSize, arena + run * kPageSize, run_pages * kPageSize));
      stats_.bytes_written += run_pages * kPageSize;
      run_pages = 0;
      return Status::ok();
    };
    for (uint64_t pfn = 0; pfn < page_count; ++pfn) {
      if (is_zero_page(arena + pfn * kPageSize)) {
        ROMULUS_RETURN_IF_ERROR(flush());
        continue;
      }
      if (run_pages == 0) run = pfn;
      if (++run_pages == kIoPages) ROMULUS_RETURN_IF_ERROR(flush());
    }
    ROMULUS_RETURN_IF_ERROR(flush());
    ROMULUS_RETURN_IF_ERROR(image->sync());
    return fs_.sync_dir(dir_);
  }();
  if (!written.is_ok()) {
    (void)fs_.remove(path);  // never referenced by meta: only space is at stake
    return finish_failed(written, what);
  }
  if (const Status st = write_meta(meta); !st.is_ok()) return finish_failed(st, what);

  log_.reset();
  log_needs_dir_sync_ = false;
  meta_ = std::move(meta);
  has_base_ = true;
  log_end_ = log_synced_end_ = 0;
  log_base_epoch_ = epoch;
  appended_epoch_ = durable_epoch_ = epoch;
  stats_.log_records = 0;
  ++stats_.bases_written;
  remove_stale_files();
  return Status::ok();
}

Status DurableImage::open_log_for_append() {
  const std::string path = join_path(dir_, log_name(meta_.log_generation));
  ROMULUS_ASSIGN_OR_RETURN(const bool exists, fs_.exists(path));
  ROMULUS_ASSIGN_OR_RETURN(log_, fs_.open(path, exists ? OpenMode::kReadWrite : OpenMode::kCreate));
  log_needs_dir_sync_ = !exists;
  return Status::ok();
}

Status DurableImage::append(uint64_t epoch, std::span<const uint64_t> pfns, const uint8_t* pages) {
  ROMULUS_RETURN_IF_ERROR(check_usable());
  if (!has_base_) {
    return Status::invalid_argument(
        fmt::format("--data-dir {} holds no image to append to: write a base image first", dir_));
  }
  if (epoch <= appended_epoch_) {
    return Status::invalid_argument(
        fmt::format("append: epoch {} is not after epoch {}", epoch, appended_epoch_));
  }
  for (size_t i = 0; i < pfns.size(); ++i) {
    if (pfns[i] >= meta_.page_count || (i > 0 && pfns[i] <= pfns[i - 1])) {
      return Status::invalid_argument(fmt::format(
          "append: PFN {} out of order or past the arena's {} pages", pfns[i], meta_.page_count));
    }
  }
  Bytes out;
  if (log_end_ == 0) out = encode_log_header({meta_.log_generation, log_base_epoch_});
  size_t i = 0;
  do {
    const size_t n = std::min<size_t>(options_.record_pages, pfns.size() - i);
    encode_record(epoch, i + n < pfns.size(), pfns.subspan(i, n), pages + i * kPageSize,
                  log_synced_end_, options_.compress, out);
    i += n;
  } while (i < pfns.size());

  const std::string what = fmt::format("append epoch {} to the log", epoch);
  if (!log_) {
    if (const Status st = open_log_for_append(); !st.is_ok()) return finish_failed(st, what);
  }
  if (const Status st = log_->pwrite(log_end_, out.data(), out.size()); !st.is_ok()) {
    return finish_failed(st, what);
  }
  log_end_ += out.size();
  stats_.bytes_written += out.size();
  appended_epoch_ = epoch;
  ++stats_.log_records;
  ++stats_.checkpoints_appended;
  return Status::ok();
}

Status DurableImage::sync() {
  ROMULUS_RETURN_IF_ERROR(check_usable());
  if (log_end_ != log_synced_end_) {
    const std::string what = fmt::format("sync the log up to epoch {}", appended_epoch_);
    if (const Status st = log_->sync(); !st.is_ok()) return finish_failed(st, what);
    if (log_needs_dir_sync_) {
      if (const Status st = fs_.sync_dir(dir_); !st.is_ok()) return finish_failed(st, what);
      log_needs_dir_sync_ = false;
    }
    log_synced_end_ = log_end_;
    ++stats_.syncs;
  }
  durable_epoch_ = appended_epoch_;
  return Status::ok();
}

bool DurableImage::wants_compaction() const {
  return has_base_ && failed_.is_ok() && !compaction_running_ &&
         log_end_ >= options_.compact_log_bytes;
}

Result<std::unique_ptr<DurableImage::Compaction>> DurableImage::begin_compaction() {
  ROMULUS_RETURN_IF_ERROR(check_usable());
  if (compaction_running_) {
    return Status::invalid_argument("begin_compaction: a compaction is already under way");
  }
  if (!has_base_) return std::unique_ptr<Compaction>();
  ROMULUS_RETURN_IF_ERROR(sync());
  if (log_end_ <= kLogHeaderSize) return std::unique_ptr<Compaction>();
  const uint64_t target = appended_epoch_;
  // The log becomes the one being folded; checkpoints go to a new one.
  ImageMeta m = meta_;
  m.folding_log_generation = meta_.log_generation;
  m.log_generation = next_generation();
  if (const Status st = write_meta(m); !st.is_ok()) {
    return finish_failed(st, fmt::format("start a compaction up to epoch {}", target));
  }
  meta_ = std::move(m);
  const uint64_t folded_end = log_end_;
  log_.reset();
  log_end_ = log_synced_end_ = 0;
  log_base_epoch_ = target;
  log_needs_dir_sync_ = false;
  stats_.log_records = 0;
  compaction_running_ = true;
  return std::unique_ptr<Compaction>(new Compaction(fs_, dir_, meta_, folded_end, target));
}

Status DurableImage::finish_compaction(std::unique_ptr<Compaction> job) {
  if (job == nullptr || !compaction_running_) {
    return Status::invalid_argument("finish_compaction: no compaction is under way");
  }
  compaction_running_ = false;
  stats_.compaction_bytes_read += job->bytes_read_;
  stats_.bytes_written += job->bytes_written_;
  ROMULUS_RETURN_IF_ERROR(check_usable());
  const std::string what =
      fmt::format("compact the log into the base image at epoch {}", job->target_);
  if (!job->status_.is_ok()) return finish_failed(job->status_, what);
  ImageMeta m = meta_;
  m.base_epoch = m.checked_epoch = job->target_;
  m.folding_log_generation = 0;
  m.block_crcs = job->crcs_;
  if (const Status st = write_meta(m); !st.is_ok()) return finish_failed(st, what);
  const std::string folded = join_path(dir_, log_name(meta_.folding_log_generation));
  meta_ = std::move(m);
  ++stats_.compactions;
  (void)fs_.remove(folded);  // no longer referenced: a failure costs space only
  return Status::ok();
}

Status DurableImage::compact() {
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<Compaction> job, begin_compaction());
  if (job == nullptr) return Status::ok();
  (void)job->run();
  return finish_compaction(std::move(job));
}

DurableImage::Compaction::~Compaction() = default;

Status DurableImage::Compaction::run() {
  status_ = [&]() -> Status {
    const std::string log_file = log_name(meta_.folding_log_generation);
    ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> log,
                             fs_.open(join_path(dir_, log_file), OpenMode::kRead));

    // 1. The newest copy of every page the log changed.
    std::unordered_map<uint64_t, size_t> slot_of;
    Bytes newest;
    ROMULUS_RETURN_IF_ERROR(
        for_each_record(log.get(), log_end_, meta_.page_count, log_file,
                        [&](const RecordHeader&, const RecordPages& r) {
                          for (size_t i = 0; i < r.pfns.size(); ++i) {
                            auto [it, added] = slot_of.try_emplace(r.pfns[i], slot_of.size());
                            if (added) newest.resize(newest.size() + kPageSize);
                            std::memcpy(newest.data() + it->second * kPageSize,
                                        r.pages.data() + i * kPageSize, kPageSize);
                          }
                          return Status::ok();
                        }));
    bytes_read_ += log_end_;
    std::vector<uint64_t> pfns;
    pfns.reserve(slot_of.size());
    for (const auto& e : slot_of) pfns.push_back(e.first);
    std::sort(pfns.begin(), pfns.end());

    // 2. The checksums of the blocks those pages fall in, at the target. Each
    //    block read back is checked too: against the base's checksum before
    //    the pages go in, or (finishing an interrupted compaction, whose image
    //    may hold some of them already) against the target's after.
    const std::string image_file = image_name(meta_.image_generation);
    ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> image,
                             fs_.open(join_path(dir_, image_file), OpenMode::kReadWrite));
    const bool after = meta_.checksums_after_fold();
    std::vector<uint32_t> crcs = meta_.block_crcs;
    const uint64_t ppb = meta_.pages_per_block;
    Bytes block(ppb * kPageSize);
    for (size_t i = 0; i < pfns.size();) {
      const uint64_t b = pfns[i] / ppb;
      const uint64_t first = b * ppb;
      const size_t n = std::min<uint64_t>(ppb, meta_.page_count - first) * kPageSize;
      ROMULUS_RETURN_IF_ERROR(image->pread(first * kPageSize, block.data(), n));
      bytes_read_ += n;
      if (!after && protocol::crc32c(ByteSpan(block.data(), n)) != crcs[b]) {
        return Status::corrupt(fmt::format("block {} of {} fails its checksum", b, image_file));
      }
      for (; i < pfns.size() && pfns[i] / ppb == b; ++i) {
        std::memcpy(block.data() + (pfns[i] - first) * kPageSize,
                    newest.data() + slot_of[pfns[i]] * kPageSize, kPageSize);
      }
      crcs[b] = protocol::crc32c(ByteSpan(block.data(), n));
      if (after && crcs[b] != meta_.block_crcs[b]) {
        return Status::corrupt(
            fmt::format("block {} of {} does not verify after the log is replayed", b, image_file));
      }
    }

    // 3. meta says first that the image verifies at the target once the log is
    //    replayed, so a crash while the image changes in place recovers.
    if (!after) {
      ImageMeta m = meta_;
      m.checked_epoch = target_;
      m.block_crcs = crcs;
      ROMULUS_RETURN_IF_ERROR(write_meta_file(fs_, dir_, m, &bytes_written_));
    }

    // 4. The pages, in place, contiguous ones in one write.
    Bytes run;
    for (size_t i = 0; i < pfns.size();) {
      size_t j = i;
      run.clear();
      while (j < pfns.size() && pfns[j] == pfns[i] + (j - i) && j - i < kIoPages) {
        const uint8_t* p = newest.data() + slot_of[pfns[j]] * kPageSize;
        run.insert(run.end(), p, p + kPageSize);
        ++j;
      }
      ROMULUS_RETURN_IF_ERROR(image->pwrite(pfns[i] * kPageSize, run.data(), run.size()));
      bytes_written_ += run.size();
      i = j;
    }
    ROMULUS_RETURN_IF_ERROR(image->sync());
    crcs_ = std::move(crcs);
    return Status::ok();
  }();
  return status_;
}

DurableImage::Stats DurableImage::stats() const {
  Stats s = stats_;
  s.base_epoch = meta_.base_epoch;
  s.log_bytes = log_end_;
  return s;
}

}  // namespace romulus::storage
