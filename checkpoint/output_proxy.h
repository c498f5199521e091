// OutputProxy: output commit for the guest's service.
//
// Clients connect to the primary's --service address; each connection is
// forwarded to the guest's port on loopback. Bytes from the client reach the
// guest at once. Bytes from the guest, and the guest's close, are held,
// tagged with the epoch open when they were read (EpochEngine::open_epoch()),
// and released in order when that epoch is acknowledged by the backup. So no
// client sees a reply that a failover could take back.
//
// Each connection buffers at most about max_held_bytes of output (held for an
// ack, or acked and not yet taken by the client); past that the proxy stops
// reading from the guest for that connection only (back-pressure), so a slow
// client never blocks the others or the epoch engine. Output read in one epoch
// is appended to one chunk (up to 256 KiB), so a pipelining client's replies
// are released in few writes.
//
// With buffering off (--no-output-buffering, --backup null, or a lost backup
// under --on-backup-loss continue) output is released at once.
//
// A release gate (set_release_gate(), the pair's ownership: rule 1 of
// docs/design.md, "Ownership") is asked before any output leaves: while it
// says no, output stays held (acknowledged or not) and back-pressure applies;
// reopen_gate() releases what waited. The monotonic times of the first and
// last release since take_release_interval() are kept, so the node can log
// when it released output.
//
// Threading: the listener runs on the io_context given to the constructor.
// With io_threads = 0 the sessions run there too; with io_threads = N the
// proxy starts N threads of its own, each with its own io_context, and hands
// each accepted connection to one of them (round robin). A session lives on
// one thread for its whole life, so its output still leaves in epoch order;
// sessions are independent, so nothing else is shared between the threads
// but atomics (the acked epoch, buffering, byte counters) and the stats lock.
// on_ack(), set_buffering(), reopen_gate(), stats() and stop() may be called
// from any thread (they post to each session thread). An ack wakes only the
// sessions that hold output, once per ack, not once per byte range.
//
// Per request, the path is short: client bytes are read into the session's
// buffer and written to the guest at once with a non-blocking write (an
// asynchronous write only for what the socket does not take), never copied
// or held; unbuffered guest output (no backup, --no-output-buffering) goes
// the same way to the client straight from the read buffer; held output is
// copied once, into a chunk recycled after it is written.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/endpoint.h"
#include "common/histogram.h"
#include "common/status.h"

namespace romulus::checkpoint {

struct OutputProxyOptions {
  common::Endpoint listen{"127.0.0.1", 0};
  uint16_t guest_port = 0;  // the guest listens on 127.0.0.1:guest_port
  size_t max_held_bytes = 4u << 20;
  bool buffering = true;
  // Threads of the proxy's own for the sessions; 0: sessions run on the
  // io_context given to OutputProxy (and its caller's thread).
  unsigned io_threads = 0;
  // Where a session's refused (illegal) state transition is reported, a bug
  // (checkpoint/proxy_state.h); may be empty.
  std::function<void(const std::string&)> log;
};

struct OutputProxyStats {
  uint64_t connections = 0;  // accepted in all
  uint64_t open_connections = 0;
  uint64_t bytes_to_guest = 0;
  uint64_t bytes_released = 0;
  uint64_t bytes_held = 0;          // now: awaiting an ack or a slow client
  double oldest_held_ms = 0;        // how long the oldest held byte has waited
  double added_latency_p50_ms = 0;  // read from guest -> released, recent window
  double added_latency_p99_ms = 0;
  // The last hop of held output's path (stats.h, OutputHop): the ack that
  // allowed it -> written to the client's socket (or queued behind what the
  // client has not taken yet), recent window.
  double release_after_ack_p50_ms = 0;
  double release_after_ack_p99_ms = 0;
  double release_after_ack_max_ms = 0;  // since start
  bool buffering = true;
};

class ProxySession;
struct ProxyWorker;

class OutputProxy {
 public:
  OutputProxy(boost::asio::io_context& io, OutputProxyOptions options,
              std::function<uint64_t()> open_epoch);
  ~OutputProxy();

  Status start();
  // The backup acknowledged `epoch`, at `at` (when its ack arrived).
  void on_ack(uint64_t epoch,
              std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now());
  void set_buffering(bool on);
  OutputProxyStats stats() const;
  // Added latency of every released chunk (read from the guest -> released),
  // in seconds; lock-free, for --metrics.
  const common::Histogram& added_latency_histogram() const { return added_latency_; }
  // Ack -> released, in seconds, for each chunk of acknowledged output (--metrics).
  const common::Histogram& release_after_ack_histogram() const { return release_after_ack_; }
  // Closes the listener and every connection.
  void stop();

  // gate(now, acked): may output leave now? `acked`: its checkpoint was
  // acknowledged (false for output released unbuffered). Called on the io
  // thread before every release; must be cheap and thread-safe. Set before start().
  using ReleaseGate = std::function<bool(std::chrono::steady_clock::time_point now, bool acked)>;
  void set_release_gate(ReleaseGate gate) { gate_ = std::move(gate); }
  // Called each time guest output (or its close) is held for `epoch` while
  // buffering, on the thread that read it: the epoch engine's note_output(),
  // so that `--commit eager` starts a checkpoint for it. Must be cheap and
  // thread-safe. Set before start().
  using OutputHeld = std::function<void(uint64_t epoch)>;
  void set_on_output_held(OutputHeld fn) { on_output_held_ = std::move(fn); }
  // The gate may say yes again: release what waited (any thread).
  void reopen_gate();
  // The first and last release times since the previous call, if any (any thread).
  struct ReleaseInterval {
    std::chrono::steady_clock::time_point first, last;
  };
  std::optional<ReleaseInterval> take_release_interval();

 private:
  friend class ProxySession;
  void do_accept();
  void add_session(ProxyWorker& worker, boost::asio::ip::tcp::socket socket);
  ProxyWorker& next_worker();
  // Runs fn(worker) on every worker's thread (posted there).
  void for_each_worker(std::function<void(ProxyWorker&)> fn);
  // One released chunk: read -> released (ms), and ack -> released (ms; < 0
  // for output released without an ack: unbuffered).
  void record_latency(double ms, double after_ack_ms);
  void note_release(std::chrono::steady_clock::time_point now);  // any session thread
  void refresh_held_stats(ProxyWorker& worker) const;            // the worker's thread

  boost::asio::io_context& io_;
  OutputProxyOptions options_;
  std::function<uint64_t()> open_epoch_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::vector<std::unique_ptr<ProxyWorker>> workers_;
  size_t next_worker_ = 0;  // io_ thread (accepts)
  std::atomic<uint64_t> acked_{0};
  // When the newest ack arrived (steady_clock ticks; 0 = none yet).
  std::atomic<int64_t> acked_at_{0};
  std::atomic<bool> buffering_;
  ReleaseGate gate_;
  OutputHeld on_output_held_;
  // Release times, steady_clock ticks; 0 = none since the last take.
  std::atomic<int64_t> first_release_{0}, last_release_{0};

  std::atomic<uint64_t> bytes_to_guest_{0}, bytes_released_{0};
  mutable std::mutex stats_mu_;
  mutable OutputProxyStats stats_;
  std::deque<double> latencies_, after_ack_;
  double after_ack_max_ms_ = 0;
  common::Histogram added_latency_, release_after_ack_;
};

}  // namespace romulus::checkpoint
