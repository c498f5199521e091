// The metrics endpoint: GET /metrics through the role's handler, 404
// elsewhere, 503 between roles; hostile clients are bounded and logged once.
#include "common/metrics_server.h"
#include "tests/support/status_matchers.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace romulus::common::metrics_server_test {
namespace {

struct Log {
  std::mutex mu;
  std::vector<std::string> lines;
  MetricsServer::LogFn fn() {
    return [this](const std::string& l) {
      std::lock_guard lock(mu);
      lines.push_back(l);
    };
  }
  std::vector<std::string> copy() {
    std::lock_guard lock(mu);
    return lines;
  }
};

// A blocking client socket; reads give up after `timeout` (a bound, not an assertion).
int connect_to(uint16_t port, int timeout_s = 30) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server closed: the reply (if any) tells
    off += static_cast<size_t>(n);
  }
}

// Everything until the server closes (or the read bound).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string round_trip(uint16_t port, const std::string& request) {
  const int fd = connect_to(port);
  send_all(fd, request);
  std::string reply = read_all(fd);
  ::close(fd);
  return reply;
}

std::string get(uint16_t port, const std::string& target) {
  return round_trip(port, "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

struct Served {
  Log log;
  MetricsServer server{"127.0.0.1", 0, log.fn()};
  Served() {
    EXPECT_OK(server.start());
    server.set_handler([] { return std::string("romulus_up 1\n"); });
  }
};

TEST(MetricsServer, ServesTheHandlersTextAtMetrics) {
  Served s;
  const std::string reply = get(s.server.port(), "/metrics");
  EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
  EXPECT_NE(reply.find("text/plain; version=0.0.4"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\r\n\r\nromulus_up 1\n"), std::string::npos) << reply;
}

TEST(MetricsServer, AnyOtherPathIs404) {
  Served s;
  EXPECT_EQ(get(s.server.port(), "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(get(s.server.port(), "/metricsx").rfind("HTTP/1.1 404", 0), 0u);
}

TEST(MetricsServer, AKeepAliveClientGetsSeveralAnswersOnOneConnection) {
  Served s;
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  const int fd = connect_to(s.server.port());
  send_all(fd, req + req + "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string reply = read_all(fd);
  ::close(fd);
  size_t n = 0;
  for (size_t at = reply.find("HTTP/1.1 200"); at != std::string::npos;
       at = reply.find("HTTP/1.1 200", at + 1)) {
    ++n;
  }
  EXPECT_EQ(n, 3u) << reply;
}

TEST(MetricsServer, WithoutAHandlerAScrapeGets503) {
  Served s;
  s.server.set_handler(nullptr);
  EXPECT_EQ(get(s.server.port(), "/metrics").rfind("HTTP/1.1 503", 0), 0u);
}

TEST(MetricsServer, ARequestOverTheLimitIsRefusedAndLoggedOnce) {
  Served s;
  const std::string huge = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: " +
                           std::string(MetricsServer::kMaxRequestBytes * 4, 'a') + "\r\n\r\n";
  for (int i = 0; i < 5; ++i) {
    const std::string reply = round_trip(s.server.port(), huge);
    EXPECT_EQ(reply.rfind("HTTP/1.1 431", 0), 0u) << reply.substr(0, 100);
  }
  const auto lines = s.log.copy();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("over 8192 bytes"), std::string::npos) << lines[0];
  // And the server still serves.
  EXPECT_EQ(get(s.server.port(), "/metrics").rfind("HTTP/1.1 200", 0), 0u);
}

TEST(MetricsServer, ASlowlorisClientIsCutOff) {
  Served s;
  const int fd = connect_to(s.server.port());
  send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n");  // and never the blank line
  // The server closes the connection (at its read deadline): recv sees EOF,
  // long before this socket's own 30 s bound.
  char c;
  const ssize_t n = ::recv(fd, &c, 1, 0);
  const int err = errno;
  ::close(fd);
  EXPECT_EQ(n, 0) << "errno " << err;
  // Beast's stream closes the socket at its deadline before the read handler
  // runs and logs: wait for the line (a condition, not a timing).
  auto lines = s.log.copy();
  for (int i = 0; i < 1000 && lines.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    lines = s.log.copy();
  }
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("did not complete its request"), std::string::npos) << lines[0];
}

TEST(MetricsServer, ConnectionsOverTheCapAreClosedAtAccept) {
  Served s;
  std::vector<int> idle;
  for (size_t i = 0; i < MetricsServer::kMaxConnections; ++i) {
    idle.push_back(connect_to(s.server.port()));
  }
  // The server accepts in order: once one over the cap is closed, the
  // earlier ones hold every slot.
  const int extra = connect_to(s.server.port());
  char c;
  EXPECT_EQ(::recv(extra, &c, 1, 0), 0);
  ::close(extra);
  for (int fd : idle) ::close(fd);
  bool logged = false;
  for (const auto& l : s.log.copy()) logged |= l.find("connections at once") != std::string::npos;
  EXPECT_TRUE(logged);
}

}  // namespace
}  // namespace romulus::common::metrics_server_test
