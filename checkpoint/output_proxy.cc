#include "checkpoint/output_proxy.h"

#include <fmt/format.h>

#include <algorithm>
#include <future>
#include <vector>

#include "common/net.h"

namespace romulus::checkpoint {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {
// Per-connection read buffers. Kept small: every open connection owns two,
// and on this kind of VM first-touching memory costs ~20 us per page, so
// 64 KiB buffers made thousands of simultaneous connect()s take seconds.
constexpr size_t kReadSize = 16 * 1024;
// Guest output read in the same epoch is appended to one held chunk, up to
// this size, so a pipelining client's replies go out in few writes.
constexpr size_t kMaxCoalesce = 256 * 1024;
constexpr size_t kLatencyWindow = 4096;
}  // namespace

// One client connection and its twin connection to the guest.
class ProxySession : public std::enable_shared_from_this<ProxySession> {
 public:
  ProxySession(OutputProxy& proxy, tcp::socket client)
      : proxy_(proxy), client_(std::move(client)), guest_(proxy.io_) {}

  void start() {
    auto self = shared_from_this();
    const tcp::endpoint guest_ep(asio::ip::address_v4::loopback(), proxy_.options_.guest_port);
    guest_.async_connect(guest_ep, [this, self](boost::system::error_code ec) {
      if (ec) {
        close_all();  // the guest is not serving (yet): the client retries
        return;
      }
      boost::system::error_code ignored;
      guest_.set_option(tcp::no_delay(true), ignored);
      client_.set_option(tcp::no_delay(true), ignored);
      do_read_client();
      do_read_guest();
    });
  }

  // Releases held output of epochs <= acked (all of it when not buffering).
  void release(uint64_t acked, bool buffering) {
    bool moved = false;
    const auto now = Clock::now();
    if (held_.empty()) return resume_guest_reads();
    if (proxy_.gate_ && !proxy_.gate_(now, buffering)) return;  // held until reopen_gate()
    while (!held_.empty() && (!buffering || held_.front().epoch <= acked)) {
      Held& h = held_.front();
      proxy_.record_latency(std::chrono::duration<double, std::milli>(now - h.read_at).count());
      to_client_.push_back(std::move(h));
      held_.pop_front();
      moved = true;
    }
    if (moved) {
      proxy_.note_release(now);
      if (!writing_client_) do_write_client();
    }
    resume_guest_reads();
  }

  // Output in the proxy for this connection: held for an ack, or acked and
  // waiting for the client to take it.
  size_t buffered_bytes() const { return buffered_bytes_; }
  std::optional<Clock::time_point> oldest_held() const {
    if (held_.empty()) return std::nullopt;
    return held_.front().read_at;
  }

  void close_all() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ec;
    client_.close(ec);
    guest_.close(ec);
    proxy_.sessions_.erase(shared_from_this());
  }

 private:
  struct Held {
    std::vector<uint8_t> bytes;  // empty = the guest closed its side
    uint64_t epoch;
    Clock::time_point read_at;
  };

  // Back-pressure lifted: read from the guest again.
  void resume_guest_reads() {
    if (guest_read_paused_ && buffered_bytes_ < proxy_.options_.max_held_bytes) {
      guest_read_paused_ = false;
      do_read_guest();
    }
  }

  void do_read_client() {
    auto self = shared_from_this();
    client_.async_read_some(
        asio::buffer(from_client_), [this, self](boost::system::error_code ec, size_t n) {
          if (closed_) return;
          if (ec) {
            // The client is done sending: pass the half-close on to the guest.
            boost::system::error_code ignored;
            guest_.shutdown(tcp::socket::shutdown_send, ignored);
            client_done_ = true;
            if (guest_done_ && held_.empty() && to_client_.empty()) close_all();
            return;
          }
          proxy_.bytes_to_guest_.fetch_add(n, std::memory_order_relaxed);
          // Client bytes reach the guest at once; the next read waits for this write.
          asio::async_write(guest_, asio::buffer(from_client_.data(), n),
                            [this, self](boost::system::error_code wec, size_t) {
                              if (closed_) return;
                              if (wec) {
                                close_all();
                                return;
                              }
                              do_read_client();
                            });
        });
  }

  void do_read_guest() {
    if (guest_done_ || closed_) return;
    if (buffered_bytes_ >= proxy_.options_.max_held_bytes) {
      guest_read_paused_ = true;
      return;
    }
    auto self = shared_from_this();
    guest_.async_read_some(
        asio::buffer(from_guest_), [this, self](boost::system::error_code ec, size_t n) {
          if (closed_) return;
          // Tag with the epoch open now: released when that epoch is acked.
          const uint64_t epoch = proxy_.buffering_ ? proxy_.open_epoch_() : 0;
          if (ec) {
            guest_done_ = true;
            held_.push_back(Held{{}, epoch, Clock::now()});  // the close is output too
          } else {
            // Same epoch as the newest held chunk: append to it (its release
            // time is the same; its latency is counted from its first byte).
            if (!held_.empty() && held_.back().epoch == epoch && !held_.back().bytes.empty() &&
                held_.back().bytes.size() + n <= kMaxCoalesce) {
              auto& b = held_.back().bytes;
              b.insert(b.end(), from_guest_.begin(), from_guest_.begin() + static_cast<long>(n));
            } else {
              held_.push_back(Held{std::vector<uint8_t>(from_guest_.begin(),
                                                        from_guest_.begin() + static_cast<long>(n)),
                                   epoch, Clock::now()});
            }
            buffered_bytes_ += n;
          }
          if (proxy_.buffering_ && proxy_.on_output_held_) proxy_.on_output_held_(epoch);
          release(proxy_.acked_, proxy_.buffering_);
          if (!ec) do_read_guest();
        });
  }

  void do_write_client() {
    if (to_client_.empty() || closed_) {
      writing_client_ = false;
      return;
    }
    writing_client_ = true;
    if (to_client_.front().bytes.empty()) {
      // The guest's close, now committed: end the client's stream.
      boost::system::error_code ignored;
      client_.shutdown(tcp::socket::shutdown_send, ignored);
      to_client_.clear();
      writing_client_ = false;
      if (client_done_) close_all();
      return;
    }
    auto self = shared_from_this();
    asio::async_write(client_, asio::buffer(to_client_.front().bytes),
                      [this, self](boost::system::error_code ec, size_t n) {
                        if (closed_) return;
                        if (ec) {
                          close_all();
                          return;
                        }
                        proxy_.bytes_released_.fetch_add(n, std::memory_order_relaxed);
                        buffered_bytes_ -= n;
                        to_client_.pop_front();
                        do_write_client();
                        resume_guest_reads();
                      });
  }

  OutputProxy& proxy_;
  tcp::socket client_, guest_;
  std::array<uint8_t, kReadSize> from_client_{}, from_guest_{};
  std::deque<Held> held_, to_client_;
  size_t buffered_bytes_ = 0;  // in held_ and to_client_
  bool writing_client_ = false;
  bool guest_read_paused_ = false;
  bool guest_done_ = false, client_done_ = false;
  bool closed_ = false;
};

OutputProxy::OutputProxy(asio::io_context& io, OutputProxyOptions options,
                         std::function<uint64_t()> open_epoch)
    : io_(io),
      options_(std::move(options)),
      open_epoch_(std::move(open_epoch)),
      acceptor_(io),
      buffering_(options_.buffering) {
  stats_.buffering = buffering_;
}

OutputProxy::~OutputProxy() = default;

Result<uint16_t> OutputProxy::pick_free_port() {
  asio::io_context io;
  tcp::acceptor a(io);
  boost::system::error_code ec;
  a.open(tcp::v4(), ec);
  if (!ec) a.bind(tcp::endpoint(asio::ip::address_v4::loopback(), 0), ec);
  if (ec)
    return Status::io_error(fmt::format("cannot find a free loopback port: {}", ec.message()));
  return a.local_endpoint().port();
}

Status OutputProxy::start() {
  ROMULUS_RETURN_IF_ERROR(
      common::listen_tcp(acceptor_, options_.listen_host, options_.listen_port, "--service"));
  boost::system::error_code ec;
  acceptor_.non_blocking(true, ec);  // for do_accept()'s batch
  if (ec) return Status::io_error(fmt::format("--service listener: {}", ec.message()));
  asio::post(io_, [this] { do_accept(); });
  return Status::ok();
}

void OutputProxy::do_accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      add_session(std::move(socket));
      // Take the connections already waiting too. One accept per reactor
      // round made thousands of simultaneous connects wait seconds behind
      // busy sessions; the acceptor is non-blocking, so this stops at the
      // first would_block (and after a bounded batch, to stay fair).
      for (int i = 0; i < 256; ++i) {
        tcp::socket more(io_);
        boost::system::error_code aec;
        acceptor_.accept(more, aec);
        if (aec) break;
        add_session(std::move(more));
      }
    }
    do_accept();
  });
}

void OutputProxy::add_session(tcp::socket socket) {
  auto s = std::make_shared<ProxySession>(*this, std::move(socket));
  sessions_.insert(s);
  {
    std::lock_guard lock(stats_mu_);
    stats_.connections++;
  }
  s->start();
}

void OutputProxy::on_ack(uint64_t epoch) {
  asio::post(io_, [this, epoch] {
    if (epoch <= acked_) return;
    acked_ = epoch;
    // release() may close and erase sessions: walk a snapshot (kept between
    // acks, so copying thousands of sessions 20-100 times a second allocates
    // nothing).
    ack_snapshot_.assign(sessions_.begin(), sessions_.end());
    for (auto& s : ack_snapshot_) s->release(acked_, buffering_);
    ack_snapshot_.clear();
    refresh_held_stats();
  });
}

void OutputProxy::note_release(Clock::time_point now) {
  const int64_t t = now.time_since_epoch().count();
  int64_t zero = 0;
  first_release_.compare_exchange_strong(zero, t, std::memory_order_relaxed);
  last_release_.store(t, std::memory_order_relaxed);
}

std::optional<OutputProxy::ReleaseInterval> OutputProxy::take_release_interval() {
  const int64_t first = first_release_.exchange(0, std::memory_order_relaxed);
  const int64_t last = last_release_.load(std::memory_order_relaxed);
  if (first == 0) return std::nullopt;
  return ReleaseInterval{Clock::time_point(Clock::duration(first)),
                         Clock::time_point(Clock::duration(std::max(first, last)))};
}

void OutputProxy::reopen_gate() {
  asio::post(io_, [this] {
    ack_snapshot_.assign(sessions_.begin(), sessions_.end());
    for (auto& s : ack_snapshot_) s->release(acked_, buffering_);
    ack_snapshot_.clear();
  });
}

void OutputProxy::set_buffering(bool on) {
  asio::post(io_, [this, on] {
    if (buffering_ == on) return;
    buffering_ = on;
    {
      std::lock_guard lock(stats_mu_);
      stats_.buffering = on;
    }
    if (!on) {
      auto sessions = sessions_;
      for (auto& s : sessions) s->release(acked_, false);
    }
  });
}

void OutputProxy::refresh_held_stats() const {
  uint64_t held = 0;
  std::optional<Clock::time_point> oldest;
  for (const auto& s : sessions_) {
    held += s->buffered_bytes();
    if (auto t = s->oldest_held(); t && (!oldest || *t < *oldest)) oldest = t;
  }
  std::lock_guard lock(stats_mu_);
  stats_.bytes_held = held;
  stats_.open_connections = sessions_.size();
  stats_.oldest_held_ms =
      oldest ? std::chrono::duration<double, std::milli>(Clock::now() - *oldest).count() : 0.0;
}

void OutputProxy::record_latency(double ms) {
  added_latency_.observe(ms / 1000.0);
  std::lock_guard lock(stats_mu_);
  latencies_.push_back(ms);
  if (latencies_.size() > kLatencyWindow) latencies_.pop_front();
}

OutputProxyStats OutputProxy::stats() const {
  // Held bytes live on the io thread: refresh them there (briefly waiting
  // for it when asked from another thread, e.g. the control socket's).
  if (io_.get_executor().running_in_this_thread()) {
    refresh_held_stats();
  } else if (!io_.stopped()) {
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    asio::post(io_, [this, done] {
      refresh_held_stats();
      done->set_value();
    });
    fut.wait_for(std::chrono::seconds(1));
  }
  OutputProxyStats s;
  std::vector<double> lat;
  {
    std::lock_guard lock(stats_mu_);
    s = stats_;
    lat.assign(latencies_.begin(), latencies_.end());
  }
  s.bytes_to_guest = bytes_to_guest_.load(std::memory_order_relaxed);
  s.bytes_released = bytes_released_.load(std::memory_order_relaxed);
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    s.added_latency_p50_ms = lat[(lat.size() - 1) * 50 / 100];
    s.added_latency_p99_ms = lat[(lat.size() - 1) * 99 / 100];
  }
  return s;
}

void OutputProxy::stop() {
  asio::post(io_, [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
    auto sessions = sessions_;
    for (auto& s : sessions) s->close_all();
  });
}

}  // namespace romulus::checkpoint
