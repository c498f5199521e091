// The control socket: one line in, one JSON line out; hostile clients are bounded.
#include "common/control_server.h"
#include "tests/support/status_matchers.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace romulus::common::control_server_test {
namespace {

std::string temp_socket_path() {
  char dir[] = "/tmp/romulus-control-test.XXXXXX";
  EXPECT_NE(mkdtemp(dir), nullptr);
  return std::string(dir) + "/node.sock";
}

struct Log {
  std::mutex mu;
  std::vector<std::string> lines;
  ControlServer::LogFn fn() {
    return [this](const std::string& l) {
      std::lock_guard lock(mu);
      lines.push_back(l);
    };
  }
};

TEST(ControlServer, AnswersARequestThroughItsHandler) {
  Log log;
  ControlServer server(temp_socket_path(), log.fn());
  ASSERT_OK(server.start());
  server.set_handler([](const std::string& r) { return R"({"ok":true,"echo":")" + r + "\"}"; });
  auto reply = control_request(server.path(), "status");
  ASSERT_OK(reply);
  EXPECT_EQ(*reply, R"({"ok":true,"echo":"status"})");
}

TEST(ControlServer, WithoutAHandlerSaysTheNodeIsChangingRole) {
  Log log;
  ControlServer server(temp_socket_path(), log.fn());
  ASSERT_OK(server.start());
  auto reply = control_request(server.path(), "status");
  ASSERT_OK(reply);
  EXPECT_NE(reply->find("changing role"), std::string::npos) << *reply;
  EXPECT_EQ(*control_request(server.path(), "ping"), R"({"ok":true})");
}

TEST(ControlServer, ARequestLineOverTheLimitGetsAnErrorAndOneLogLine) {
  Log log;
  ControlServer server(temp_socket_path(), log.fn());
  ASSERT_OK(server.start());
  server.set_handler([](const std::string&) { return std::string(R"({"ok":true})"); });
  auto reply =
      control_request(server.path(), std::string(ControlServer::kMaxRequestBytes + 10, 'x'));
  ASSERT_OK(reply);
  EXPECT_NE(reply->find(R"("ok":false)"), std::string::npos) << *reply;
  EXPECT_NE(reply->find("over 4096 bytes"), std::string::npos) << *reply;
  std::lock_guard lock(log.mu);
  ASSERT_EQ(log.lines.size(), 1u);
}

TEST(ControlServer, AClientThatSendsNothingIsClosed) {
  Log log;
  ControlServer server(temp_socket_path(), log.fn());
  ASSERT_OK(server.start());
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", server.path().c_str());
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  char c;
  // Blocks until the server's request deadline closes the connection.
  EXPECT_EQ(read(fd, &c, 1), 0);
  close(fd);
}

TEST(ControlRequest, NoNodeAtThePathSaysSoInOneLine) {
  auto reply = control_request("/tmp/romulus-no-such-dir/none.sock", "status");
  ASSERT_FALSE(reply.is_ok());
  EXPECT_NE(reply.status().message().find("no romulus node at"), std::string::npos)
      << reply.status().message();
}

TEST(ControlRequest, ANodeThatDoesNotAnswerTimesOutNamingThePath) {
  // A listening socket nobody accepts from: the connect succeeds, no reply comes.
  const std::string path = temp_socket_path();
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  auto reply = control_request(path, "status", std::chrono::milliseconds(200));
  ASSERT_FALSE(reply.is_ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kTimeout);
  EXPECT_NE(reply.status().message().find(path), std::string::npos);
  close(fd);
}

TEST(ControlServer, ALiveNodesSocketIsNotTakenOver) {
  Log log;
  ControlServer first(temp_socket_path(), log.fn());
  ASSERT_OK(first.start());
  ControlServer second(first.path(), log.fn());
  const Status st = second.start();
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("in use by another romulus node"), std::string::npos);
}

}  // namespace
}  // namespace romulus::common::control_server_test
