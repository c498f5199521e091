// ControlServer: a node's control socket (`romulus status`, `set`, `failover`).
//
// A Unix stream socket, mode 0600 (only the node's own user may steer it).
// Each connection carries one request line of at most kMaxRequestBytes and
// gets one reply line (a JSON object, common/json.h), then closes. A longer
// line, or no complete line within kRequestTimeout, gets an error reply (or
// is closed) and one log line. The socket file is removed on destruction; a
// stale file left by a dead node is replaced, a live node's socket is not
// (start() fails with a clear message).
//
// The server runs on a thread of its own, so it outlives the roles of the
// process: a backup that takes over hands the socket to its primary with
// set_handler(), and the socket never disappears in between. Without a
// handler (between roles) requests get "changing role" errors. Handlers run
// on the server's thread and must be thread-safe against the node's threads.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/asio.h"
#include "common/status.h"

namespace romulus::common {

class ControlServer {
 public:
  using Handler = std::function<std::string(const std::string& request)>;
  using LogFn = std::function<void(const std::string&)>;

  static constexpr size_t kMaxRequestBytes = 4096;
  static constexpr std::chrono::seconds kRequestTimeout{2};

  ControlServer(std::string path, LogFn log);
  ~ControlServer();  // stops the thread, removes the socket file
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket and starts serving. Call once.
  Status start();
  // Who answers requests from now on (nullptr: nobody, between roles).
  void set_handler(Handler handler);
  const std::string& path() const { return path_; }

  // For sessions: the current answer to `request`.
  std::string answer(const std::string& request);
  void log(const std::string& line) { log_(line); }

 private:
  void do_accept();

  std::string path_;
  LogFn log_;
  boost::asio::io_context io_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  std::thread thread_;
  bool bound_ = false;
  std::mutex mu_;
  Handler handler_;
};

// How long the CLI waits for a node's reply: over the 2 s a busy backup takes
// to give up on its own thread (kAnswerWithin), so that node's error arrives.
inline constexpr std::chrono::seconds kControlReplyWithin{5};

// Client side: sends one request and returns the reply line, or an error if
// nothing listens at `path` or no reply came within `timeout`.
Result<std::string> control_request(const std::string& path, const std::string& request,
                                    std::chrono::milliseconds timeout = kControlReplyWithin);

}  // namespace romulus::common
