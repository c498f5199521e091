// MetricsServer: the process's `--metrics ADDR:PORT` endpoint, serving the
// Prometheus text format at GET /metrics (HTTP/1.1, Boost.Beast).
//
// Like the control socket it belongs to the process, not to a role: it runs
// on a thread of its own, and each role supplies the function that renders
// its metrics (set_handler()); a backup that takes over keeps the port and
// starts serving primary metrics. Without a handler (between roles) a scrape
// gets 503. The handler runs on the server's thread, under the server's lock
// (so set_handler(nullptr) waits for a scrape in progress to finish: the role
// may be destroyed after it returns); it must be thread-safe against the
// role's threads and must not block them.
//
// Clients are hostile until proven otherwise:
//   - a request (line and headers; GET has no body) over kMaxRequestBytes is
//     answered 431 and the connection closed;
//   - a request not complete within kReadTimeout is cut off (slowloris), as
//     is an idle keep-alive connection after that long;
//   - at most kMaxConnections are open at once; more are closed at accept;
//   - anything but GET/HEAD /metrics gets 404 (or 405).
// Misbehaviour is logged at most once per kLogQuiet, with a count of what
// happened since the previous line, so a flood is one line, not thousands.
//
// Threading: start() once; set_handler() from any thread; the destructor
// stops the thread and closes every connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/asio.h"
#include "common/status.h"

namespace romulus::common {

class MetricsServer {
 public:
  using Handler = std::function<std::string()>;
  using LogFn = std::function<void(const std::string&)>;

  static constexpr size_t kMaxRequestBytes = 8192;
  static constexpr std::chrono::milliseconds kReadTimeout{5000};
  static constexpr std::chrono::milliseconds kWriteTimeout{10000};
  static constexpr size_t kMaxConnections = 16;
  static constexpr std::chrono::seconds kLogQuiet{10};

  MetricsServer(std::string host, uint16_t port, LogFn log);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Listens and starts serving. Call once.
  Status start();
  // Who renders /metrics from now on (nullptr: nobody, between roles).
  void set_handler(Handler handler);
  // The bound port (the given one, or the kernel's pick for port 0).
  uint16_t port() const { return bound_port_; }

  // For sessions (the server's thread).
  std::optional<std::string> render();
  void note_misbehaviour(const std::string& what);
  void session_opened() { ++open_; }
  void session_closed() { --open_; }

 private:
  void do_accept();

  std::string host_;
  uint16_t port_;
  uint16_t bound_port_ = 0;
  LogFn log_;
  std::mutex mu_;
  Handler handler_;
  // Server thread only (declared before io_: sessions destroyed with it count down).
  size_t open_ = 0;
  std::chrono::steady_clock::time_point last_log_{};
  uint64_t unlogged_ = 0;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
};

}  // namespace romulus::common
