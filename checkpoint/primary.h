// PrimaryNode: a protected guest and the stream that protects it.
//
// Owns everything a primary runs: the arena and control page, the guest
// process, the dirty tracker, the epoch engine, the output proxy, the
// connection to the backup (reconnecting after a loss, with a full live sync
// each time, paced by ReconnectPolicy) and the periodic statistics line. A
// backup that takes over becomes a PrimaryNode over its committed image
// (resumed = true). The control socket belongs to the process (it outlives
// roles): it calls handle_control().
//
// The role's state is a PrimaryState (checkpoint/primary_state.h), changed
// only through its StateMachine.
//
// Backup loss: kContinue keeps the guest running unprotected, says so, and
// keeps reconnecting; kStall keeps the guest paused until a backup is back.
// With --data-dir (PrimaryConfig::local_log set), kContinue protects to this
// node's own durable log instead (checkpoint/local_log_transport.h; state
// protected_locally) while it keeps trying the backup on another thread, and
// goes back to the backup, with a full sync, once one connects.
// Giving up on a backup that may be alive (it fell silent, or `set backup`
// named another) sends it DROPPED, so it does not take over.
//
// Threading: run() blocks the calling thread, which becomes the engine
// thread; an internal io thread runs Asio (sender, proxy, timers).
// request_stop() and handle_control() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "checkpoint/commit_trigger.h"
#include "checkpoint/engine_settings.h"
#include "checkpoint/local_log_transport.h"
#include "checkpoint/primary_metrics.h"
#include "checkpoint/primary_state.h"
#include "checkpoint/reconnect_policy.h"
#include "checkpoint/stats.h"
#include "checkpoint/tracker_kind.h"
#include "common/endpoint.h"
#include "common/enum_names.h"
#include "common/shared_memory.h"
#include "common/status.h"
#include "common/stop_signal.h"
#include "common/tls.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/pair_defaults.h"
#include "storage/durable_settings.h"

namespace romulus::checkpoint {

enum class BackupLoss : uint8_t { kContinue, kStall };
// The names of --on-backup-loss and `set on-backup-loss`.
inline constexpr EnumName<BackupLoss> kBackupLossNames[] = {{BackupLoss::kContinue, "continue"},
                                                            {BackupLoss::kStall, "stall"}};
struct Measurements;     // tracker_choice.h
struct TrackerDecision;  // tracker_choice.h

struct PrimaryConfig {
  // Where the backup is; none with `--backup null` (black hole), or for a
  // backup that took over without --reprotect.
  std::optional<common::Endpoint> backup;
  bool backup_null = false;
  // The checkpoints: interval, commit mode, codec, threads, buffers (given to
  // the engine as they are).
  EngineSettings engine;
  uint64_t memory_bytes = protocol::kDefaultArenaBytes;
  TrackerKind tracker = TrackerKind::kAuto;
  std::chrono::milliseconds heartbeat = protocol::kDefaultHeartbeat;
  std::chrono::milliseconds failover_timeout = protocol::kDefaultFailoverTimeout;
  std::chrono::milliseconds stats_period{5000};
  BackupLoss on_backup_loss = BackupLoss::kContinue;
  // Output commit: clients connect here; none = no proxy.
  std::optional<common::Endpoint> service;
  bool output_buffering = true;  // false: --no-output-buffering (unsafe)
  // The proxy's session threads (OutputProxyOptions::io_threads); 0: the
  // sessions run on the io thread that reads the backup's acks, so a reply
  // leaves on the thread that learns of its ack (docs/performance.md).
  unsigned proxy_threads = 0;
  std::vector<std::string> guest_command;
  // Set when this node is a backup that took over.
  std::optional<uint64_t> resumed_epoch;
  uint64_t session_id = 0;  // 0: pick a random one
  // The replication link: mutual TLS with this identity (nullptr: plaintext,
  // to a loopback backup only unless `insecure`). See common/tls.h.
  std::shared_ptr<common::TlsIdentity> tls;
  bool insecure = false;
  // The tracker-choice costs (tracker_choice.h), measured earlier on this
  // machine: a backup measures them while it waits, so that a takeover does
  // not spend ~30 ms on them before the guest runs. nullptr: measured at start.
  std::shared_ptr<const Measurements> tracker_costs;
  // The node's durable image (--data-dir, --durable; both roles): the backup
  // writes every committed checkpoint there; a primary started fresh reads its
  // own and compares it with its backup's before the guest runs
  // (replica/takeover.cc, docs/design.md "The durable image").
  storage::DurableSettings durable;
  // With --data-dir: opens this node's own durable log, which the primary
  // protects to while no backup can be (unreachable, lost, refused, none
  // configured) under --on-backup-loss continue. Set by replica/takeover.cc;
  // empty: the guest runs unprotected then, as without a data directory.
  LocalLogFactory local_log;
  // --from-snapshot FILE (storage/snapshot_file.h): a fresh primary's guest
  // starts from that image, at its epoch, instead of an empty arena.
  std::optional<std::string> from_snapshot;
  // --vm: guest_command is a QEMU command line; the guest is that virtual
  // machine, its RAM in the arena (checkpoint/vm_guest.h).
  bool vm = false;
  // With resumed_epoch, for a VM: the committed device state to load.
  std::optional<std::vector<uint8_t>> resumed_device_state;
};

// Everything a log line goes to; tests capture it.
using LogFn = std::function<void(const std::string&)>;

// The pair's ownership as a primary needs it (docs/design.md, "Ownership").
// Implemented over the witness by replica/takeover.cc; absent without
// --witness (then this node acts as the owner). Thread-safe, cheap: asked on
// every release of output.
class Ownership {
 public:
  using Clock = std::chrono::steady_clock;
  virtual ~Ownership() = default;
  // Rule 1: may output leave now? `acked`: its checkpoint was acknowledged by
  // the backup (a backup that acknowledges has not taken over).
  virtual bool may_release(Clock::time_point now, bool acked) const = 0;
  // May this node run the guest unprotected now (it owns the pair, lease valid
  // by its own conservative clock)? Rule 2: if not, it fences.
  virtual bool may_run(Clock::time_point now) const = 0;
  // The lease deadline by this node's clock, when it owns the pair.
  virtual std::optional<Clock::time_point> deadline() const = 0;
  // Why this node may not run, for the FENCED log line.
  virtual std::string why_not() const = 0;
  // For `status --json`: state, owner, deadline and remaining time.
  virtual boost::json::object status(Clock::time_point now) const = 0;
  // Before output leaves unprotected (no backup holds it): records in the
  // witness that this node serves what no backup has, so that no backup
  // takes over from an older image until it is cleared. Blocks for at most
  // one witness call; an error means: do not release unprotected output.
  virtual Status record_unprotected() = 0;
  // A backup holds the guest's state again: clears that record (in the
  // background, retried until it succeeds).
  virtual void record_protected() = 0;
  // Before the first ACK from this node's own log (--data-dir, no backup):
  // records in the witness that this node holds the pair's newest durable
  // image from `base_epoch` on (docs/design.md, "The durable image"). Blocks
  // for at most one witness call; an error means: acknowledge nothing yet.
  virtual Status record_image(uint64_t base_epoch) = 0;
  // A requested stop, once no output leaves any more: gives the pair up at
  // the witness (the owner key is deleted and the lease revoked), so the
  // backup may take over at once. Blocks for the witness calls (bounded by
  // the client's deadline). Final: this node owns nothing afterwards. An
  // error means the lease could not be given up; it then expires by itself.
  virtual Status give_up() = 0;
};

class PrimaryNode {
 public:
  PrimaryNode(PrimaryConfig config, LogFn log);
  ~PrimaryNode();

  // Takes over an existing arena (the backup's committed image) instead of
  // creating a fresh one. Call before run().
  void adopt_arena(common::SharedMemory arena);

  // Starts the guest and protects it until stop or a fatal error. Returns
  // OK on a requested stop; aborted with the exit description if the guest
  // exits or dies.
  Status run();
  void request_stop();
  // Called once on the run() thread when the guest has attached (a backup that
  // took over logs its failover time and runs --on-failover here).
  void set_on_started(std::function<void()> fn) { on_started_ = std::move(fn); }

  // Control-socket requests ("status", "status --json", "set NAME VALUE").
  std::string handle_control(const std::string& request);
  // `set on-backup-loss` and `set backup` (run_time_settings.h); any thread.
  void set_on_backup_loss(BackupLoss policy);
  // Protects to `backup` from now on: the current one is dropped (DROPPED, so
  // it does not take over) and the link reconnects.
  void set_backup(const common::Endpoint& backup);
  // The members of `status --json` (what handle_control("status") replies
  // with): role, state, peer, settings, statistics, output, witness.
  boost::json::object status();

  // The pair's ownership (nullptr: none, this node owns). Call before run().
  void set_ownership(Ownership* ownership) { ownership_ = ownership; }
  // Ownership changed (any thread): re-evaluate fencing, release what waited.
  void ownership_changed();
  // Another node owns the pair (rule 4): stop the guest, dropping what it
  // has not had acknowledged, and return from run(); demoted() is then true.
  void demote(std::string why);
  bool demoted() const { return demoted_.load(); }

  // The figures --metrics serves (checkpoint/primary_metrics.h). Any thread;
  // takes no lock the engine holds for more than a counter update.
  PrimaryMetrics metrics() const;

  StatsSnapshot stats() const { return stats_.snapshot(); }
  PrimaryState state() const { return state_.state(); }
  // Hears every change of state (on the thread that made it). Call before run().
  void set_on_state_change(std::function<void(PrimaryState)> fn) {
    state_.set_observer([fn = std::move(fn)](PrimaryState, PrimaryState to) { fn(to); });
  }

 private:
  struct Impl;
  // Steps of run().
  Status start_guest();
  Status start_vm();
  // The tracker costs (PrimaryConfig::tracker_costs, or measured now), and
  // the tracker they and --tracker choose: logged, and kept in impl_.
  Measurements tracker_costs() const;
  // two_uffds: the guest can hold both userfaultfds (ArenaFacts::two_uffds).
  Result<TrackerDecision> decide_tracker(const Measurements& costs, bool two_uffds);
  Status start_engine();
  Status start_services();
  Status protect();
  // Stops output, the stream and the guest. `result` is run()'s: only a
  // requested stop (OK) says GOODBYE, or with a witness gives the lease up
  // and says HANDOVER; a failure closes the stream without a word, so the
  // backup takes over as from a crash.
  void shut_down(const Status& result);
  // One connection to the backup, from handshake to loss. Returns OK when the
  // loop should go on (the backup was lost), an error to end run().
  Status protect_with(const common::Endpoint& backup, ReconnectPolicy& policy);
  // A connected backup, handshake done, its stream not started yet.
  struct Connection;
  // Connects to `backup` (any thread: blocks for the handshake).
  Result<Connection> connect_backup(const common::Endpoint& backup);
  // Runs the stream to a connected backup, from its full sync to its loss.
  Status run_stream(Connection c, ReconnectPolicy& policy);
  // The backup acknowledged its sync's first checkpoint (impl's mu held);
  // true if that made the node protected. Then the line that says so.
  bool enter_protected();
  void log_protected(const std::string& peer, uint64_t epoch);
  // An ACK, from the backup or this node's own log (any thread).
  void record_ack(uint64_t epoch);
  // Whether a backup loss now means protecting to this node's own log.
  bool protects_locally(BackupLoss policy) const;
  // Protects to this node's own log (config_.local_log) until a backup
  // connects (it is left in `handoff`), a stop, a fence, or a disk error
  // under --durable async. `why`: why there is no backup, for the one log
  // line; `refused`: the backup refused this node (retried less often).
  // Returns an error to end run().
  Status protect_locally(const std::string& why, bool refused, ReconnectPolicy& policy,
                         std::unique_ptr<Connection>& handoff);
  std::optional<Status> guest_gone();
  void go_unprotected(BackupLoss policy);
  std::string set(const std::string& name, const std::string& value);
  // Rule 2: while this node may not run unprotected, hold the guest.
  // Returns an error to end run() (the guest exited).
  Status wait_while_fenced();
  void log_release_interval();
  boost::json::object output_json() const;

  std::unique_ptr<Impl> impl_;
  PrimaryConfig config_;
  LogFn log_;
  StatsRecorder stats_;
  common::StopSignal stop_;
  common::StateMachine<PrimaryState> state_;
  std::function<void()> on_started_;
  Ownership* ownership_ = nullptr;
  std::atomic<bool> demoted_{false};
  std::string demote_reason_;  // written before demoted_ is set
};

}  // namespace romulus::checkpoint
