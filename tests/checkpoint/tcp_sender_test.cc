// TcpSender against a stand-in backup on real loopback TCP: the bytes the
// engine sends arrive whole and in order, whether send() wrote them itself
// (nothing queued: the common case, a small checkpoint) or the socket took
// only part and the io thread wrote the rest, with more sends queued behind
// it. The stand-in answers the handshake, then reads as slowly as a test
// says, so the socket's buffer fills. No timing is asserted.
#include "checkpoint/tcp_sender.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "protocol/handshake.h"

namespace romulus::checkpoint::tcp_sender_test {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

// A listening socket on 127.0.0.1 that takes one connection, answers its
// Hello, waits for go(), then reads everything until the peer closes.
class StandInBackup {
 public:
  StandInBackup() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~StandInBackup() {
    go();
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  void go() {
    if (!went_.exchange(true)) go_.set_value();
  }
  // Resets the connection (as a backup that crashed would): the sender's
  // next writes meet the reset.
  void hang_up() {
    const int fd = conn_fd_.load();
    if (fd >= 0) {
      linger l{1, 0};  // close with RST, not FIN
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      ::shutdown(fd, SHUT_RDWR);
    }
  }
  // Everything received after the handshake, once the sender closed.
  std::vector<uint8_t> received() {
    if (thread_.joinable()) thread_.join();
    return received_;
  }

 private:
  void serve() {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    conn_fd_ = fd;
    // A small receive buffer, so that a few MiB fill it.
    const int small = 64 << 10;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    std::vector<uint8_t> in;
    uint8_t buf[1 << 16];
    size_t used = 0;
    for (;;) {
      auto hello = protocol::parse_hello(in);
      if (!hello.is_ok()) break;
      if (hello->has_value()) {
        used = (*hello)->second;
        break;
      }
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.insert(in.end(), buf, buf + n);
    }
    protocol::Reply reply;
    reply.accept = true;
    const protocol::Bytes out = protocol::encode_reply(reply);
    if (::write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return;
    received_.assign(in.begin() + static_cast<std::ptrdiff_t>(used), in.end());
    go_.get_future().wait();
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      received_.insert(received_.end(), buf, buf + n);
    }
    ::close(fd);
  }

  int listen_fd_ = -1;
  std::atomic<int> conn_fd_{-1};
  uint16_t port_ = 0;
  std::atomic<bool> went_{false};
  std::promise<void> go_;
  std::thread thread_;
  std::vector<uint8_t> received_;
};

class TcpSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    work_.emplace(asio::make_work_guard(io_));
    io_thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    io_thread_.join();
  }

  std::shared_ptr<TcpSender> connect(const StandInBackup& backup) {
    SenderOptions options;
    // No heartbeat within the test: the stream must be exactly what was sent.
    options.heartbeat = 60s;
    options.failover_timeout = 120s;
    protocol::Hello hello;
    hello.guest_page_count = 16;
    protocol::Reply reply;
    auto sender = TcpSender::connect(io_, common::Endpoint{"127.0.0.1", backup.port()}, hello,
                                     options, {}, &reply);
    EXPECT_TRUE(sender.is_ok()) << sender.status().message();
    return sender.is_ok() ? *sender : nullptr;
  }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread io_thread_;
};

protocol::Bytes pattern(size_t size, uint32_t seed) {
  protocol::Bytes b(size);
  std::mt19937 rng(seed);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST_F(TcpSenderTest, SmallSendsArriveWholeAndInOrder) {
  StandInBackup backup;
  backup.go();
  auto sender = connect(backup);
  ASSERT_NE(sender, nullptr);
  std::vector<uint8_t> expected;
  for (uint32_t i = 0; i < 2000; ++i) {
    protocol::Bytes b = pattern(1 + i % 300, i);
    expected.insert(expected.end(), b.begin(), b.end());
    ASSERT_TRUE(sender->send(std::move(b)).is_ok());
  }
  ASSERT_TRUE(sender->flush().is_ok());
  sender->close();
  EXPECT_EQ(backup.received(), expected);
}

TEST_F(TcpSenderTest, WhatTheSocketDoesNotTakeIsWrittenLaterAheadOfWhatFollows) {
  StandInBackup backup;  // not reading yet: the socket's buffers fill
  auto sender = connect(backup);
  ASSERT_NE(sender, nullptr);
  std::vector<uint8_t> expected;
  // More than loopback buffers hold: the first send is only partly taken,
  // and everything after it queues behind the rest of it.
  for (uint32_t i = 0; i < 40; ++i) {
    protocol::Bytes b = pattern(i % 2 == 0 ? (1u << 20) + i : 100 + i, i);
    expected.insert(expected.end(), b.begin(), b.end());
    ASSERT_TRUE(sender->send(std::move(b)).is_ok());
  }
  backup.go();
  ASSERT_TRUE(sender->flush().is_ok());
  // And once drained, small sends again go straight out, after all of it.
  for (uint32_t i = 0; i < 50; ++i) {
    protocol::Bytes b = pattern(64, 1000 + i);
    expected.insert(expected.end(), b.begin(), b.end());
    ASSERT_TRUE(sender->send(std::move(b)).is_ok());
  }
  ASSERT_TRUE(sender->flush().is_ok());
  sender->close();
  const std::vector<uint8_t> got = backup.received();
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected) << "the stream differs from what was sent";
}

TEST_F(TcpSenderTest, ASendAfterThePeerResetFailsTheStreamInsteadOfHanging) {
  StandInBackup backup;
  backup.go();
  auto sender = connect(backup);
  ASSERT_NE(sender, nullptr);
  ASSERT_TRUE(sender->send(pattern(100, 1)).is_ok());
  ASSERT_TRUE(sender->flush().is_ok());
  backup.hang_up();
  // The first sends may still be taken by the socket; within a few the reset
  // is met (by send() itself or by the io thread), and the stream is broken
  // rather than stuck (the failover timeout is 120 s: not what ends it).
  Status st;
  for (int i = 0; i < 1000 && st.is_ok(); ++i) {
    st = sender->send(pattern(4096, static_cast<uint32_t>(i)));
    if (st.is_ok()) st = sender->flush();
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_FALSE(st.is_ok());
  EXPECT_TRUE(sender->broken());
}

}  // namespace
}  // namespace romulus::checkpoint::tcp_sender_test
