// DurableImage: the committed image of a guest's arena, kept on disk in a data
// directory so that it survives the loss of the node (docs/design.md, "The
// durable image").
//
// A directory holds a base image (image.<g>: the arena at the base epoch,
// sparse), an append-only log of checkpoints after it (log.<l>, records in
// log_format.h) and a small `meta` (image_meta.h) naming both, replaced
// atomically. Writing a checkpoint costs its pages (one record appended);
// compaction folds the log into the base image in place; write_base()
// replaces the base after a full sync. A crash at any step recovers, at
// open(), to one committed epoch no older than the last one sync() reported
// durable.
//
//   open()  -> [read_image()] -> { append()* sync() }* with a compaction when
//              wants_compaction(), write_base() after a full sync
//
// A compaction need not stop the appends: begin_compaction() (owner thread)
// switches appends to a new log and returns a Compaction, whose run() folds
// the old log into the image on any thread while the owner goes on appending
// and syncing; finish_compaction() (owner thread) then makes the folded image
// the base. compact() does all three in a row.
//
// Nothing durable is lost on an error: any failed write or sync makes the
// object refuse every later call with that error (a failed fdatasync may have
// dropped pages the kernel then marks clean, so it is never retried); open
// the directory again to go on from what is durable.
//
// Verification: read_image() checks every block of the base image against its
// CRC32C from meta as it reads it, and every log record against its own, and
// refuses an image that does not verify unless Options::force, which drops
// what fails (zeroes a block, cuts the log before a damaged record) and says
// so in recovery_notes().
//
// Not thread-safe: one owner thread (DurableWriter's, or the caller's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/file_system.h"
#include "storage/image_meta.h"

namespace romulus::storage {

// Whose image a data directory holds. pair_id is opaque and may be empty
// (unknown): two non-empty ids that differ refuse the directory.
struct ImageIdentity {
  uint64_t page_count = 0;
  std::string pair_id;
};

class DurableImage {
 public:
  struct Options {
    // Accept a directory that does not verify, or belongs to another pair or
    // arena size: use what verifies, drop the rest, and say what was dropped
    // in recovery_notes(). Off: refuse with one line saying what to do.
    bool force = false;
    // wants_compaction() once the log holds this many bytes.
    uint64_t compact_log_bytes = uint64_t{64} << 20;
    // Compress log records with LZ4 when that saves at least an eighth.
    bool compress = true;
    // Pages per checksummed block of the base image (64 KiB blocks): what a
    // compaction reads back for each block it touches.
    uint32_t pages_per_block = 16;
    // Pages per log record, at most kMaxRecordPages: a larger checkpoint is
    // split over several records, and counts only once all are whole.
    uint32_t record_pages = 16384;
  };

  struct Stats {
    uint64_t base_epoch = 0;
    uint64_t log_bytes = 0;    // current log, header included
    uint64_t log_records = 0;  // records in the current log
    uint64_t checkpoints_appended = 0;
    uint64_t syncs = 0;  // fdatasync calls of the log
    uint64_t compactions = 0;
    uint64_t bases_written = 0;
    uint64_t bytes_written = 0;  // to any file, since open
    uint64_t compaction_bytes_read = 0;
  };

  // Opens (creating it if needed) the data directory `dir` for an arena of
  // identity.page_count pages, recovers the newest durable epoch (cutting a
  // torn log tail) and finishes an interrupted compaction. An empty directory
  // gives epoch() == 0. Errors: a directory of another pair or arena size, a
  // damaged meta or log, a directory holding other files, a directory in use
  // (locked by another DurableImage, in this process or another); each one line.
  static Result<std::unique_ptr<DurableImage>> open(FileSystem& fs, const std::string& dir,
                                                    const ImageIdentity& identity, Options options);
  static Result<std::unique_ptr<DurableImage>> open(FileSystem& fs, const std::string& dir,
                                                    const ImageIdentity& identity) {
    return open(fs, dir, identity, Options());
  }

  DurableImage(const DurableImage&) = delete;
  DurableImage& operator=(const DurableImage&) = delete;
  ~DurableImage();

  // The newest durable epoch: recovered at open, or written since; 0 = no image.
  uint64_t epoch() const { return durable_epoch_; }
  uint64_t durable_epoch() const { return durable_epoch_; }
  // The newest epoch appended (durable or not).
  uint64_t appended_epoch() const { return appended_epoch_; }
  bool has_image() const { return has_base_; }

  // Fills `arena` (bytes == page_count * 4096) with the image at
  // appended_epoch(), verified; else an error naming what does not verify.
  Status read_image(uint8_t* arena, size_t bytes);

  // Replaces the image with `arena` at `epoch` (> appended_epoch()), durable on
  // return. All-zero pages are not written (the file is sparse). Starts a new log.
  Status write_base(uint64_t epoch, const uint8_t* arena, size_t bytes);

  // Appends one checkpoint: its pages (pfns strictly increasing, below
  // page_count; pfns.size() * 4096 bytes at `pages`) at `epoch` (>
  // appended_epoch()). Durable after the next sync(). Needs an image.
  Status append(uint64_t epoch, std::span<const uint64_t> pfns, const uint8_t* pages);

  // One fdatasync of the log: every append before it is durable on return.
  Status sync();

  class Compaction;
  // Syncs, switches appends to a new log, and returns the job that folds the
  // old one into the image (nullptr if the log holds nothing to fold). Until
  // finish_compaction(), write_base(), read_image() and another compaction
  // are refused; append() and sync() go on.
  Result<std::unique_ptr<Compaction>> begin_compaction();
  // After job->run() returned (on whatever thread): makes the folded image the
  // base, or, if the run failed, fails this object with its error.
  Status finish_compaction(std::unique_ptr<Compaction> job);
  bool compaction_running() const { return compaction_running_; }
  // begin_compaction(), run(), finish_compaction(). A crash at any step of
  // any of them recovers to durable_epoch().
  Status compact();
  // The log has passed Options::compact_log_bytes and no compaction runs.
  bool wants_compaction() const;

  Stats stats() const;
  // What recovery did, one line each (a cut torn tail, what force dropped).
  const std::vector<std::string>& recovery_notes() const { return notes_; }
  const std::string& dir() const { return dir_; }
  const ImageIdentity& identity() const { return identity_; }

 private:
  DurableImage(FileSystem& fs, std::string dir, ImageIdentity identity, Options options);

  struct LogScan;
  Status recover();
  // Scans log.<generation>, which must continue `base_epoch`: finds its whole
  // records, cuts a torn tail if `tail_may_be_torn`, refuses damage.
  Status recover_log(uint64_t generation, uint64_t base_epoch, bool tail_may_be_torn, LogScan* out);
  Status open_log_for_append();
  uint64_t next_generation();
  Status finish_failed(Status st, const std::string& what);
  Status check_usable() const;
  Status write_meta(const ImageMeta& meta);
  void remove_stale_files();

  FileSystem& fs_;
  const std::string dir_;
  const ImageIdentity identity_;
  const Options options_;
  std::unique_ptr<FileLock> lock_;  // on dir/LOCK, for the object's life

  bool has_base_ = false;
  ImageMeta meta_;
  std::unique_ptr<File> log_;
  uint64_t log_base_epoch_ = 0;  // the epoch the current log continues
  bool log_needs_dir_sync_ = false;
  bool compaction_running_ = false;
  uint64_t log_end_ = 0;         // bytes of whole records (and header) in the log
  uint64_t log_synced_end_ = 0;  // of which durable
  uint64_t appended_epoch_ = 0;
  uint64_t durable_epoch_ = 0;
  Status failed_;  // sticky
  std::vector<std::string> notes_;
  Stats stats_;
};

// One compaction's fold of a log into the base image (begin_compaction()):
// reads the log and the image blocks it touches, writes meta with the
// checksums the image will have, writes the pages in place and syncs. It
// holds its own files and copies, so run() may be called on any thread while
// the DurableImage's owner goes on appending.
class DurableImage::Compaction {
 public:
  Compaction(const Compaction&) = delete;
  Compaction& operator=(const Compaction&) = delete;
  ~Compaction();
  // Once; from any thread. Returns the error finish_compaction() will report.
  Status run();
  uint64_t target_epoch() const { return target_; }

 private:
  friend class DurableImage;
  Compaction(FileSystem& fs, std::string dir, ImageMeta meta, uint64_t log_end, uint64_t target)
      : fs_(fs), dir_(std::move(dir)), meta_(std::move(meta)), log_end_(log_end), target_(target) {}

  FileSystem& fs_;
  const std::string dir_;
  ImageMeta meta_;  // as on disk when the run starts (folding_log_generation: the log to fold)
  const uint64_t log_end_;
  const uint64_t target_;
  std::vector<uint32_t> crcs_;  // the image's checksums at target_, once run
  Status status_ = Status::aborted("compaction never ran");
  uint64_t bytes_read_ = 0;
  uint64_t bytes_written_ = 0;
};

}  // namespace romulus::storage
