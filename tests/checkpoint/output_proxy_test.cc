// OutputProxy over real loopback TCP: a client connects to the proxy, the
// proxy forwards to a real "guest" server (an echo server on its own threads),
// and the guest's replies reach the client only once the epoch during which
// the proxy read them is acknowledged.
#include "checkpoint/output_proxy.h"
#include "common/net.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/socket_read.h"
#include "tests/support/status_matchers.h"

namespace romulus::checkpoint::output_proxy_test {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using romulus::testing::read_for;

// The guest: echoes what it reads, except two commands sent alone:
//   "BIG <n>\n"  answers n bytes of a counting pattern;
//   "CLOSE\n"    closes the connection.
// When the client half-closes, it answers what it read and half-closes too.
class EchoGuest {
 public:
  explicit EchoGuest(uint16_t port = 0)
      : acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), port)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~EchoGuest() {
    stopping_ = true;
    boost::system::error_code ec;
    {
      // Wake the blocking accept() (closing the acceptor from here would not).
      tcp::socket wake(io_);
      wake.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port_), ec);
    }
    accept_thread_.join();
    acceptor_.close(ec);
    {
      std::lock_guard lock(mu_);
      for (auto& s : sockets_) s->shutdown(tcp::socket::shutdown_both, ec);
    }
    for (auto& t : threads_) t.join();
  }
  uint16_t port() const { return port_; }
  // How many connections the guest has closed on a "CLOSE\n".
  int closes() const { return closes_.load(); }

 private:
  void accept_loop() {
    while (!stopping_) {
      auto s = std::make_shared<tcp::socket>(io_);
      boost::system::error_code ec;
      acceptor_.accept(*s, ec);
      if (ec || stopping_) return;
      std::lock_guard lock(mu_);
      sockets_.push_back(s);
      threads_.emplace_back([this, s] { serve(*s); });
    }
  }
  void serve(tcp::socket& s) {
    std::vector<char> buf(64 * 1024);
    boost::system::error_code ec;
    for (;;) {
      size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) {
        s.shutdown(tcp::socket::shutdown_send, ec);
        return;
      }
      std::string chunk(buf.data(), n);
      if (chunk == "CLOSE\n") {
        // Shut down rather than close: ~EchoGuest may shut the socket down
        // from its thread at the same time, and closing would race with it.
        s.shutdown(tcp::socket::shutdown_both, ec);
        ++closes_;
        return;
      }
      if (chunk.starts_with("BIG ")) {
        size_t big = std::stoul(chunk.substr(4));
        std::string out(big, '\0');
        for (size_t i = 0; i < big; ++i) out[i] = static_cast<char>('a' + i % 26);
        asio::write(s, asio::buffer(out), ec);
      } else {
        asio::write(s, asio::buffer(chunk), ec);
      }
      if (ec) return;
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> closes_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::vector<std::thread> threads_;
};

// A proxy on its own io thread, with an epoch the test sets. The parameter is
// OutputProxyOptions::io_threads: 0 (sessions on that io thread) or several
// session threads of the proxy's own; every behaviour must hold for both.
class ProxyFixture : public ::testing::TestWithParam<unsigned> {
 protected:
  // guest_port: the fixture's EchoGuest unless given.
  void start(bool buffering = true, size_t max_held = 4u << 20, uint16_t guest_port = 0) {
    auto port = common::free_loopback_port();
    ASSERT_OK(port);
    listen_port_ = *port;
    OutputProxyOptions o;
    o.listen.port = listen_port_;
    o.guest_port = guest_port != 0 ? guest_port : guest_.port();
    o.buffering = buffering;
    o.max_held_bytes = max_held;
    o.io_threads = GetParam();
    proxy_ = std::make_unique<OutputProxy>(io_, o, [this] { return epoch_.load(); });
    ASSERT_OK(proxy_->start());
    work_.emplace(asio::make_work_guard(io_));
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (proxy_) proxy_->stop();
    work_.reset();
    if (thread_.joinable()) {
      // stop() posts; let it run, then end the loop.
      std::promise<void> done;
      asio::post(io_, [&] { done.set_value(); });
      done.get_future().wait_for(5s);
      io_.stop();
      thread_.join();
    }
  }

  std::unique_ptr<tcp::socket> connect() {
    auto s = std::make_unique<tcp::socket>(client_io_);
    s->connect(tcp::endpoint(asio::ip::address_v4::loopback(), listen_port_));
    s->set_option(tcp::no_delay(true));
    return s;
  }

  // Bytes the proxy holds now, read on its io thread.
  uint64_t held() {
    std::promise<uint64_t> p;
    asio::post(io_, [&] { p.set_value(proxy_->stats().bytes_held); });
    return p.get_future().get();
  }
  // Waits until the proxy holds at least n bytes (it has read the guest's reply).
  void wait_held(uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (held() < n) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "the proxy never read " << n << " bytes from the guest";
      std::this_thread::sleep_for(5ms);
    }
  }

  EchoGuest guest_;
  asio::io_context io_, client_io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::unique_ptr<OutputProxy> proxy_;
  std::atomic<uint64_t> epoch_{5};
  uint16_t listen_port_ = 0;
};

TEST_P(ProxyFixture, ReplyIsHeldUntilItsEpochIsAcknowledged) {
  start();
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("hello\n")));
  wait_held(6);
  proxy_->on_ack(4);  // an older epoch: not enough
  EXPECT_EQ(read_for(*c, 300ms, 6), "") << "released before the ack of its epoch";
  proxy_->on_ack(5);
  EXPECT_EQ(read_for(*c, 10s, 6), "hello\n");
}

// A client that comes before the guest listens (the guest is starting, or
// resuming after a takeover) is held, not closed, and served once it listens.
TEST_P(ProxyFixture, AClientThatComesBeforeTheGuestListensIsServedOnceItDoes) {
  auto port = common::free_loopback_port();
  ASSERT_OK(port);
  start(true, 4u << 20, *port);
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("early\n")));
  std::this_thread::sleep_for(200ms);  // refused meanwhile: the proxy tries again
  EchoGuest late(*port);
  wait_held(6);
  proxy_->on_ack(5);
  EXPECT_EQ(read_for(*c, 10s, 6), "early\n");
}

TEST_P(ProxyFixture, EachReplyWaitsForItsOwnEpochAndOrderIsKept) {
  start();
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("first\n")));
  wait_held(6);
  epoch_ = 6;
  asio::write(*c, asio::buffer(std::string("second\n")));
  wait_held(13);
  proxy_->on_ack(5);
  EXPECT_EQ(read_for(*c, 10s, 6), "first\n");
  EXPECT_EQ(read_for(*c, 300ms, 7), "") << "epoch 6's reply released with epoch 5's ack";
  proxy_->on_ack(6);
  EXPECT_EQ(read_for(*c, 10s, 7), "second\n");
}

TEST_P(ProxyFixture, ManyRepliesOfOneEpochArriveWholeAndInOrder) {
  start();
  auto c = connect();
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    std::string line = "line " + std::to_string(i) + "\n";
    expected += line;
    asio::write(*c, asio::buffer(line));
    wait_held(expected.size());  // one guest read each: appended to the epoch's held chunk
  }
  EXPECT_EQ(read_for(*c, 300ms, 1), "");
  proxy_->on_ack(5);
  EXPECT_EQ(read_for(*c, 10s, expected.size()), expected);
}

TEST_P(ProxyFixture, GuestCloseIsHeldLikeData) {
  start();
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("bye\n")));
  wait_held(4);
  asio::write(*c, asio::buffer(std::string("CLOSE\n")));
  // The guest has closed its end (then the proxy sees the EOF, during the look below).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (guest_.closes() < 1) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the guest never closed";
    std::this_thread::sleep_for(5ms);
  }
  bool eof = false;
  EXPECT_EQ(read_for(*c, 300ms, 100, &eof), "");
  EXPECT_FALSE(eof) << "the guest's close reached the client before its epoch was acked";
  proxy_->on_ack(5);
  EXPECT_EQ(read_for(*c, 10s, 100, &eof), "bye\n");
  if (!eof) read_for(*c, 10s, 1, &eof);
  EXPECT_TRUE(eof);
}

TEST_P(ProxyFixture, WithoutBufferingRepliesPassAtOnce) {
  start(/*buffering=*/false);
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("now\n")));
  EXPECT_EQ(read_for(*c, 10s, 4), "now\n");  // no ack at all
}

TEST_P(ProxyFixture, TurningBufferingOffReleasesWhatIsHeld) {
  start();
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("held\n")));
  wait_held(5);
  proxy_->set_buffering(false);
  EXPECT_EQ(read_for(*c, 10s, 5), "held\n");
}

TEST_P(ProxyFixture, AClientThatDoesNotReadBlocksNoOther) {
  constexpr size_t kMaxHeld = 64 * 1024;
  start(/*buffering=*/true, kMaxHeld);
  auto slow = connect();
  // Far more output than the proxy may hold plus both sockets' buffers.
  constexpr size_t kBig = 32u << 20;
  asio::write(*slow, asio::buffer("BIG " + std::to_string(kBig) + "\n"));
  wait_held(kMaxHeld);  // back-pressure: the proxy stopped reading at its limit
  // Release epoch after epoch; the slow client reads nothing.
  for (uint64_t e = 6; e < 10; ++e) {
    epoch_ = e;
    proxy_->on_ack(e - 1);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_LE(held(), kMaxHeld + 64 * 1024) << "held output exceeded its bound";
  // Epochs go on being acknowledged until the fast client's reply comes, within a
  // deadline only a hang reaches.
  auto fast = connect();
  asio::write(*fast, asio::buffer(std::string("ping\n")));
  std::string pong;
  uint64_t e = 10;
  for (const auto deadline = std::chrono::steady_clock::now() + 60s;
       pong.size() < 5 && std::chrono::steady_clock::now() < deadline; ++e) {
    epoch_ = e + 1;
    proxy_->on_ack(e);
    pong += read_for(*fast, 25ms, 5 - pong.size());
  }
  EXPECT_EQ(pong, "ping\n") << "one stalled client blocked another";
  // The slow client still gets every byte, in order, once it reads.
  std::string got;
  for (const auto deadline = std::chrono::steady_clock::now() + 120s;
       got.size() < kBig && std::chrono::steady_clock::now() < deadline; ++e) {
    epoch_ = e + 1;
    proxy_->on_ack(e);
    got += read_for(*slow, 20ms, kBig - got.size());
  }
  ASSERT_EQ(got.size(), kBig);
  std::string expected(kBig, '\0');
  for (size_t i = 0; i < kBig; ++i) expected[i] = static_cast<char>('a' + i % 26);
  EXPECT_TRUE(got == expected) << "the slow client's bytes arrived altered or out of order";
}

TEST_P(ProxyFixture, AHalfClosedClientStillGetsItsHeldReplyThenTheClose) {
  start();
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("last words\n")));
  c->shutdown(tcp::socket::shutdown_send);  // the client is done sending
  wait_held(10);
  bool eof = false;
  EXPECT_EQ(read_for(*c, 300ms, 100, &eof), "");
  EXPECT_FALSE(eof) << "the half-close ended the connection before its output was acked";
  proxy_->on_ack(5);
  EXPECT_EQ(read_for(*c, 10s, 11, &eof), "last words\n");
  if (!eof) read_for(*c, 10s, 1, &eof);
  EXPECT_TRUE(eof) << "the guest's half-close never reached the client";
}

TEST_P(ProxyFixture, ManyConnectionsEachGetTheirOwnRepliesAfterTheAck) {
  constexpr int kConnections = 300;
  start();
  std::vector<std::unique_ptr<tcp::socket>> clients;
  std::string all;
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(connect());
    std::string line = "conn " + std::to_string(i) + "\n";
    asio::write(*clients.back(), asio::buffer(line));
    all += line;
  }
  wait_held(all.size());
  EXPECT_EQ(proxy_->stats().open_connections, static_cast<uint64_t>(kConnections));
  proxy_->on_ack(5);
  for (int i = 0; i < kConnections; ++i) {
    std::string line = "conn " + std::to_string(i) + "\n";
    EXPECT_EQ(read_for(*clients[i], 10s, line.size()), line) << "connection " << i;
  }
}

// Clients on every session thread send numbered lines while another thread
// opens epochs and acknowledges them concurrently. Each connection must get
// all its lines, in order, and never one before the epoch open when it was
// sent is acknowledged.
TEST_P(ProxyFixture, RepliesKeepOrderPerConnectionUnderConcurrentAcks) {
  constexpr int kConnections = 12;
  constexpr int kLines = 150;
  start();
  std::atomic<uint64_t> acked{0};  // raised before each on_ack(): at least the proxy's
  std::atomic<bool> done{false};
  std::thread acker([&] {
    while (!done) {
      uint64_t e = epoch_.load();
      epoch_ = e + 1;  // new output goes into the next epoch...
      acked = e;       // ...and the one before it is acknowledged
      proxy_->on_ack(e);
      std::this_thread::sleep_for(1ms);
    }
  });
  std::vector<std::string> failures(kConnections);
  std::vector<std::thread> clients;
  for (int c = 0; c < kConnections; ++c) {
    clients.emplace_back([&, c] {
      asio::io_context io;
      tcp::socket s(io);
      s.connect(tcp::endpoint(asio::ip::address_v4::loopback(), listen_port_));
      s.set_option(tcp::no_delay(true));
      std::string pending;
      for (int i = 0; i < kLines && failures[c].empty(); ++i) {
        const uint64_t open_at_send = epoch_.load();
        std::string line = std::to_string(c) + ":" + std::to_string(i) + "\n";
        asio::write(s, asio::buffer(line));
        std::string got = read_for(s, 10s, line.size());
        const uint64_t acked_at_receipt = acked.load();
        if (got != line) {
          failures[c] = "expected '" + line + "', got '" + got + "'";
        } else if (acked_at_receipt < open_at_send) {
          failures[c] = "'" + line + "' released before epoch " + std::to_string(open_at_send) +
                        " was acknowledged";
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  done = true;
  acker.join();
  for (int c = 0; c < kConnections; ++c) EXPECT_EQ(failures[c], "") << "connection " << c;
}

INSTANTIATE_TEST_SUITE_P(SessionThreads, ProxyFixture, ::testing::Values(0u, 3u),
                         [](const ::testing::TestParamInfo<unsigned>& info) {
                           return "io_threads_" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace romulus::checkpoint::output_proxy_test
