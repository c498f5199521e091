#include "checkpoint/tcp_sender.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <future>

#include "common/endpoint.h"
#include "protocol/checkpoint_writer.h"

namespace romulus::checkpoint {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// The liveness timer's shortest period, whatever the heartbeat: half of a
// 1 ms heartbeat would be a 0 ms timer, a busy loop.
constexpr std::chrono::milliseconds kMinLivenessCheck{1};
// How long drop() and close() wait for the io thread to carry them out: it
// takes a moment; a stuck io thread must not hold the caller for ever.
constexpr std::chrono::seconds kIoThreadWithin{2};

}  // namespace

TcpSender::TcpSender(asio::io_context& io, SenderOptions options, SenderCallbacks callbacks)
    : io_(io), liveness_timer_(io), options_(options), callbacks_(std::move(callbacks)) {}

TcpSender::~TcpSender() { close(); }

template <typename Start>
boost::system::error_code TcpSender::run_until(Clock::time_point deadline, Start start) {
  // Shared with the handlers, which may run after a timed-out wait returned.
  struct Wait {
    explicit Wait(asio::io_context& io, Clock::time_point at) : timer(io, at) {}
    asio::steady_timer timer;
    std::promise<boost::system::error_code> result;
    bool done = false;  // io thread only
  };
  auto wait = std::make_shared<Wait>(io_, deadline);
  auto self = shared_from_this();
  auto finished = wait->result.get_future();
  asio::post(io_, [this, self, wait, start]() mutable {
    wait->timer.async_wait([this, self, wait](boost::system::error_code ec) {
      if (ec || wait->done) return;
      wait->done = true;
      stream_->close();
      wait->result.set_value(asio::error::timed_out);
    });
    // `done` keeps this sender (and so its stream) alive until the operation ends.
    start([wait, self](boost::system::error_code ec) {
      if (wait->done) return;
      wait->done = true;
      wait->timer.cancel();
      wait->result.set_value(ec);
    });
  });
  return finished.get();
}

Result<std::shared_ptr<TcpSender>> TcpSender::connect(
    asio::io_context& io, const common::Endpoint& backup, const protocol::Hello& hello,
    SenderOptions options, SenderCallbacks callbacks, protocol::Reply* reply) {
  if (!options.tls) {
    // Also for a `romulus set backup` at run time: no plaintext off this host
    // (refused, so the primary keeps running and says so).
    Status plain = common::check_plaintext_allowed(backup, "the backup", options.insecure);
    if (!plain.is_ok()) return Status::refused(plain.message());
  }
  auto self = std::make_shared<TcpSender>(io, options, std::move(callbacks));
  self->peer_ = backup.to_string();
  const std::string peer = self->peer_;

  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(backup.host, std::to_string(backup.port), ec);
  if (ec) {
    return Status::unavailable(fmt::format("cannot resolve {}: {}", backup.host, ec.message()));
  }
  // Everything below runs on the io thread, each step bounded by a deadline
  // (a backup, or anything else on that port, that accepts and never
  // answers must not hang the primary).
  self->stream_.emplace(common::LinkStream::make(tcp::socket(io), options.tls.get()));
  common::LinkStream& stream = *self->stream_;
  const auto connect_ec =
      self->run_until(Clock::now() + options.connect_timeout, [&stream, endpoints](auto done) {
        asio::async_connect(stream.socket(), endpoints,
                            [done](boost::system::error_code e, const tcp::endpoint&) { done(e); });
      });
  if (connect_ec) {
    return Status::unavailable(fmt::format("cannot connect to {}: {}", peer, connect_ec.message()));
  }
  stream.socket().set_option(tcp::no_delay(true), ec);

  const auto handshake_deadline = Clock::now() + options.connect_timeout;
  if (stream.tls()) {
    const auto tls_ec = self->run_until(handshake_deadline, [&stream](auto done) {
      stream.async_handshake(common::LinkStream::Side::kClient, done);
    });
    if (tls_ec == asio::error::timed_out) {
      return Status::unavailable(fmt::format("TLS handshake with {}: no answer within {} ms", peer,
                                             options.connect_timeout.count()));
    }
    if (tls_ec) {
      return Status::refused(fmt::format("not a trusted backup: TLS handshake with {} failed: {}",
                                         peer, stream.describe_failure(tls_ec)));
    }
  }

  // The protocol's handshake (inside the TLS session if there is one).
  const auto hello_bytes = std::make_shared<protocol::Bytes>(protocol::encode_hello(hello));
  const auto write_ec = self->run_until(handshake_deadline, [&stream, hello_bytes](auto done) {
    stream.async_write(asio::buffer(*hello_bytes),
                       [done, hello_bytes](boost::system::error_code e, size_t) { done(e); });
  });
  if (write_ec) {
    return Status::unavailable(
        fmt::format("handshake with {}: {}", peer, stream.describe_failure(write_ec)));
  }
  protocol::Bytes buf;
  auto got = std::make_shared<size_t>(0);
  for (;;) {
    auto parsed = protocol::parse_reply(buf);
    if (!parsed.is_ok()) {
      return Status(parsed.status().code(),
                    fmt::format("handshake with {}: {}", peer, parsed.status().message()));
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
    const auto read_ec = self->run_until(handshake_deadline, [self, got](auto done) {
      self->stream_->async_read_some(asio::buffer(self->read_buf_),
                                     [got, done](boost::system::error_code e, size_t n) {
                                       *got = n;
                                       done(e);
                                     });
    });
    if (read_ec == asio::error::timed_out) {
      return Status::unavailable(
          fmt::format("handshake with {}: no reply within {} ms (is that a Romulus backup?)", peer,
                      options.connect_timeout.count()));
    }
    if (read_ec) {
      if (stream.tls() && read_ec.category() == asio::error::get_ssl_category()) {
        // TLS 1.3: the backup checks this node's certificate after the
        // client's side of the handshake is done, so its refusal arrives here.
        return Status::refused(
            fmt::format("TLS with the backup {}: {}", peer, stream.describe_failure(read_ec)));
      }
      return Status::unavailable(
          fmt::format("handshake with {}: {}", peer, stream.describe_failure(read_ec)));
    }
    buf.insert(buf.end(), self->read_buf_.begin(),
               self->read_buf_.begin() + static_cast<long>(*got));
  }
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
  stream_->async_read_some(asio::buffer(read_buf_), [this, self](boost::system::error_code ec,
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
  liveness_timer_.expires_after(std::max(kMinLivenessCheck, options_.heartbeat / 2));
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
  if (say_dropped && stream_ && stream_->socket().is_open()) {
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
  if (!writing_ && queue_.empty() && !stream_->tls()) {
    // Nothing in flight on a plaintext stream: write from this thread, so that
    // a checkpoint leaves without waking the io thread. Under mu_, so the io
    // thread neither writes (writing_ is false and stays so) nor closes the
    // socket (fail() sets broken_ under mu_ first) meanwhile. What the socket
    // does not take at once, and any error, goes the usual way below: the io
    // thread writes the rest, or meets the error and fails the stream.
    const ssize_t n = ::send(stream_->socket().native_handle(), bytes.data(), bytes.size(),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      last_tx_.store(Clock::now());
      if (static_cast<size_t>(n) == bytes.size()) {
        lock.unlock();
        recycle(std::move(bytes));
        return Status::ok();
      }
      bytes.erase(bytes.begin(), bytes.begin() + n);
    }
  }
  queued_bytes_ += bytes.size();
  queue_.push_back(std::move(bytes));
  if (!writing_) {
    writing_ = true;
    asio::post(io_, [self = shared_from_this()] { self->do_write(); });
  }
  return Status::ok();
}

void TcpSender::close_socket() {
  if (stream_) stream_->close();
}

void TcpSender::write_dropped() {
  if (dropped_sent_) return;
  dropped_sent_ = true;
  dropped_bytes_ = protocol::encode_dropped();
  stream_->async_write(asio::buffer(dropped_bytes_),
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
  stream_->async_write(asio::buffer(*front), [this, self](boost::system::error_code ec, size_t n) {
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
  say_last(protocol::encode_goodbye(), timeout);
}

void TcpSender::handover(std::chrono::milliseconds timeout) {
  say_last(protocol::encode_handover(), timeout);
}

void TcpSender::say_last(protocol::Bytes last, std::chrono::milliseconds timeout) {
  if (send(std::move(last)).is_ok()) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return broken_.load() || (queue_.empty() && !writing_); });
  }
  close();
}

void TcpSender::drop() {
  if (broken_.load()) return;
  auto self = weak_from_this().lock();
  if (!self) return close();
  if (io_.get_executor().running_in_this_thread()) {
    // On the io thread (a callback of this sender): posting and waiting
    // would wait out kIoThreadWithin for a handler that runs only after.
    lost_reported_ = true;  // a requested drop is not a loss
    fail(Status::aborted("dropped"), /*say_dropped=*/true);
    return;
  }
  // Shared with the handler: if the wait below runs out, the handler may
  // still run later and must not set a promise that has left this frame.
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  asio::post(io_, [self, done] {
    self->lost_reported_ = true;  // a requested drop is not a loss
    self->fail(Status::aborted("dropped"), /*say_dropped=*/true);
    done->set_value();
  });
  fut.wait_for(kIoThreadWithin);
}

void TcpSender::close() {
  if (broken_.load()) return;
  auto self = weak_from_this().lock();
  if (!self) {
    // Destruction: the io thread holds no reference any more.
    if (stream_) stream_->close();
    return;
  }
  if (io_.get_executor().running_in_this_thread()) {
    lost_reported_ = true;  // a requested close is not a loss
    fail(Status::aborted("closed"));
    return;
  }
  // Shared with the handler: if the wait below runs out, the handler may
  // still run later and must not set a promise that has left this frame.
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  asio::post(io_, [self, done] {
    self->lost_reported_ = true;  // a requested close is not a loss
    self->fail(Status::aborted("closed"));
    done->set_value();
  });
  fut.wait_for(kIoThreadWithin);
}

}  // namespace romulus::checkpoint
