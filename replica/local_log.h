// LocalLog: the primary's own durable log, for while no backup holds its
// checkpoints (checkpoint/local_log_transport.h; docs/design.md, "The durable
// image").
//
// A CheckpointTransport that is a backup in the same process: the engine's
// byte stream goes through a protocol::CheckpointReader into a ReplicaState,
// exactly as on a backup (structure and CRC verified, each consistent
// checkpoint committed whole), and what ReplicaState commits is handed to a
// storage::DurableWriter on the node's --data-dir: the stream's first
// consistent checkpoint (the end of its full sync) as a new base, a copy of
// the whole image; each later one as its pages (replica/durable_checkpoints.h,
// shared with the backup).
//
// Acknowledgements all leave through one function, deliver_ack(): under
// `--durable sync` an epoch is acknowledged once the writer reports it durable
// (group commit: one fdatasync covers every checkpoint queued meanwhile);
// under `async` once ReplicaState committed it. Before the first ACK of the
// stream, LocalLogHooks::before_first_ack is asked; while it refuses, ACKs are
// held. After a writer error nothing more is acknowledged or decoded (the
// owner decides: hold output under `sync`, go on unprotected under `async`).
//
// Memory: a second image of the arena (ReplicaState's committed image; during
// the full sync also its sync image), a copy of the whole image while the new
// base is written, and at most --disk-backlog of checkpoint pages waiting for
// the disk: above that, send() blocks (the engine is held back, as a backup
// holds its primary back by not reading) until half of them are written.
//
// The directory is opened by open() and closed by stop() (or the
// destructor); nothing else may hold it then (its LOCK says "in use").
//
// Threading: send()/flush()/end_of_checkpoint() on the engine thread; stop()
// by the owner, after the engine stopped sending; report() from any thread.
// The hooks are called from the engine thread (async) or the writer's (sync),
// one call at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "checkpoint/local_log_transport.h"
#include "protocol/checkpoint_reader.h"
#include "replica/durable_checkpoints.h"
#include "replica/replica_state.h"
#include "storage/durable_settings.h"
#include "storage/durable_writer.h"
#include "storage/file_system.h"

namespace romulus::replica {

struct LocalLogOptions {
  storage::DurableSettings durable;   // --data-dir (required), --durable, --disk-backlog
  uint64_t page_count = 0;            // the arena's
  std::string pair_id;                // names the pair in the directory (the witness's --pair)
  storage::FileSystem* fs = nullptr;  // nullptr: the real one (tests: a fault-injecting one)
  std::function<void(const std::string&)> log;
};

class LocalLog final : public checkpoint::LocalLogTransport, private protocol::CheckpointSink {
 public:
  // Opens --data-dir (what a previous writer left there stays until this
  // stream's first consistent checkpoint replaces it as the new base).
  static Result<std::unique_ptr<LocalLog>> open(LocalLogOptions options,
                                                checkpoint::LocalLogHooks hooks);
  ~LocalLog() override;
  LocalLog(const LocalLog&) = delete;
  LocalLog& operator=(const LocalLog&) = delete;

  // checkpoint::CheckpointTransport. send() fails only on a stream that does
  // not verify (a bug: the engine made it).
  Status send(protocol::Bytes bytes) override;
  Status flush() override { return Status::ok(); }
  void end_of_checkpoint(uint64_t /*epoch*/) override {}

  // checkpoint::LocalLogTransport.
  void stop() override;
  checkpoint::LocalLogReport report(std::chrono::steady_clock::time_point now) const override;

  // The image as committed in memory (tests; the engine thread, or after stop()).
  const ReplicaState& replica() const { return replica_; }

 private:
  LocalLog(LocalLogOptions options, checkpoint::LocalLogHooks hooks);

  // protocol::CheckpointSink: ReplicaState's, with the writes to disk and the
  // ACKs of consistent checkpoints around on_end().
  Status on_begin(uint64_t epoch, uint32_t flags) override;
  protocol::MutablePageView page_for(uint64_t pfn, bool needs_current) override;
  Status on_end(uint64_t epoch, uint32_t page_count) override;

  void on_durable(uint64_t epoch);  // the writer's thread
  void on_disk_error(Status why);   // the writer's thread
  bool acks_wait_for_disk() const { return options_.durable.mode == storage::DurableMode::kSync; }
  // The one way ACKs leave (any thread; serialised by ack_mu_).
  void deliver_ack(uint64_t epoch);
  // Blocks while more than --disk-backlog waits for the disk.
  void wait_for_backlog();

  const LocalLogOptions options_;
  const checkpoint::LocalLogHooks hooks_;
  ReplicaState replica_;
  protocol::CheckpointReader reader_;
  std::unique_ptr<storage::DurableWriter> writer_;
  LagWarning lag_warning_;               // the engine thread's
  bool backlog_logged_ = false;          // the engine thread's
  std::atomic<bool> failed_{false};      // the writer failed: nothing more is written or acked
  std::atomic<uint64_t> base_epoch_{0};  // the stream's first consistent checkpoint

  mutable std::mutex mu_;            // guards the fields below
  std::condition_variable written_;  // the writer made progress (or failed)
  std::string error_;
  bool stopped_ = false;

  // One ACK at a time (the hooks are called with it held). report() reads
  // the atomics without it: the primary asks for a report with its own lock
  // held, which on_ack takes.
  std::mutex ack_mu_;
  bool first_ack_done_ = false;  // ack_mu_
  std::atomic<uint64_t> acked_{0};
  std::atomic<bool> acks_held_{false};  // before_first_ack refused the last time it was asked
};

// The factory a primary gets (PrimaryConfig::local_log): a LocalLog per
// stream over `options`.
checkpoint::LocalLogFactory local_log_factory(LocalLogOptions options);

}  // namespace romulus::replica
