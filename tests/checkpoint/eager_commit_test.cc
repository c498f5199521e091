// Output-triggered group commit (--commit eager) with real parts: the
// romulus-kvstore guest as a real process on a real arena, the compare
// tracker, the epoch engine's run() loop, and the output proxy on loopback
// TCP. The transport records which checkpoints were sent; the test plays the
// backup and decides when each is acknowledged.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_pause.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/output_proxy.h"
#include "checkpoint/tracker_choice.h"
#include "common/net.h"
#include "common/shared_memory.h"
#include "tests/support/guest_paths.h"
#include "tests/support/socket_read.h"
#include "tests/support/status_matchers.h"

namespace romulus::checkpoint::eager_commit_test {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using romulus::testing::read_for;

// Counts checkpoints as they are fully queued; acknowledges nothing itself.
class RecordingTransport final : public CheckpointTransport {
 public:
  Status send(protocol::Bytes bytes) override {
    recycle(std::move(bytes));
    return Status::ok();
  }
  Status flush() override { return Status::ok(); }
  void end_of_checkpoint(uint64_t epoch) override {
    std::lock_guard lock(mu_);
    sent_.insert(epoch);
    cv_.notify_all();
  }
  // Waits until checkpoint `epoch` was sent.
  bool wait_sent(uint64_t epoch, std::chrono::seconds limit = 20s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return sent_.count(epoch) != 0; });
  }
  uint64_t last_sent() {
    std::lock_guard lock(mu_);
    return sent_.empty() ? 0 : *sent_.rbegin();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<uint64_t> sent_;
};

class EagerCommitTest : public ::testing::Test {
 protected:
  static constexpr size_t kArenaBytes = 16u << 20;

  void SetUp() override {
    arena_ = std::move(common::SharedMemory::create("test-arena", kArenaBytes)).value();
    control_ = std::move(common::SharedMemory::create("test-control", 4096)).value();
    auto guest_port = common::free_loopback_port();
    ASSERT_OK(guest_port);
    GuestSpec spec;
    spec.argv = {romulus::testing::example_binary("kvstore")};
    spec.arena_fd = arena_.fd();
    spec.arena_size = arena_.size();
    spec.control_fd = control_.fd();
    spec.tracker = "compare";
    spec.service_port = *guest_port;
    auto g = GuestProcess::start(spec);
    ASSERT_OK(g);
    guest_.emplace(std::move(g).value());
    ASSERT_OK(guest_->wait_attached(10s));
    TrackerDecision d;
    d.kind = TrackerKind::kCompare;
    auto t = make_tracker(d, *guest_, arena_.data(), arena_.size());
    ASSERT_OK(t);
    tracker_ = std::move(t).value();

    pause_.emplace(*guest_);
    EngineOptions eo;
    eo.commit = CommitMode::kEager;
    eo.interval = 60s;  // the timer never fires during the test
    eo.min_gap = min_gap_;
    eo.arena_fd = arena_.fd();
    engine_.emplace(*pause_, *tracker_, kArenaBytes / protocol::kPageSize, &transport_, stats_, eo);
    ASSERT_OK(engine_->initial_sync());

    auto port = common::free_loopback_port();
    ASSERT_OK(port);
    listen_port_ = *port;
    OutputProxyOptions po;
    po.listen.port = listen_port_;
    po.guest_port = *guest_port;
    proxy_.emplace(io_, po, [this] { return engine_->open_epoch(); });
    proxy_->set_on_output_held([this](uint64_t epoch) { engine_->note_output(epoch); });
    ASSERT_OK(proxy_->start());
    work_.emplace(asio::make_work_guard(io_));
    io_thread_ = std::thread([this] { io_.run(); });
    // Everything so far (the sync) is acknowledged: only what follows is held.
    proxy_->on_ack(engine_->last_epoch());
    engine_thread_ = std::thread([this] { run_status_ = engine_->run(stop_); });
  }

  void TearDown() override {
    stop_ = true;
    if (engine_) engine_->wake();
    if (engine_thread_.joinable()) engine_thread_.join();
    EXPECT_OK(run_status_);
    if (proxy_) {
      proxy_->stop();
      std::promise<void> done;
      asio::post(io_, [&] { done.set_value(); });
      done.get_future().wait_for(5s);
    }
    work_.reset();
    io_.stop();
    if (io_thread_.joinable()) io_thread_.join();
    if (guest_) (void)guest_->stop(2s);
  }

  std::unique_ptr<tcp::socket> connect() {
    for (int attempt = 0;; ++attempt) {
      auto s = std::make_unique<tcp::socket>(client_io_);
      boost::system::error_code ec;
      s->connect(tcp::endpoint(asio::ip::address_v4::loopback(), listen_port_), ec);
      if (!ec) {
        s->set_option(tcp::no_delay(true));
        return s;
      }
      if (attempt > 100) ADD_FAILURE() << "cannot connect to the proxy: " << ec.message();
      std::this_thread::sleep_for(20ms);
    }
  }

  // Waits until checkpoint `epoch` was sent and the engine has counted it:
  // the transport hears of the checkpoint before the statistics record it.
  bool wait_sent(uint64_t epoch) {
    if (!transport_.wait_sent(epoch)) return false;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (stats_.totals().sent_epoch < epoch) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  // Waits until the proxy holds at least n bytes of guest output.
  void wait_held(uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (proxy_->stats().bytes_held < n) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the guest never answered";
      std::this_thread::sleep_for(2ms);
    }
  }

  std::chrono::microseconds min_gap_ = 0us;  // a derived fixture may set it first
  common::SharedMemory arena_, control_;
  std::optional<GuestProcess> guest_;
  std::unique_ptr<DirtyTracker> tracker_;
  std::optional<GuestPause> pause_;
  RecordingTransport transport_;
  StatsRecorder stats_;
  std::optional<EpochEngine> engine_;
  asio::io_context io_, client_io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread io_thread_, engine_thread_;
  std::optional<OutputProxy> proxy_;
  uint16_t listen_port_ = 0;
  std::atomic<bool> stop_{false};
  Status run_status_;
};

TEST_F(EagerCommitTest, HeldOutputStartsACheckpointWithoutWaitingForTheInterval) {
  const uint64_t before = transport_.last_sent();
  auto c = connect();
  asio::write(*c, asio::buffer(std::string("SET a 1\n")));
  // The interval is a minute: only the held reply can start this checkpoint.
  ASSERT_TRUE(wait_sent(before + 1)) << "no checkpoint followed the held output";
  proxy_->on_ack(before + 1);
  EXPECT_EQ(read_for(*c, 20s, 3), "OK\n");
  EXPECT_GE(stats_.totals().output_checkpoints, 1u);
  EXPECT_EQ(stats_.totals().timer_checkpoints, 0u);
}

TEST_F(EagerCommitTest, AReplyProducedWhileCheckpointNIsInFlightIsReleasedOnlyWithNPlus1sAck) {
  auto a = connect();
  auto b = connect();
  // Nothing is held and the interval is a minute: the engine sleeps, so the
  // reply to a is tagged with the open epoch n and starts checkpoint n.
  const uint64_t n = engine_->open_epoch();
  asio::write(*a, asio::buffer(std::string("SET a 1\n")));
  ASSERT_TRUE(wait_sent(n)) << "no checkpoint followed the held output";
  wait_held(3);
  // While n is in flight, b's request is answered: that reply belongs to n+1.
  ASSERT_EQ(engine_->open_epoch(), n + 1);
  asio::write(*b, asio::buffer(std::string("SET b 2\n")));
  wait_held(6);
  // Group commit: the held reply starts n+1 by itself (no timer, no ack needed).
  ASSERT_TRUE(wait_sent(n + 1)) << "the reply held for n+1 started no checkpoint";
  proxy_->on_ack(n);
  EXPECT_EQ(read_for(*a, 20s, 3), "OK\n");
  EXPECT_EQ(read_for(*b, 300ms, 3), "") << "released with the ack of the checkpoint before its own";
  proxy_->on_ack(n + 1);
  EXPECT_EQ(read_for(*b, 20s, 3), "OK\n");
}

TEST_F(EagerCommitTest, WithNothingHeldNoCheckpointIsTaken) {
  // A round trip through a checkpoint, then quiet: the next one is a minute away.
  auto c = connect();
  const uint64_t first = engine_->open_epoch();
  asio::write(*c, asio::buffer(std::string("PING\n")));
  ASSERT_TRUE(wait_sent(first));
  proxy_->on_ack(first);
  ASSERT_EQ(read_for(*c, 20s, 5), "PONG\n");
  const uint64_t epochs = stats_.totals().epochs;
  // Reading only (a GET changes no page, the reply waits for its epoch):
  // exactly one more checkpoint per held reply, none while idle.
  for (int i = 0; i < 5; ++i) {
    const uint64_t e = engine_->open_epoch();
    asio::write(*c, asio::buffer(std::string("GET a\n")));
    ASSERT_TRUE(wait_sent(e));
    proxy_->on_ack(e);
    ASSERT_EQ(read_for(*c, 20s, 10), "NOT_FOUND\n");
  }
  EXPECT_EQ(stats_.totals().epochs, epochs + 5);
}

// A minute of min-gap as well as of interval: a runnable guest's output would
// wait that long.
class EagerCommitLongGapTest : public EagerCommitTest {
 protected:
  EagerCommitLongGapTest() { min_gap_ = 60s; }
};

TEST_F(EagerCommitLongGapTest, AGuestWaitingForItsNextRequestIsCheckpointedWithoutTheGap) {
  // kvstore answers, then blocks in epoll for the next request: stopping it
  // costs it nothing, so each reply's checkpoint starts at once, back to back.
  auto c = connect();
  for (int i = 0; i < 3; ++i) {
    const uint64_t e = engine_->open_epoch();
    asio::write(*c, asio::buffer("SET k" + std::to_string(i) + " 1\n"));
    ASSERT_TRUE(wait_sent(e)) << "reply " << i << " waited for the gap of a waiting guest";
    proxy_->on_ack(e);
    ASSERT_EQ(read_for(*c, 20s, 3), "OK\n");
  }
  EXPECT_GE(stats_.totals().output_checkpoints, 3u);
  EXPECT_EQ(stats_.totals().timer_checkpoints, 0u);
}

}  // namespace
}  // namespace romulus::checkpoint::eager_commit_test
