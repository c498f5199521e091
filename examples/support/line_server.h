// LineServer: the network side the example guests share (romulus-kvstore,
// romulus-bank): Asio's chat_server shape on one io_context, one request per
// '\n'-terminated line (a trailing '\r' is dropped), one reply line per request
// in order. The Service is anything with `std::string execute(std::string_view)`.
//
// Hostile clients: a line longer than max_line_bytes gets "ERROR line too long"
// and a lingering close (the reply is read, not destroyed by a reset); a client
// that stops reading stops being read from once kMaxQueuedReplyBytes of replies
// wait for it.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
// (a separate include block, so that clang-format keeps this order)
#include <boost/asio.hpp>

namespace romulus::examples {

template <class Service>
class LineServer {
 public:
  static constexpr size_t kMaxQueuedReplyBytes = 1 << 20;
  static constexpr auto kLingerTime = std::chrono::seconds(2);

  LineServer(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& endpoint,
             Service& service, size_t max_line_bytes)
      : acceptor_(io, endpoint), service_(service), max_line_bytes_(max_line_bytes) {
    acceptor_.non_blocking(true);  // for do_accept()'s batch
  }

  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::string address() const { return acceptor_.local_endpoint().address().to_string(); }

  void start() { do_accept(); }
  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }

 private:
  using tcp = boost::asio::ip::tcp;

  class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(tcp::socket socket, Service& service, size_t max_line_bytes)
        : socket_(std::move(socket)),
          service_(service),
          max_line_bytes_(max_line_bytes),
          linger_timer_(socket_.get_executor()) {}

    void start() { do_read(); }

   private:
    // Reads whatever the client sent; complete lines are executed in order.
    void do_read() {
      reading_ = true;
      socket_.async_read_some(
          boost::asio::buffer(chunk_),
          [self = this->shared_from_this()](boost::system::error_code ec, size_t n) {
            self->reading_ = false;
            if (ec) return self->close();
            self->input_.append(self->chunk_.data(), n);
            self->handle_lines();
          });
    }

    void handle_lines() {
      size_t start = 0;
      for (;;) {
        size_t nl = input_.find('\n', scanned_);
        if (nl == std::string::npos) break;
        std::string_view line(input_.data() + start, nl - start);
        if (line.size() > max_line_bytes_) return refuse_long_line();
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        queue_reply(service_.execute(line));
        start = scanned_ = nl + 1;
      }
      input_.erase(0, start);
      scanned_ = input_.size();
      if (input_.size() > max_line_bytes_) return refuse_long_line();
      do_write();
      if (queued_bytes() < kMaxQueuedReplyBytes) do_read();  // else do_write() resumes reading
    }

    void queue_reply(const std::string& reply) {
      pending_.append(reply);
      pending_.push_back('\n');
    }

    size_t queued_bytes() const { return pending_.size() + writing_.size(); }

    // One write in flight; replies that arrive meanwhile wait in pending_ and go
    // out together in the next write.
    void do_write() {
      if (write_in_flight_ || pending_.empty()) return;
      writing_.swap(pending_);
      pending_.clear();
      write_in_flight_ = true;
      boost::asio::async_write(
          socket_, boost::asio::buffer(writing_),
          [self = this->shared_from_this()](boost::system::error_code ec, size_t) {
            self->write_in_flight_ = false;
            self->writing_.clear();
            if (ec) return self->close();
            self->do_write();
            if (self->write_in_flight_) return;
            if (self->closing_) return self->linger();
            if (!self->reading_ && self->queued_bytes() < kMaxQueuedReplyBytes) self->do_read();
          });
    }

    // A line longer than any valid request: reply, then close gracefully.
    void refuse_long_line() {
      closing_ = true;
      input_.clear();
      queue_reply("ERROR line too long");
      do_write();
    }

    // Lingering close: stop sending, then discard the client's input until it
    // closes or kLingerTime passes. Closing with unread input would reset the
    // connection and could destroy the reply before the client reads it.
    void linger() {
      boost::system::error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_send, ignored);
      linger_timer_.expires_after(kLingerTime);
      linger_timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->close();
      });
      drain();
    }

    void drain() {
      socket_.async_read_some(
          boost::asio::buffer(chunk_),
          [self = this->shared_from_this()](boost::system::error_code ec, size_t) {
            if (ec) return self->close();
            self->drain();
          });
    }

    void close() {
      boost::system::error_code ignored;
      linger_timer_.cancel();
      socket_.close(ignored);
    }

    tcp::socket socket_;
    Service& service_;
    const size_t max_line_bytes_;
    boost::asio::steady_timer linger_timer_;
    std::array<char, 16 * 1024> chunk_;
    std::string input_;    // bytes received, not yet executed
    size_t scanned_ = 0;   // input_[0, scanned_) holds no '\n'
    std::string pending_;  // replies waiting for the write in flight
    std::string writing_;  // the write in flight
    bool write_in_flight_ = false;
    bool reading_ = false;
    bool closing_ = false;
  };

  void do_accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == boost::asio::error::operation_aborted) return;
      if (!ec) {
        start_session(std::move(socket));
        // Take the connections already waiting too (the acceptor is
        // non-blocking): one accept per reactor round made thousands of
        // simultaneous connects wait behind busy sessions.
        for (int i = 0; i < 256; ++i) {
          tcp::socket more(acceptor_.get_executor());
          boost::system::error_code aec;
          acceptor_.accept(more, aec);
          if (aec) break;
          start_session(std::move(more));
        }
      }
      do_accept();
    });
  }

  void start_session(tcp::socket socket) {
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::make_shared<Session>(std::move(socket), service_, max_line_bytes_)->start();
  }

  tcp::acceptor acceptor_;
  Service& service_;
  const size_t max_line_bytes_;
};

}  // namespace romulus::examples
