// PrimaryNode: a protected guest and the stream that protects it.
//
// Owns everything a primary runs: the arena and control page, the guest
// process, the dirty tracker, the epoch engine, the connection to the backup
// (reconnecting after a loss, with a full live sync each time), the control
// socket and the periodic statistics line. A backup that takes over becomes a
// PrimaryNode over its committed image (resumed = true).
//
// Backup loss: kContinue keeps the guest running unprotected, says so, and
// keeps reconnecting; kStall keeps the guest paused until a backup is back.
//
// Threading: run() blocks the calling thread, which becomes the engine
// thread; an internal io thread runs Asio (sender, control socket, timers).
// request_stop() may be called from any thread or a signal-handling context
// via the stop flag.
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

#include "checkpoint/arena.h"
#include "checkpoint/stats.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/status.h"

namespace romulus::checkpoint {

enum class BackupLoss { kContinue, kStall };
enum class TrackerKind { kAuto, kUffd, kUffdSync, kCompare };  // see tracker_choice.h

struct PrimaryConfig {
  // Where the backup is; empty host = `--backup null` (black hole).
  std::string backup_host;
  uint16_t backup_port = 0;
  bool backup_null = false;
  std::chrono::microseconds interval{50'000};
  uint64_t memory_bytes = 256ull << 20;
  TrackerKind tracker = TrackerKind::kAuto;
  unsigned threads = 1;
  uint64_t staging_bytes = 64ull << 20;
  uint64_t cache_bytes = 64ull << 20;
  protocol::EncodeOptions encode;
  std::chrono::milliseconds heartbeat{50};
  std::chrono::milliseconds failover_timeout{500};
  std::chrono::milliseconds gate_timeout{2000};
  std::chrono::milliseconds stats_period{5000};
  BackupLoss on_backup_loss = BackupLoss::kContinue;
  std::string control_path;  // empty: no control socket
  // Output commit: clients connect here; empty host = no proxy.
  std::string service_host;
  uint16_t service_port = 0;
  bool output_buffering = true;  // false: --no-output-buffering (unsafe)
  std::vector<std::string> guest_command;
  // Set when this node is a backup that took over.
  std::optional<uint64_t> resumed_epoch;
  uint64_t session_id = 0;  // 0: pick a random one
};

// Everything a log line goes to; tests capture it.
using LogFn = std::function<void(const std::string&)>;

class PrimaryNode {
 public:
  PrimaryNode(PrimaryConfig config, LogFn log);
  ~PrimaryNode();

  // Takes over an existing arena (the backup's committed image) instead of
  // creating a fresh one. Call before run().
  void adopt_arena(SharedMemory arena);

  // Starts the guest and protects it until stop or a fatal error. Returns
  // OK on a requested stop; aborted with the exit description if the guest
  // exits or dies.
  Status run();
  void request_stop() { stop_.store(true); }
  // Called once on the run() thread when the guest has attached (a backup that
  // took over logs its failover time and runs --on-failover here).
  void set_on_started(std::function<void()> fn) { on_started_ = std::move(fn); }

  // Control-socket requests ("status", "status --json", "set NAME VALUE").
  std::string handle_control(const std::string& request);

  StatsSnapshot stats() const { return stats_.snapshot(); }
  std::string output_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PrimaryConfig config_;
  LogFn log_;
  StatsRecorder stats_;
  std::atomic<bool> stop_{false};
  std::function<void()> on_started_;
};

}  // namespace romulus::checkpoint
