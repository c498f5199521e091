#include "checkpoint/output_proxy.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <future>
#include <thread>
#include <vector>

#include "checkpoint/proxy_state.h"
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
// How long stats() from another thread waits for each worker to refresh its
// held bytes: a worker does it at its next turn; a stopping or stuck one must
// not hold up a status reply for long.
constexpr std::chrono::seconds kHeldStatsWithin{1};
// A client that connects while the guest is not listening yet (it is
// starting, or resuming after a takeover) is held while the proxy tries the
// guest again this often, for this long, instead of being closed at once.
constexpr std::chrono::milliseconds kGuestConnectRetry{10};
constexpr std::chrono::seconds kGuestListenPatience{10};
}  // namespace

// The sessions of one thread. With OutputProxyOptions::io_threads = 0 there
// is one, on the proxy's given io_context; otherwise each has its own
// io_context and thread. Everything but the summary fields is touched only
// on that thread.
struct ProxyWorker {
  explicit ProxyWorker(asio::io_context* shared)
      : own(shared ? nullptr : std::make_unique<asio::io_context>(1)),
        io(shared ? *shared : *own) {}

  std::unique_ptr<asio::io_context> own;  // null: runs on the proxy's io_context
  asio::io_context& io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  std::set<std::shared_ptr<ProxySession>> sessions;
  // Sessions holding output, each at most once: the ones an ack must visit.
  std::vector<std::shared_ptr<ProxySession>> holding;
  std::vector<std::shared_ptr<ProxySession>> snapshot;  // a walk's copy, kept for its capacity
  uint64_t buffered_bytes = 0;                          // the sessions' output in the proxy
  // The last refresh_held_stats(), read by stats() under the proxy's stats_mu_.
  uint64_t held_seen = 0, open_seen = 0;
  std::optional<Clock::time_point> oldest_seen;
};

// One client connection and its twin connection to the guest; lives on one
// worker's thread. Its two directions' states are drawn in
// checkpoint/proxy_state.h.
class ProxySession : public std::enable_shared_from_this<ProxySession> {
 public:
  ProxySession(OutputProxy& proxy, ProxyWorker& worker, tcp::socket client)
      : proxy_(proxy),
        worker_(worker),
        client_(std::move(client)),
        guest_(worker.io),
        retry_(worker.io),
        guest_to_client_(GuestToClientState::kReading, bug_log(proxy)),
        client_to_guest_(ClientToGuestState::kOpen, bug_log(proxy)) {}

  void start() { connect_guest(Clock::now() + kGuestListenPatience); }

  // Connects to the guest; while it refuses (not listening yet: starting, or
  // resuming after a takeover) tries again every kGuestConnectRetry until
  // give_up, holding the client, whose bytes wait in its socket.
  void connect_guest(Clock::time_point give_up) {
    auto self = shared_from_this();
    const tcp::endpoint guest_ep(asio::ip::address_v4::loopback(), proxy_.options_.guest_port);
    guest_.async_connect(guest_ep, [this, self, give_up](boost::system::error_code ec) {
      if (!closed() && ec == asio::error::connection_refused && Clock::now() < give_up) {
        boost::system::error_code ignored;
        guest_.close(ignored);
        retry_.expires_after(kGuestConnectRetry);
        retry_.async_wait([this, self, give_up](boost::system::error_code e) {
          if (e || closed()) return close_all();
          connect_guest(give_up);
        });
        return;
      }
      if (ec || closed()) {
        close_all();  // the guest is not serving: the client sees a close, and retries
        return;
      }
      boost::system::error_code ignored;
      guest_.set_option(tcp::no_delay(true), ignored);
      client_.set_option(tcp::no_delay(true), ignored);
      // For the write-at-once paths: a full socket says would_block, not waits.
      guest_.non_blocking(true, ignored);
      client_.non_blocking(true, ignored);
      do_read_client();
      do_read_guest();
    });
  }

  // Releases held output of epochs <= acked (all of it when not buffering).
  void release(uint64_t acked, bool buffering) {
    bool moved = false;
    const auto now = Clock::now();
    if (held_.empty()) return resume_guest_reads();
    if (proxy_.gate_ && !proxy_.gate_(now, buffering)) {  // held until reopen_gate()
      note_holding();
      return;
    }
    // Acknowledged output leaves after the ack that allowed it (the newest:
    // an ack covers every epoch up to its own).
    const int64_t acked_at = proxy_.acked_at_.load(std::memory_order_acquire);
    const double after_ack_ms =
        buffering && acked_at != 0
            ? std::max(0.0, std::chrono::duration<double, std::milli>(
                                now - Clock::time_point(Clock::duration(acked_at)))
                                .count())
            : -1.0;
    while (!held_.empty() && (!buffering || held_.front().epoch <= acked)) {
      Held& h = held_.front();
      proxy_.record_latency(std::chrono::duration<double, std::milli>(now - h.read_at).count(),
                            after_ack_ms);
      to_client_.push_back(std::move(h));
      held_.pop_front();
      moved = true;
    }
    if (!held_.empty()) note_holding();
    if (moved) {
      proxy_.note_release(now);
      if (!writing_client_) do_write_client();
    }
    resume_guest_reads();
  }

  // The worker's walk took this session out of its holding list.
  void left_holding() { in_holding_ = false; }

  std::optional<Clock::time_point> oldest_held() const {
    if (held_.empty()) return std::nullopt;
    return held_.front().read_at;
  }

  bool closed() const { return guest_to_client_.state() == GuestToClientState::kClosed; }

  void close_all() {
    if (closed()) return;
    guest_to_client_.transition(GuestToClientState::kClosed);
    client_to_guest_.transition(ClientToGuestState::kClosed);
    boost::system::error_code ec;
    client_.close(ec);
    guest_.close(ec);
    retry_.cancel();
    worker_.buffered_bytes -= buffered_bytes_;
    buffered_bytes_ = 0;
    worker_.sessions.erase(shared_from_this());
  }

 private:
  // The state machines' log: written to only for an illegal transition (a
  // bug), never on the legal paths.
  static std::function<void(const std::string&)> bug_log(OutputProxy& proxy) {
    return [&proxy](const std::string& line) {
      if (proxy.options_.log) proxy.options_.log(line);
    };
  }

  struct Held {
    std::vector<uint8_t> bytes;  // empty = the guest closed its side
    uint64_t epoch;
    Clock::time_point read_at;
  };

  // Output is held: the next ack must visit this session.
  void note_holding() {
    if (in_holding_ || closed()) return;
    in_holding_ = true;
    worker_.holding.push_back(shared_from_this());
  }

  // Back-pressure lifted: read from the guest again.
  void resume_guest_reads() {
    if (guest_to_client_.state() == GuestToClientState::kPaused &&
        buffered_bytes_ < proxy_.options_.max_held_bytes) {
      guest_to_client_.transition(GuestToClientState::kReading);
      do_read_guest();
    }
  }

  // Writes what a non-blocking write takes now; returns the bytes written,
  // or nullopt when the socket broke.
  static std::optional<size_t> write_now(tcp::socket& s, const uint8_t* data, size_t n) {
    boost::system::error_code ec;
    size_t w = s.write_some(asio::buffer(data, n), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) return 0;
    if (ec) return std::nullopt;
    return w;
  }

  void do_read_client() {
    auto self = shared_from_this();
    client_.async_read_some(
        asio::buffer(from_client_), [this, self](boost::system::error_code ec, size_t n) {
          if (closed()) return;
          if (ec) {
            // The client is done sending: pass the half-close on to the guest.
            boost::system::error_code ignored;
            guest_.shutdown(tcp::socket::shutdown_send, ignored);
            client_to_guest_.transition(ClientToGuestState::kClientEnded);
            if (guest_to_client_.state() == GuestToClientState::kGuestEnded && held_.empty() &&
                to_client_.empty()) {
              close_all();
            }
            return;
          }
          proxy_.bytes_to_guest_.fetch_add(n, std::memory_order_relaxed);
          // Client bytes reach the guest at once (never held): written now,
          // from the read buffer; only a remainder the socket did not take
          // waits for an asynchronous write. The next read waits for it.
          auto w = write_now(guest_, from_client_.data(), n);
          if (!w) return close_all();
          if (*w == n) return do_read_client();
          asio::async_write(guest_, asio::buffer(from_client_.data() + *w, n - *w),
                            [this, self](boost::system::error_code wec, size_t) {
                              if (closed()) return;
                              if (wec) return close_all();
                              do_read_client();
                            });
        });
  }

  void do_read_guest() {
    if (guest_to_client_.state() != GuestToClientState::kReading) return;
    if (buffered_bytes_ >= proxy_.options_.max_held_bytes) {
      guest_to_client_.transition(GuestToClientState::kPaused);
      return;
    }
    auto self = shared_from_this();
    guest_.async_read_some(
        asio::buffer(from_guest_), [this, self](boost::system::error_code ec, size_t n) {
          if (closed()) return;
          const bool buffering = proxy_.buffering_.load(std::memory_order_acquire);
          // Tag with the epoch open now: released when that epoch is acked.
          const uint64_t epoch = buffering ? proxy_.open_epoch_() : 0;
          const auto now = Clock::now();
          if (ec) {
            guest_to_client_.transition(GuestToClientState::kGuestEnded);
            held_.push_back(Held{{}, epoch, now});  // the close is output too
          } else if (!buffering && held_.empty() && to_client_.empty() && !writing_client_ &&
                     (!proxy_.gate_ || proxy_.gate_(now, false))) {
            return write_direct(n, now);
          } else {
            // Same epoch as the newest held chunk: append to it (its release
            // time is the same; its latency is counted from its first byte).
            if (!held_.empty() && held_.back().epoch == epoch && !held_.back().bytes.empty() &&
                held_.back().bytes.size() + n <= kMaxCoalesce) {
              auto& b = held_.back().bytes;
              b.insert(b.end(), from_guest_.begin(), from_guest_.begin() + static_cast<long>(n));
            } else {
              std::vector<uint8_t> b = take_spare();
              b.assign(from_guest_.begin(), from_guest_.begin() + static_cast<long>(n));
              held_.push_back(Held{std::move(b), epoch, now});
            }
            buffered_bytes_ += n;
            worker_.buffered_bytes += n;
          }
          if (buffering && proxy_.on_output_held_) proxy_.on_output_held_(epoch);
          release(proxy_.acked_.load(std::memory_order_acquire), buffering);
          if (!ec) do_read_guest();
        });
  }

  // Unbuffered output with nothing queued before it: straight from the read
  // buffer to the client (no copy, no queue); the next guest read waits for it.
  void write_direct(size_t n, Clock::time_point now) {
    auto w = write_now(client_, from_guest_.data(), n);
    if (!w) return close_all();
    proxy_.bytes_released_.fetch_add(*w, std::memory_order_relaxed);
    proxy_.note_release(now);
    if (*w == n) return do_read_guest();
    writing_client_ = true;
    auto self = shared_from_this();
    asio::async_write(client_, asio::buffer(from_guest_.data() + *w, n - *w),
                      [this, self](boost::system::error_code ec, size_t m) {
                        if (closed()) return;
                        if (ec) return close_all();
                        proxy_.bytes_released_.fetch_add(m, std::memory_order_relaxed);
                        writing_client_ = false;
                        do_read_guest();
                      });
  }

  void do_write_client() {
    if (to_client_.empty() || closed()) {
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
      if (client_to_guest_.state() == ClientToGuestState::kClientEnded) close_all();
      return;
    }
    auto self = shared_from_this();
    asio::async_write(client_, asio::buffer(to_client_.front().bytes),
                      [this, self](boost::system::error_code ec, size_t n) {
                        if (closed()) return;
                        if (ec) {
                          close_all();
                          return;
                        }
                        proxy_.bytes_released_.fetch_add(n, std::memory_order_relaxed);
                        buffered_bytes_ -= n;
                        worker_.buffered_bytes -= n;
                        give_spare(std::move(to_client_.front().bytes));
                        to_client_.pop_front();
                        do_write_client();
                        resume_guest_reads();
                      });
  }

  // Written chunks are kept (a few, not the big ones) for the next held
  // output, so a request-reply cycle allocates nothing.
  std::vector<uint8_t> take_spare() {
    if (spare_.empty()) return {};
    std::vector<uint8_t> b = std::move(spare_.back());
    spare_.pop_back();
    return b;
  }
  void give_spare(std::vector<uint8_t> b) {
    if (spare_.size() < 2 && b.capacity() <= 4 * kReadSize) {
      b.clear();
      spare_.push_back(std::move(b));
    }
  }

  OutputProxy& proxy_;
  ProxyWorker& worker_;
  tcp::socket client_, guest_;
  asio::steady_timer retry_;  // connect_guest()'s next try
  std::array<uint8_t, kReadSize> from_client_{}, from_guest_{};
  std::deque<Held> held_, to_client_;
  std::vector<std::vector<uint8_t>> spare_;
  size_t buffered_bytes_ = 0;  // in held_ and to_client_
  common::StateMachine<GuestToClientState> guest_to_client_;
  common::StateMachine<ClientToGuestState> client_to_guest_;
  // Not connection states, so flags beside the drawn ones: a write to the
  // client is in flight (Asio's one write at a time, in any state but
  // closed), and this session is on worker_.holding (the worker's list,
  // which the worker's walk empties).
  bool writing_client_ = false;
  bool in_holding_ = false;
};

OutputProxy::OutputProxy(asio::io_context& io, OutputProxyOptions options,
                         std::function<uint64_t()> open_epoch)
    : io_(io),
      options_(std::move(options)),
      open_epoch_(std::move(open_epoch)),
      acceptor_(io),
      buffering_(options_.buffering) {
  stats_.buffering = options_.buffering;
  if (options_.io_threads == 0) {
    workers_.push_back(std::make_unique<ProxyWorker>(&io_));
  }
  for (unsigned i = 0; i < options_.io_threads; ++i) {
    auto w = std::make_unique<ProxyWorker>(nullptr);
    w->work.emplace(asio::make_work_guard(w->io));
    ProxyWorker* wp = w.get();
    w->thread = std::thread([wp] { wp->io.run(); });
    workers_.push_back(std::move(w));
  }
}

OutputProxy::~OutputProxy() {
  for (auto& w : workers_) {
    if (!w->own) continue;
    w->work.reset();
    w->io.stop();
    if (w->thread.joinable()) w->thread.join();
  }
  // Sessions (and their sockets) go before their io_contexts.
  for (auto& w : workers_) {
    w->snapshot.clear();
    w->holding.clear();
    w->sessions.clear();
  }
}

Status OutputProxy::start() {
  ROMULUS_RETURN_IF_ERROR(common::listen_tcp(acceptor_, options_.listen, "--service"));
  boost::system::error_code ec;
  acceptor_.non_blocking(true, ec);  // for do_accept()'s batch
  if (ec) return Status::io_error(fmt::format("--service listener: {}", ec.message()));
  asio::post(io_, [this] { do_accept(); });
  return Status::ok();
}

ProxyWorker& OutputProxy::next_worker() {
  ProxyWorker& w = *workers_[next_worker_ % workers_.size()];
  ++next_worker_;
  return w;
}

void OutputProxy::do_accept() {
  // Accepted on io_ and then handed to a worker: a pending accept holds a
  // socket of io_ only, so no operation of io_ outlives a worker's io_context.
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      add_session(next_worker(), std::move(socket));
      // Take the connections already waiting too. One accept per reactor
      // round made thousands of simultaneous connects wait seconds behind
      // busy sessions; the acceptor is non-blocking, so this stops at the
      // first would_block (and after a bounded batch, to stay fair).
      for (int i = 0; i < 256; ++i) {
        tcp::socket more(io_);
        boost::system::error_code aec;
        acceptor_.accept(more, aec);
        if (aec) break;
        add_session(next_worker(), std::move(more));
      }
    }
    do_accept();
  });
}

void OutputProxy::add_session(ProxyWorker& worker, tcp::socket accepted) {
  {
    std::lock_guard lock(stats_mu_);
    stats_.connections++;
  }
  std::optional<tcp::socket> socket;
  if (&worker.io == &io_) {
    socket.emplace(std::move(accepted));
  } else {
    // Move the connection to the worker's io_context.
    boost::system::error_code ec;
    const auto protocol = accepted.local_endpoint(ec).protocol();
    const int fd = ec ? -1 : accepted.release(ec);
    socket.emplace(worker.io);
    if (!ec) socket->assign(protocol, fd, ec);
    if (ec) {
      if (fd >= 0 && !socket->is_open()) ::close(fd);
      return;  // the client sees its connection closed and retries
    }
  }
  auto s = std::make_shared<ProxySession>(*this, worker, std::move(*socket));
  asio::post(worker.io, [&worker, s] {
    worker.sessions.insert(s);
    s->start();
  });
}

void OutputProxy::for_each_worker(std::function<void(ProxyWorker&)> fn) {
  auto shared = std::make_shared<std::function<void(ProxyWorker&)>>(std::move(fn));
  for (auto& w : workers_) {
    asio::post(w->io, [wp = w.get(), shared] { (*shared)(*wp); });
  }
}

void OutputProxy::on_ack(uint64_t epoch, Clock::time_point at) {
  if (acked_.load(std::memory_order_acquire) >= epoch) return;  // nothing new
  // Stored before the epoch is published: a release that sees the epoch sees
  // this ack's time or a newer one.
  acked_at_.store(at.time_since_epoch().count(), std::memory_order_release);
  uint64_t prev = acked_.load(std::memory_order_relaxed);
  while (prev < epoch && !acked_.compare_exchange_weak(prev, epoch, std::memory_order_acq_rel)) {
  }
  if (prev >= epoch) return;
  for_each_worker([this](ProxyWorker& w) {
    // Only the sessions holding output; release() may close and erase
    // sessions or put them back on the holding list, so walk a copy.
    w.snapshot.swap(w.holding);
    const uint64_t acked = acked_.load(std::memory_order_acquire);
    const bool buffering = buffering_.load(std::memory_order_acquire);
    for (auto& s : w.snapshot) {
      s->left_holding();
      s->release(acked, buffering);
    }
    w.snapshot.clear();
    refresh_held_stats(w);
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
  for_each_worker([this](ProxyWorker& w) {
    w.snapshot.assign(w.sessions.begin(), w.sessions.end());
    for (auto& s : w.snapshot) {
      s->release(acked_.load(std::memory_order_acquire),
                 buffering_.load(std::memory_order_acquire));
    }
    w.snapshot.clear();
  });
}

void OutputProxy::set_buffering(bool on) {
  if (buffering_.exchange(on, std::memory_order_acq_rel) == on) return;
  {
    std::lock_guard lock(stats_mu_);
    stats_.buffering = on;
  }
  if (on) return;
  for_each_worker([this](ProxyWorker& w) {
    w.snapshot.assign(w.sessions.begin(), w.sessions.end());
    for (auto& s : w.snapshot) s->release(acked_.load(std::memory_order_acquire), false);
    w.snapshot.clear();
  });
}

void OutputProxy::refresh_held_stats(ProxyWorker& w) const {
  std::optional<Clock::time_point> oldest;
  for (const auto& s : w.holding) {  // every session holding output is on the list
    if (auto t = s->oldest_held(); t && (!oldest || *t < *oldest)) oldest = t;
  }
  std::lock_guard lock(stats_mu_);
  w.held_seen = w.buffered_bytes;
  w.open_seen = w.sessions.size();
  w.oldest_seen = oldest;
}

void OutputProxy::record_latency(double ms, double after_ack_ms) {
  added_latency_.observe(ms / 1000.0);
  if (after_ack_ms >= 0) release_after_ack_.observe(after_ack_ms / 1000.0);
  std::lock_guard lock(stats_mu_);
  latencies_.push_back(ms);
  if (latencies_.size() > kLatencyWindow) latencies_.pop_front();
  if (after_ack_ms >= 0) {
    after_ack_.push_back(after_ack_ms);
    if (after_ack_.size() > kLatencyWindow) after_ack_.pop_front();
    after_ack_max_ms_ = std::max(after_ack_max_ms_, after_ack_ms);
  }
}

OutputProxyStats OutputProxy::stats() const {
  // Held bytes live on the session threads: refresh them there (briefly
  // waiting for each from another thread, e.g. the control socket's).
  for (const auto& wp : workers_) {
    ProxyWorker& w = *wp;
    if (w.io.get_executor().running_in_this_thread()) {
      refresh_held_stats(w);
    } else if (!w.io.stopped()) {
      auto done = std::make_shared<std::promise<void>>();
      auto fut = done->get_future();
      asio::post(w.io, [this, &w, done] {
        refresh_held_stats(w);
        done->set_value();
      });
      fut.wait_for(kHeldStatsWithin);
    }
  }
  OutputProxyStats s;
  std::vector<double> lat, after_ack;
  std::optional<Clock::time_point> oldest;
  {
    std::lock_guard lock(stats_mu_);
    s = stats_;
    s.bytes_held = 0;
    s.open_connections = 0;
    for (const auto& w : workers_) {
      s.bytes_held += w->held_seen;
      s.open_connections += w->open_seen;
      if (w->oldest_seen && (!oldest || *w->oldest_seen < *oldest)) oldest = w->oldest_seen;
    }
    lat.assign(latencies_.begin(), latencies_.end());
    after_ack.assign(after_ack_.begin(), after_ack_.end());
    s.release_after_ack_max_ms = after_ack_max_ms_;
  }
  s.oldest_held_ms =
      oldest ? std::chrono::duration<double, std::milli>(Clock::now() - *oldest).count() : 0.0;
  s.bytes_to_guest = bytes_to_guest_.load(std::memory_order_relaxed);
  s.bytes_released = bytes_released_.load(std::memory_order_relaxed);
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    s.added_latency_p50_ms = lat[(lat.size() - 1) * 50 / 100];
    s.added_latency_p99_ms = lat[(lat.size() - 1) * 99 / 100];
  }
  if (!after_ack.empty()) {
    std::sort(after_ack.begin(), after_ack.end());
    s.release_after_ack_p50_ms = after_ack[(after_ack.size() - 1) * 50 / 100];
    s.release_after_ack_p99_ms = after_ack[(after_ack.size() - 1) * 99 / 100];
  }
  return s;
}

void OutputProxy::stop() {
  asio::post(io_, [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
  });
  for_each_worker([](ProxyWorker& w) {
    w.snapshot.assign(w.sessions.begin(), w.sessions.end());
    for (auto& s : w.snapshot) s->close_all();
    w.snapshot.clear();
  });
}

}  // namespace romulus::checkpoint
