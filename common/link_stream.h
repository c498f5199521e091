// LinkStream: the replication connection's byte stream, plaintext TCP or
// mutual TLS over it, behind one interface so the primary's sender and the
// backup's sessions have one code path for both.
//
// A TLS stream verifies the peer during handshake(): its certificate against
// the identity's CA, its name against --tls-peer-name (SAN DNS or IP, else
// CN). Nothing of the protocol is read or written before the handshake
// completes. A plaintext stream's handshake() completes at once.
//
// The end of a TLS stream without close_notify (a killed peer, a reset) is
// reported as end of file, like TCP's, so callers need not tell the two apart.
//
// Threading: like a socket. One read and one write may be in flight at once,
// all on the io_context's thread.
#pragma once

#include <memory>
#include <optional>
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

  LinkStream(LinkStream&&) = default;
  LinkStream& operator=(LinkStream&&) = delete;

  // An Asio/Beast AsyncReadStream and AsyncWriteStream (Beast's HTTP runs on it).
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  executor_type get_executor() { return socket().get_executor(); }

  bool tls() const { return tls_.has_value(); }
  boost::asio::ip::tcp::socket& socket() { return tls_ ? tls_->next_layer() : *plain_; }

  // TLS handshake (with peer verification); plaintext: completes at once.
  // handler(error_code).
  template <typename Handler>
  void async_handshake(Side side, Handler&& handler) {
    if (!tls_) {
      boost::asio::post(socket().get_executor(),
                        [h = std::forward<Handler>(handler)]() mutable { h({}); });
      return;
    }
    tls_->async_handshake(side == Side::kClient ? boost::asio::ssl::stream_base::client
                                                : boost::asio::ssl::stream_base::server,
                          std::forward<Handler>(handler));
  }

  // handler(error_code, size_t).
  template <typename Buffers, typename Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler) {
    auto wrapped = [h = std::forward<Handler>(handler)](boost::system::error_code ec,
                                                        size_t n) mutable { h(normalize(ec), n); };
    if (tls_) {
      tls_->async_read_some(buffers, std::move(wrapped));
    } else {
      plain_->async_read_some(buffers, std::move(wrapped));
    }
  }

  // handler(error_code, size_t).
  template <typename Buffers, typename Handler>
  void async_write_some(const Buffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

  // Writes all of `buffers`. handler(error_code, size_t).
  template <typename Buffers, typename Handler>
  void async_write(const Buffers& buffers, Handler&& handler) {
    if (tls_) {
      boost::asio::async_write(*tls_, buffers, std::forward<Handler>(handler));
    } else {
      boost::asio::async_write(*plain_, buffers, std::forward<Handler>(handler));
    }
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

  // The verified peer's certificate subject ("CN=node-a"); empty for plaintext.
  std::string peer_subject();

 private:
  static boost::system::error_code normalize(const boost::system::error_code& ec);

  std::optional<boost::asio::ip::tcp::socket> plain_;
  std::shared_ptr<boost::asio::ssl::context> context_;  // outlives tls_
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
  // What the verify callback saw first go wrong (shared: the callback is copied).
  std::shared_ptr<std::string> verify_problem_ = std::make_shared<std::string>();
};

}  // namespace romulus::common
