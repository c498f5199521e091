// ControlServer: the node's control socket (`romulus status/set/failover`).
//
// A Unix stream socket; each connection carries one request line and gets one
// reply line (a JSON object), then closes. The node supplies the handler,
// which runs on the io_context's thread. The socket file is created with mode
// 0600 and removed on destruction; a stale file left by a dead node is
// replaced, a live node's socket is not (start() fails with a clear message).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include "checkpoint/asio.h"

#include "protocol/status.h"

namespace romulus::checkpoint {

class ControlServer {
 public:
  using Handler = std::function<std::string(const std::string& request)>;

  ControlServer(boost::asio::io_context& io, std::string path, Handler handler);
  ~ControlServer();

  Status start();
  const std::string& path() const { return path_; }

 private:
  void do_accept();

  boost::asio::io_context& io_;
  std::string path_;
  Handler handler_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  bool bound_ = false;
};

// Client side: sends one request, returns the reply line.
Result<std::string> control_request(const std::string& path, const std::string& request);

// Minimal JSON helpers for replies.
std::string json_escape(const std::string& s);
std::string json_error(const std::string& message);

}  // namespace romulus::checkpoint
