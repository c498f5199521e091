#include "replica/local_log.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "common/enum_names.h"
#include "protocol/page.h"
#include "storage/durable_image.h"

namespace romulus::replica {
namespace {

// While send() waits for the disk, how often it looks again in case a wake-up
// was missed: a safety net, the writer's progress wakes it first.
constexpr std::chrono::milliseconds kBacklogRecheck{100};

}  // namespace

Result<std::unique_ptr<LocalLog>> LocalLog::open(LocalLogOptions options,
                                                 checkpoint::LocalLogHooks hooks) {
  if (!options.durable.enabled()) {
    return Status::invalid_argument("a local log needs --data-dir");
  }
  storage::FileSystem& fs = options.fs ? *options.fs : storage::posix_file_system();
  storage::DurableImage::Options image_options;
  image_options.force = options.durable.force;
  auto image = storage::DurableImage::open(
      fs, options.durable.data_dir, storage::ImageIdentity{options.page_count, options.pair_id},
      image_options);
  if (!image.is_ok()) {
    return image.status().context(
        fmt::format("opening --data-dir {} for this node's own log", options.durable.data_dir));
  }
  for (const std::string& note : (*image)->recovery_notes()) {
    if (options.log) options.log(fmt::format("--data-dir {}: {}", options.durable.data_dir, note));
  }
  std::unique_ptr<LocalLog> log(new LocalLog(std::move(options), std::move(hooks)));
  LocalLog* self = log.get();
  log->writer_ = std::make_unique<storage::DurableWriter>(
      std::move(image).value(), [self](uint64_t e) { self->on_durable(e); },
      [self](Status why) { self->on_disk_error(std::move(why)); });
  return log;
}

LocalLog::LocalLog(LocalLogOptions options, checkpoint::LocalLogHooks hooks)
    : options_(std::move(options)),
      hooks_(std::move(hooks)),
      replica_(options_.page_count),
      reader_(options_.page_count, this) {}

LocalLog::~LocalLog() { stop(); }

Status LocalLog::send(protocol::Bytes bytes) {
  if (failed_.load()) {
    // Nothing more is written or acknowledged: no use decoding it.
    recycle(std::move(bytes));
    return Status::ok();
  }
  wait_for_backlog();
  Status st = reader_.feed(bytes);
  recycle(std::move(bytes));
  if (!st.is_ok()) {
    replica_.abort_stream();
    return st.context("this node's own log could not verify the engine's stream");
  }
  return Status::ok();
}

void LocalLog::wait_for_backlog() {
  const uint64_t limit = options_.durable.max_backlog_bytes;
  if (writer_->queued_bytes() <= limit) return;
  if (!backlog_logged_ && options_.log) {
    options_.log(fmt::format(
        "this node's own log in --data-dir {} is {} MiB behind: checkpoints wait until half of "
        "it is written (is the disk slow?)",
        options_.durable.data_dir, writer_->queued_bytes() >> 20));
  }
  backlog_logged_ = true;
  std::unique_lock lock(mu_);
  while (writer_->queued_bytes() > limit / 2 && !failed_.load() && !stopped_) {
    written_.wait_for(lock, kBacklogRecheck);
  }
}

Status LocalLog::on_begin(uint64_t epoch, uint32_t flags) {
  return replica_.on_begin(epoch, flags);
}

protocol::MutablePageView LocalLog::page_for(uint64_t pfn, bool needs_current) {
  return replica_.page_for(pfn, needs_current);
}

Status LocalLog::on_end(uint64_t epoch, uint32_t page_count) {
  // As on a backup (backup_node.cc, PrimarySession::on_end): a consistent
  // checkpoint goes to disk as its pages, taken before it is applied; the one
  // that ends a full sync replaces the image whole, so it goes as a new base,
  // copied after it is applied. Pre-copy rounds are not states of the guest
  // and are neither written nor acknowledged.
  const bool consistent = replica_.in_consistent_unit() && replica_.ends_unit(epoch);
  const bool whole = replica_.unit_ends_sync();
  const bool write = consistent && !failed_.load();
  if (write && !whole) {
    CheckpointPages c = copy_unit_pages(replica_, epoch);
    writer_->submit_checkpoint(c.epoch, std::move(c.pfns), std::move(c.pages));
  }
  ROMULUS_RETURN_IF_ERROR(replica_.on_end(epoch, page_count));
  if (!write) return Status::ok();
  if (whole) {
    const common::SharedMemory& image = replica_.committed_image();
    base_epoch_.store(epoch);
    writer_->submit_base(epoch, storage::ArenaView::copy_of(image.data(), image.size()));
  }
  if (!acks_wait_for_disk()) {
    lag_warning_.note(
        epoch, writer_->durable_epoch(), options_.durable,
        options_.log ? options_.log : [](const std::string&) {});
    deliver_ack(epoch);
  }
  return Status::ok();
}

void LocalLog::on_durable(uint64_t epoch) {
  if (acks_wait_for_disk() && !failed_.load()) deliver_ack(epoch);
  std::lock_guard lock(mu_);
  written_.notify_all();
}

void LocalLog::on_disk_error(Status why) {
  std::string line = disk_failure_text(options_.durable, why, writer_->durable_epoch());
  line += acks_wait_for_disk()
              ? "; this node acknowledges nothing more from its own log (--durable sync): output "
                "stays held until a backup acknowledges it; fix the disk and restart the node"
              : "; the guest runs UNPROTECTED (--durable async: no copy of it is kept)";
  failed_.store(true);
  {
    std::lock_guard lock(mu_);
    error_ = line;
    written_.notify_all();
  }
  if (hooks_.on_disk_error) hooks_.on_disk_error(line);
}

void LocalLog::deliver_ack(uint64_t epoch) {
  std::lock_guard lock(ack_mu_);
  if (epoch <= acked_.load()) return;
  if (!first_ack_done_) {
    if (hooks_.before_first_ack) {
      Status st = hooks_.before_first_ack(base_epoch_.load());
      if (!st.is_ok()) {
        acks_held_.store(true);  // asked again at the next ACK
        return;
      }
    }
    first_ack_done_ = true;
    acks_held_.store(false);
  }
  acked_.store(epoch);
  if (hooks_.on_ack) hooks_.on_ack(epoch);
}

void LocalLog::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    written_.notify_all();
  }
  // Writes and syncs what is queued; its on_durable (and so its ACKs) comes
  // before this returns. The directory is closed after it.
  if (writer_) writer_->stop();
}

checkpoint::LocalLogReport LocalLog::report(std::chrono::steady_clock::time_point now) const {
  checkpoint::LocalLogReport r;
  r.data_dir = options_.durable.data_dir;
  r.mode = std::string(enum_name(storage::kDurableModeNames, options_.durable.mode));
  r.base_epoch = base_epoch_.load();
  if (writer_) {
    r.durable_epoch = writer_->durable_epoch();
    r.submitted_epoch = writer_->submitted_epoch();
    const storage::DurableWriter::Lag lag = writer_->lag(now);
    r.lag_epochs = lag.epochs;
    r.lag_ms = std::chrono::duration<double, std::milli>(lag.age).count();
  }
  {
    std::lock_guard lock(mu_);
    r.error = error_;
  }
  r.acked_epoch = acked_.load();
  r.acks_held = acks_held_.load() || (!r.error.empty() && acks_wait_for_disk());
  return r;
}

checkpoint::LocalLogFactory local_log_factory(LocalLogOptions options) {
  return [options = std::move(options)](checkpoint::LocalLogHooks hooks)
             -> Result<std::unique_ptr<checkpoint::LocalLogTransport>> {
    ROMULUS_ASSIGN_OR_RETURN(auto log, LocalLog::open(options, std::move(hooks)));
    return std::unique_ptr<checkpoint::LocalLogTransport>(std::move(log));
  };
}

}  // namespace romulus::replica
