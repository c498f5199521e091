#include "checkpoint/tcp_sender.h"

#include <fmt/format.h>

#include <future>

#include "protocol/checkpoint_writer.h"

namespace romulus::checkpoint {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

TcpSender::TcpSender(asio::io_context& io, SenderOptions options, SenderCallbacks callbacks)
    : io_(io),
      socket_(io),
      liveness_timer_(io),
      options_(options),
      callbacks_(std::move(callbacks)) {}

TcpSender::~TcpSender() { close(); }

namespace {

// Runs one asynchronous operation on `io` (a private context with nothing else
// to do) until it completes or `deadline` passes, when `sock` is closed to cut
// it off. start(done) begins the operation; its handler must call done(ec).
// Returns the operation's error, or timed_out if it was cut off.
template <typename Start>
boost::system::error_code run_until(asio::io_context& io, tcp::socket& sock,
                                    Clock::time_point deadline, Start start) {
  asio::steady_timer timer(io, deadline);
  boost::system::error_code result = asio::error::timed_out;
  bool done = false;
  start([&](boost::system::error_code ec) {
    result = ec;
    done = true;
    timer.cancel();
  });
  timer.async_wait([&](boost::system::error_code ec) {
    if (!ec && !done) sock.close();
  });
  io.restart();
  io.run();
  if (!done || result == asio::error::operation_aborted) return asio::error::timed_out;
  return result;
}

}  // namespace

Result<std::shared_ptr<TcpSender>> TcpSender::connect(asio::io_context& io, const std::string& host,
                                                      uint16_t port, const protocol::Hello& hello,
                                                      SenderOptions options,
                                                      SenderCallbacks callbacks,
                                                      protocol::Reply* reply) {
  auto self = std::make_shared<TcpSender>(io, options, std::move(callbacks));
  self->peer_ = fmt::format("{}:{}", host, port);

  // Resolve and connect with a deadline, synchronously on this thread: the
  // socket is not yet shared with the io thread.
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) {
    return Status::unavailable(fmt::format("cannot resolve {}: {}", host, ec.message()));
  }
  // A blocking connect has no timeout in Asio; do it async on a private
  // context so the deadline is enforced without the shared io thread.
  asio::io_context private_io;
  tcp::socket sock(private_io);
  const auto connect_ec =
      run_until(private_io, sock, Clock::now() + options.connect_timeout, [&](auto done) {
        asio::async_connect(sock, endpoints,
                            [done](boost::system::error_code e, const tcp::endpoint&) { done(e); });
      });
  if (connect_ec) {
    return Status::unavailable(
        fmt::format("cannot connect to {}: {}", self->peer_, connect_ec.message()));
  }
  sock.set_option(tcp::no_delay(true), ec);

  // Handshake, still on the private context, bounded by a deadline. (A
  // receive timeout on the socket does not bound Asio's synchronous reads:
  // on EAGAIN they poll without a timeout, so a backup, or anything else on
  // that port, that accepts and never answers would hang the primary here.)
  const protocol::Bytes hello_bytes = protocol::encode_hello(hello);
  asio::write(sock, asio::buffer(hello_bytes), ec);
  if (ec)
    return Status::unavailable(fmt::format("handshake with {}: {}", self->peer_, ec.message()));
  const auto handshake_deadline = Clock::now() + options.connect_timeout;
  protocol::Bytes buf;
  std::array<uint8_t, 4096> chunk{};
  for (;;) {
    auto parsed = protocol::parse_reply(buf);
    if (!parsed.is_ok()) {
      return Status(parsed.status().code(),
                    fmt::format("handshake with {}: {}", self->peer_, parsed.status().message()));
    }
    if (parsed->has_value()) {
      *reply = (*parsed)->first;
      const size_t used = (*parsed)->second;
      if (!reply->accept) return Status::refused(reply->reason);
      if (used != buf.size()) {
        // Bytes after the reply are backup messages; keep them for the reader.
        std::vector<protocol::BackupMessage> msgs;
        Status st = self->reader_.feed(protocol::ByteSpan(buf).subspan(used), &msgs);
        if (!st.is_ok()) return st.context("after the handshake");
      }
      break;
    }
    size_t n = 0;
    const auto read_ec = run_until(private_io, sock, handshake_deadline, [&](auto done) {
      sock.async_read_some(asio::buffer(chunk),
                           [&n, done](boost::system::error_code e, size_t got) {
                             n = got;
                             done(e);
                           });
    });
    if (read_ec == asio::error::timed_out) {
      return Status::unavailable(
          fmt::format("handshake with {}: no reply within {} ms (is that a Romulus backup?)",
                      self->peer_, options.connect_timeout.count()));
    }
    if (read_ec) {
      return Status::unavailable(
          fmt::format("handshake with {}: {}", self->peer_,
                      read_ec == asio::error::eof ? "connection closed" : read_ec.message()));
    }
    buf.insert(buf.end(), chunk.begin(), chunk.begin() + static_cast<long>(n));
  }

  // Hand the connected socket to the shared io_context.
  const int fd = sock.release(ec);
  self->socket_.assign(tcp::v4(), fd, ec);
  if (ec) {
    // IPv6 peer.
    self->socket_.assign(tcp::v6(), fd, ec);
  }
  if (ec) return Status::io_error(fmt::format("adopting the socket: {}", ec.message()));
  self->last_rx_ = Clock::now();
  asio::post(io, [self] { self->start_reading(); });
  return self;
}

void TcpSender::start_reading() {
  do_read();
  check_liveness();
}

void TcpSender::do_read() {
  auto self = shared_from_this();
  socket_.async_read_some(asio::buffer(read_buf_), [this, self](boost::system::error_code ec,
                                                                size_t n) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        fail(Status::unavailable(ec == asio::error::eof
                                     ? "the backup closed the connection"
                                     : fmt::format("connection to the backup: {}", ec.message())));
      }
      return;
    }
    last_rx_ = Clock::now();
    std::vector<protocol::BackupMessage> msgs;
    Status st = reader_.feed(protocol::ByteSpan(read_buf_.data(), n), &msgs);
    for (const auto& m : msgs) {
      switch (m.kind) {
        case protocol::BackupMessage::Kind::kAck:
          if (callbacks_.on_ack) callbacks_.on_ack(m.value);
          break;
        case protocol::BackupMessage::Kind::kHeartbeat:
          break;
        case protocol::BackupMessage::Kind::kError:
          fail(Status(m.error.code(),
                      fmt::format("the backup ended the stream: {}", m.error.message())));
          return;
      }
    }
    if (!st.is_ok()) {
      fail(st.context("reading the backup's messages"));
      return;
    }
    do_read();
  });
}

void TcpSender::check_liveness() {
  auto self = shared_from_this();
  // Half the heartbeat period, so an idle wire never goes longer than one
  // period and a half without a heartbeat.
  liveness_timer_.expires_after(std::max(std::chrono::milliseconds(1), options_.heartbeat / 2));
  liveness_timer_.async_wait([this, self](boost::system::error_code ec) {
    if (ec || broken_.load()) return;
    // Heartbeat from this thread whenever the wire was idle for a period, so
    // the backup hears from a live primary even while its engine is busy for
    // long (a large initial sync, a big encode). Queue elements are whole
    // chunks, so a heartbeat always lands between chunks.
    if (Clock::now() - last_tx_.load() >= options_.heartbeat) {
      std::lock_guard lock(mu_);
      if (!broken_.load() && !writing_) {
        queue_.push_back(protocol::encode_heartbeat(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
                .count())));
        queued_bytes_ += queue_.back().size();
        writing_ = true;
        asio::post(io_, [self] { self->do_write(); });
      }
    }
    const auto silent = Clock::now() - last_rx_;
    if (silent > options_.failover_timeout) {
      // Giving up on a backup that may well be alive (a lossy link): say so,
      // so that it does not take the end of the stream for a crash.
      fail(Status::timeout(
               fmt::format("the backup was silent for {} ms",
                           std::chrono::duration_cast<std::chrono::milliseconds>(silent).count())),
           /*say_dropped=*/true);
      return;
    }
    check_liveness();
  });
}

void TcpSender::fail(const Status& why, bool say_dropped) {
  bool write_in_flight = false;
  {
    std::lock_guard lock(mu_);
    if (broken_.load()) return;
    failure_ = why;
    broken_.store(true);
    // Keep only a chunk being written: DROPPED must follow a whole chunk.
    write_in_flight = writing_ && !queue_.empty();
    while (queue_.size() > (write_in_flight ? 1u : 0u)) queue_.pop_back();
    queued_bytes_ = 0;
  }
  cv_.notify_all();
  liveness_timer_.cancel();
  if (say_dropped && socket_.is_open()) {
    dropping_ = true;
    // Whatever happens, the socket closes after kDropLinger.
    liveness_timer_.expires_after(kDropLinger);
    liveness_timer_.async_wait([this, self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) close_socket();
    });
    if (!write_in_flight) write_dropped();
  } else {
    close_socket();
  }
  if (!lost_reported_ && callbacks_.on_lost) {
    lost_reported_ = true;
    callbacks_.on_lost(why);
  }
}

Status TcpSender::send(protocol::Bytes bytes) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return broken_.load() || queued_bytes_ < options_.max_queued_bytes; });
  if (broken_.load()) return failure_;
  queued_bytes_ += bytes.size();
  queue_.push_back(std::move(bytes));
  if (!writing_) {
    writing_ = true;
    asio::post(io_, [self = shared_from_this()] { self->do_write(); });
  }
  return Status::ok();
}

void TcpSender::close_socket() {
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

void TcpSender::write_dropped() {
  if (dropped_sent_) return;
  dropped_sent_ = true;
  dropped_bytes_ = protocol::encode_dropped();
  asio::async_write(socket_, asio::buffer(dropped_bytes_),
                    [this, self = shared_from_this()](boost::system::error_code, size_t) {
                      liveness_timer_.cancel();
                      close_socket();
                    });
}

void TcpSender::do_write() {
  protocol::Bytes* front = nullptr;
  {
    std::lock_guard lock(mu_);
    if (queue_.empty() || broken_.load()) {
      writing_ = false;
      cv_.notify_all();
      if (broken_.load() && dropping_)
        asio::post(io_, [self = shared_from_this()] { self->write_dropped(); });
      return;
    }
    front = &queue_.front();  // deque: stable while we are the only popper
  }
  last_tx_.store(Clock::now());
  auto self = shared_from_this();
  asio::async_write(
      socket_, asio::buffer(*front), [this, self](boost::system::error_code ec, size_t n) {
        if (ec) {
          if (ec != asio::error::operation_aborted) {
            fail(Status::unavailable(fmt::format("sending to the backup: {}", ec.message())));
          } else {
            std::lock_guard lock(mu_);
            writing_ = false;
          }
          cv_.notify_all();
          return;
        }
        protocol::Bytes written;
        {
          std::lock_guard lock(mu_);
          if (!queue_.empty()) {
            written = std::move(queue_.front());
            queue_.pop_front();
            queued_bytes_ -= n;
          }
        }
        cv_.notify_all();
        recycle(std::move(written));
        do_write();
      });
}

Status TcpSender::flush() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return broken_.load() || (queue_.empty() && !writing_); });
  if (broken_.load()) return failure_;
  return Status::ok();
}

void TcpSender::end_of_checkpoint(uint64_t /*epoch*/) {}

void TcpSender::goodbye(std::chrono::milliseconds timeout) {
  if (send(protocol::encode_goodbye()).is_ok()) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return broken_.load() || (queue_.empty() && !writing_); });
  }
  close();
}

void TcpSender::drop() {
  if (broken_.load()) return;
  auto self = weak_from_this().lock();
  if (!self) return close();
  std::promise<void> done;
  auto fut = done.get_future();
  asio::post(io_, [self, &done] {
    self->lost_reported_ = true;  // a requested drop is not a loss
    self->fail(Status::aborted("dropped"), /*say_dropped=*/true);
    done.set_value();
  });
  fut.wait_for(std::chrono::seconds(2));
}

void TcpSender::close() {
  if (broken_.load()) return;
  auto self = weak_from_this().lock();
  if (!self) {
    // Destruction: the io thread holds no reference any more.
    boost::system::error_code ec;
    socket_.close(ec);
    return;
  }
  if (io_.get_executor().running_in_this_thread()) {
    lost_reported_ = true;  // a requested close is not a loss
    fail(Status::aborted("closed"));
    return;
  }
  std::promise<void> done;
  auto fut = done.get_future();
  asio::post(io_, [self, &done] {
    self->lost_reported_ = true;  // a requested close is not a loss
    self->fail(Status::aborted("closed"));
    done.set_value();
  });
  fut.wait_for(std::chrono::seconds(2));
}

}  // namespace romulus::checkpoint
