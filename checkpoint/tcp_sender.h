// TcpSender: the primary's end of the replication connection.
//
// Connects to the backup, completes the TLS handshake (when the node has a
// TLS identity: the backup's certificate must verify against --tls-ca, and
// its name match --tls-peer-name), performs the protocol's handshake inside
// that session, then carries the engine's
// byte stream (one write in flight, a queue behind it, bounded: send() blocks
// while more than max_queued_bytes wait) and reads the backup's messages:
// ACK(epoch) goes to on_ack, an ERROR or silence longer than the failover
// timeout or a reset ends the connection and goes to on_lost, once.
//
// Threading: the stream lives on the io_context's thread. connect() blocks
// its caller while the io thread (which must be running) connects and
// handshakes; never call it on the io thread; send()/flush()/close() may be
// called from the engine thread; callbacks run on the io thread. On a
// plaintext stream with nothing queued, send() writes what the socket takes
// at once itself (non-blocking, under the queue's lock), so a small
// checkpoint leaves without a hand-off to the io thread; the rest, and
// everything on a TLS stream, is written by the io thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "checkpoint/transport.h"
#include "common/asio.h"
#include "common/endpoint.h"
#include "common/link_stream.h"
#include "common/tls.h"
#include "protocol/backup_messages.h"
#include "protocol/handshake.h"
#include "protocol/pair_defaults.h"

namespace romulus::checkpoint {

struct SenderOptions {
  std::chrono::milliseconds connect_timeout{3000};
  // The backup silent this long: lost.
  std::chrono::milliseconds failover_timeout = protocol::kDefaultFailoverTimeout;
  // How often silence is checked.
  std::chrono::milliseconds heartbeat = protocol::kDefaultHeartbeat;
  size_t max_queued_bytes = 64u << 20;
  // Mutual TLS with this identity; nullptr: plaintext, which connect()
  // allows only to a loopback address unless `insecure`.
  std::shared_ptr<common::TlsIdentity> tls;
  bool insecure = false;
};

struct SenderCallbacks {
  std::function<void(uint64_t epoch)> on_ack;
  std::function<void(const Status& why)> on_lost;
};

class TcpSender final : public CheckpointTransport, public std::enable_shared_from_this<TcpSender> {
 public:
  // Connects and handshakes (TLS, then Hello/Reply), all within
  // connect_timeout each. On success `reply` holds the backup's answer. A
  // backup whose certificate does not verify, or that refuses ours, is
  // refused (StatusCode::kRefused) with one line saying why.
  static Result<std::shared_ptr<TcpSender>> connect(
      boost::asio::io_context& io, const common::Endpoint& backup, const protocol::Hello& hello,
      SenderOptions options, SenderCallbacks callbacks, protocol::Reply* reply);
  ~TcpSender() override;

  Status send(protocol::Bytes bytes) override;
  Status flush() override;
  void end_of_checkpoint(uint64_t epoch) override;

  // Sends GOODBYE (clean shutdown: the backup will not take over), flushes
  // up to `timeout`, and closes. Only between checkpoints (the engine is not
  // running, and its last checkpoint was queued whole).
  void goodbye(std::chrono::milliseconds timeout);
  // The same with HANDOVER: this primary stopped on purpose and no output
  // leaves it any more; the backup takes over at once.
  void handover(std::chrono::milliseconds timeout);
  // Gives up on this backup deliberately: DROPPED follows the chunk being
  // written (if any), then the socket closes (after kDropLinger at the
  // latest). The backup then knows this primary lives on and does not take
  // over. Also what happens when the backup falls silent.
  void drop();
  // Closes at once, saying nothing: the backup treats it as a crash and takes
  // over from its last committed checkpoint (a guest that crashed).
  void close();
  bool broken() const { return broken_.load(); }
  std::string peer() const { return peer_; }

  // Construction is through connect(); public for make_shared only.
  TcpSender(boost::asio::io_context& io, SenderOptions options, SenderCallbacks callbacks);

 private:
  void start_reading();
  void do_read();
  void do_write();
  void check_liveness();
  // Queues `last` (GOODBYE or HANDOVER), flushes up to `timeout`, closes.
  void say_last(protocol::Bytes last, std::chrono::milliseconds timeout);
  void fail(const Status& why, bool say_dropped = false);  // io thread
  void write_dropped();                                    // io thread
  void close_socket();                                     // io thread
  // Runs one operation on the io thread and blocks until it completes or
  // `deadline` passes (then the stream is closed and timed_out returned).
  template <typename Start>
  boost::system::error_code run_until(std::chrono::steady_clock::time_point deadline, Start start);

  static constexpr std::chrono::milliseconds kDropLinger{200};

  boost::asio::io_context& io_;
  std::optional<common::LinkStream> stream_;  // set by connect()
  boost::asio::steady_timer liveness_timer_;
  SenderOptions options_;
  SenderCallbacks callbacks_;
  std::string peer_;

  protocol::BackupMessageReader reader_;
  std::array<uint8_t, 4096> read_buf_{};
  std::chrono::steady_clock::time_point last_rx_;
  std::atomic<std::chrono::steady_clock::time_point> last_tx_{std::chrono::steady_clock::now()};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<protocol::Bytes> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  Status failure_;
  std::atomic<bool> broken_{false};
  bool lost_reported_ = false;
  // DROPPED (io thread only).
  bool dropping_ = false, dropped_sent_ = false;
  protocol::Bytes dropped_bytes_;
};

}  // namespace romulus::checkpoint
