// LinkStream: the replication connection's byte stream, plaintext TCP or
// mutual TLS over it, behind one interface so the primary's sender, the
// backup's sessions and the witness's etcd client have one code path for both.
//
// A TLS stream verifies the peer during async_handshake(): its certificate
// against the identity's CA, its name against --tls-peer-name (SAN DNS or IP,
// else CN). Nothing of the protocol is read or written before the handshake
// completes. A plaintext stream's handshake completes at once.
//
// TLS runs OpenSSL over memory BIOs (not Asio's ssl::stream, whose 17 KiB
// buffers cost one system call and one handler per TLS record): a read takes
// up to 256 KiB of ciphertext from the socket at once, and a write encrypts
// the whole buffer and sends all its records in one write.
//
// The end of a TLS stream without close_notify (a killed peer, a reset) is
// reported as end of file, like TCP's, so callers need not tell the two apart.
//
// Threading: like a socket. One read and one write may be in flight at once,
// all on the io_context's thread; the stream must outlive its operations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/asio.h"

#include <boost/asio/ssl.hpp>  // after common/asio.h (its <utility> fix)

#include "common/tls.h"

namespace romulus::common {

class LinkStream {
 public:
  enum class Side { kClient, kServer };

  // Plaintext over `socket`.
  explicit LinkStream(boost::asio::ip::tcp::socket socket);
  // TLS over `socket` with the identity's current context and peer name.
  LinkStream(boost::asio::ip::tcp::socket socket, const TlsIdentity& identity);
  // TLS with an explicit name the peer must carry (a client's server name,
  // also sent as SNI when it is not an address); empty: any the CA signed.
  LinkStream(boost::asio::ip::tcp::socket socket, const TlsIdentity& identity,
             const std::string& peer_name);
  // Plaintext, or TLS if `identity` is not null.
  static LinkStream make(boost::asio::ip::tcp::socket socket, const TlsIdentity* identity);

  LinkStream(LinkStream&&) noexcept;
  LinkStream& operator=(LinkStream&&) = delete;
  ~LinkStream();

  // An Asio/Beast AsyncReadStream and AsyncWriteStream (Beast's HTTP runs on it).
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  executor_type get_executor() { return socket_.get_executor(); }

  bool tls() const { return tls_ != nullptr; }
  boost::asio::ip::tcp::socket& socket() { return socket_; }

  // TLS handshake (with peer verification); plaintext: completes at once.
  // handler(error_code).
  template <typename Handler>
  void async_handshake(Side side, Handler&& handler);

  // handler(error_code, size_t).
  template <typename Buffers, typename Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler);

  // Writes all of `buffers` (TLS: encrypts them whole first). handler(error_code, size_t).
  template <typename Buffers, typename Handler>
  void async_write_some(const Buffers& buffers, Handler&& handler);
  template <typename Buffers, typename Handler>
  void async_write(const Buffers& buffers, Handler&& handler) {
    async_write_some(buffers, std::forward<Handler>(handler));
  }

  // Shuts the TCP connection down and closes it (no TLS close_notify: the
  // protocol has its own GOODBYE). Pending operations end with
  // operation_aborted.
  void close();

  // Why a handshake (or a read right after it) failed, for a log line: the
  // certificate problem if the peer's certificate did not verify ("certificate
  // has expired: CN=node-a, issued by CN=pair CA"), else the TLS error, with a
  // hint when the peer apparently speaks no TLS.
  std::string describe_failure(const boost::system::error_code& ec) const;

  // The verified peer's certificate subject ("/CN=node-a"); empty for plaintext.
  std::string peer_subject();

 private:
  // The OpenSSL session and its memory BIOs (link_stream.cc).
  class Tls;
  enum class Step { kDone, kWantRead, kError };

  // Non-template TLS steps. Each may leave ciphertext to send (take_output()).
  void tls_set_side(bool client);
  Step tls_handshake_step(boost::system::error_code* ec);
  size_t tls_read(void* data, size_t size, Step* step, boost::system::error_code* ec);
  void tls_feed(size_t n);  // n bytes of in_buf() arrived
  boost::system::error_code tls_write(const void* data, size_t size);
  boost::asio::mutable_buffer in_buf();
  // Ciphertext being written: not zero-filled before it is overwritten.
  struct OutBuf {
    std::unique_ptr<uint8_t[]> data;
    size_t size = 0, capacity = 0;
  };
  // Moves the ciphertext waiting to be sent into `out` (replacing its contents).
  void take_output(OutBuf* out);
  OutBuf& handshake_out();
  OutBuf& write_out();

  template <typename Handler>
  void handshake_loop(std::shared_ptr<Handler> handler);
  template <typename Handler>
  void read_loop(boost::asio::mutable_buffer dst, std::shared_ptr<Handler> handler, bool first);

  boost::asio::ip::tcp::socket socket_;
  std::shared_ptr<boost::asio::ssl::context> context_;  // outlives tls_
  std::unique_ptr<Tls> tls_;
};

// ---- Templates.

template <typename Handler>
void LinkStream::async_handshake(Side side, Handler&& handler) {
  auto h = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
  if (!tls_) {
    boost::asio::post(socket_.get_executor(), [h] { (*h)(boost::system::error_code()); });
    return;
  }
  tls_set_side(side == Side::kClient);
  boost::asio::post(socket_.get_executor(), [this, h] { handshake_loop(h); });
}

template <typename Handler>
void LinkStream::handshake_loop(std::shared_ptr<Handler> h) {
  boost::system::error_code ec;
  const Step step = tls_handshake_step(&ec);
  auto& out = handshake_out();
  take_output(&out);
  if (out.size != 0) {
    // Send what the handshake produced (an alert, too, before failing), then go on.
    boost::asio::async_write(socket_, boost::asio::buffer(out.data.get(), out.size),
                             [this, h, step, ec](boost::system::error_code wec, size_t) {
                               if (step == Step::kError) return (*h)(ec);
                               if (wec) return (*h)(wec);
                               handshake_loop(h);
                             });
    return;
  }
  if (step == Step::kDone || step == Step::kError) return (*h)(ec);
  socket_.async_read_some(in_buf(), [this, h](boost::system::error_code rec, size_t n) {
    if (rec) return (*h)(rec);
    tls_feed(n);
    handshake_loop(h);
  });
}

template <typename Buffers, typename Handler>
void LinkStream::async_read_some(const Buffers& buffers, Handler&& handler) {
  if (!tls_) {
    socket_.async_read_some(buffers, [h = std::forward<Handler>(handler)](
                                         boost::system::error_code ec, size_t n) mutable {
      h(ec, n);
    });
    return;
  }
  boost::asio::mutable_buffer dst;
  for (auto it = boost::asio::buffer_sequence_begin(buffers);
       it != boost::asio::buffer_sequence_end(buffers); ++it) {
    if (boost::asio::mutable_buffer(*it).size() != 0) {
      dst = *it;
      break;
    }
  }
  read_loop(dst, std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler)), true);
}

template <typename Handler>
void LinkStream::read_loop(boost::asio::mutable_buffer dst, std::shared_ptr<Handler> h,
                           bool first) {
  Step step = Step::kDone;
  boost::system::error_code ec;
  const size_t n = dst.size() == 0 ? 0 : tls_read(dst.data(), dst.size(), &step, &ec);
  if (dst.size() == 0 || step != Step::kWantRead) {
    if (first) {
      boost::asio::post(socket_.get_executor(), [h, ec, n] { (*h)(ec, n); });
    } else {
      (*h)(ec, n);
    }
    return;
  }
  socket_.async_read_some(in_buf(), [this, dst, h](boost::system::error_code rec, size_t got) {
    if (rec) return (*h)(rec, size_t{0});
    tls_feed(got);
    read_loop(dst, h, false);
  });
}

template <typename Buffers, typename Handler>
void LinkStream::async_write_some(const Buffers& buffers, Handler&& handler) {
  if (!tls_) {
    boost::asio::async_write(socket_, buffers, std::forward<Handler>(handler));
    return;
  }
  size_t total = 0;
  boost::system::error_code ec;
  for (auto it = boost::asio::buffer_sequence_begin(buffers);
       it != boost::asio::buffer_sequence_end(buffers) && !ec; ++it) {
    const boost::asio::const_buffer b(*it);
    if (b.size() == 0) continue;
    ec = tls_write(b.data(), b.size());
    if (!ec) total += b.size();
  }
  auto h = std::make_shared<std::decay_t<Handler>>(std::forward<Handler>(handler));
  if (ec) {
    boost::asio::post(socket_.get_executor(), [h, ec] { (*h)(ec, size_t{0}); });
    return;
  }
  auto& out = write_out();
  take_output(&out);
  boost::asio::async_write(socket_, boost::asio::buffer(out.data.get(), out.size),
                           [h, total](boost::system::error_code wec, size_t) {
                             (*h)(wec, wec ? size_t{0} : total);
                           });
}

}  // namespace romulus::common
