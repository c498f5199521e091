#include "common/link_stream.h"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <climits>
#include <vector>

namespace romulus::common {
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// Ciphertext taken from the socket per read: many TLS records at once.
constexpr size_t kReadChunk = 256 * 1024;

std::string subject_of(X509* cert) {
  if (!cert) return {};
  char buf[256] = {};
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf - 1);
  return buf;
}

std::string issuer_of(X509* cert) {
  if (!cert) return {};
  char buf[256] = {};
  X509_NAME_oneline(X509_get_issuer_name(cert), buf, sizeof buf - 1);
  return buf;
}

boost::system::error_code ssl_error() {
  const unsigned long err = ERR_get_error();
  ERR_clear_error();
  if (err == 0) return asio::error::connection_aborted;
  return {static_cast<int>(err), asio::error::get_ssl_category()};
}

// Records the first certificate problem for the log line; the verdict is OpenSSL's own.
int verify_callback(int preverified, X509_STORE_CTX* store) {
  auto* ssl_handle = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* problem = ssl_handle ? static_cast<std::string*>(SSL_get_app_data(ssl_handle)) : nullptr;
  if (!preverified && problem && problem->empty()) {
    X509* cert = X509_STORE_CTX_get_current_cert(store);
    *problem = fmt::format("{}: certificate {}, issued by {}",
                           X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)),
                           subject_of(cert), issuer_of(cert));
  }
  return preverified;
}

}  // namespace

// The session: an SSL object whose input and output are memory BIOs that the
// stream fills from, and drains to, the socket.
class LinkStream::Tls {
 public:
  explicit Tls(SSL_CTX* ctx) : ssl(SSL_new(ctx)), in(kReadChunk) {
    if (!ssl) return;
    rbio = BIO_new(BIO_s_mem());
    wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio, -1);  // an empty input BIO means "more to come"
    SSL_set_bio(ssl, rbio, wbio);      // the SSL owns both
    SSL_set_app_data(ssl, &problem);
    SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
  }
  ~Tls() {
    if (ssl) SSL_free(ssl);
  }
  Tls(const Tls&) = delete;
  Tls& operator=(const Tls&) = delete;

  SSL* ssl;
  BIO* rbio = nullptr;
  BIO* wbio = nullptr;
  std::vector<uint8_t> in;                     // the socket's bytes, before tls_feed()
  OutBuf handshake_out, write_out;             // ciphertext being written
  std::string problem;                         // what verification found first
};

LinkStream::LinkStream(tcp::socket socket) : socket_(std::move(socket)) {}

LinkStream::LinkStream(tcp::socket socket, const TlsIdentity& identity)
    : LinkStream(std::move(socket), identity, identity.peer_name()) {}

LinkStream::LinkStream(tcp::socket socket, const TlsIdentity& identity, const std::string& name)
    : socket_(std::move(socket)),
      context_(identity.context()),
      tls_(std::make_unique<Tls>(context_->native_handle())) {
  SSL* ssl_handle = tls_->ssl;
  if (ssl_handle && !name.empty()) {
    boost::system::error_code ec;
    asio::ip::make_address(name, ec);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
    if (!ec) {
      X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    } else {
      SSL_set_hostflags(ssl_handle, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl_handle, name.c_str());
      SSL_set_tlsext_host_name(ssl_handle, name.c_str());
    }
  }
}

LinkStream::LinkStream(LinkStream&&) noexcept = default;
LinkStream::~LinkStream() = default;

LinkStream LinkStream::make(tcp::socket socket, const TlsIdentity* identity) {
  if (identity) return LinkStream(std::move(socket), *identity);
  return LinkStream(std::move(socket));
}

void LinkStream::close() {
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

void LinkStream::tls_set_side(bool client) {
  if (!tls_->ssl) return;
  if (client) {
    SSL_set_connect_state(tls_->ssl);
  } else {
    SSL_set_accept_state(tls_->ssl);
  }
}

LinkStream::Step LinkStream::tls_handshake_step(boost::system::error_code* ec) {
  if (!tls_->ssl) {
    *ec = asio::error::no_memory;
    return Step::kError;
  }
  ERR_clear_error();
  const int r = SSL_do_handshake(tls_->ssl);
  if (r == 1) return Step::kDone;
  const int err = SSL_get_error(tls_->ssl, r);
  if (err == SSL_ERROR_WANT_READ) return Step::kWantRead;
  *ec = ssl_error();
  return Step::kError;
}

size_t LinkStream::tls_read(void* data, size_t size, Step* step, boost::system::error_code* ec) {
  ERR_clear_error();
  const int r = SSL_read(tls_->ssl, data, static_cast<int>(std::min<size_t>(size, INT_MAX)));
  if (r > 0) {
    *step = Step::kDone;
    return static_cast<size_t>(r);
  }
  const int err = SSL_get_error(tls_->ssl, r);
  if (err == SSL_ERROR_WANT_READ) {
    *step = Step::kWantRead;
    return 0;
  }
  *step = Step::kError;
  *ec = err == SSL_ERROR_ZERO_RETURN ? boost::system::error_code(asio::error::eof) : ssl_error();
  return 0;
}

asio::mutable_buffer LinkStream::in_buf() { return asio::buffer(tls_->in); }

void LinkStream::tls_feed(size_t n) {
  BIO_write(tls_->rbio, tls_->in.data(), static_cast<int>(n));
}

boost::system::error_code LinkStream::tls_write(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ERR_clear_error();
    const int chunk = static_cast<int>(std::min<size_t>(size, 1u << 30));
    const int r = SSL_write(tls_->ssl, p, chunk);
    if (r <= 0) return ssl_error();
    p += r;
    size -= static_cast<size_t>(r);
  }
  return {};
}

void LinkStream::take_output(OutBuf* out) {
  // BIO_read, not BIO_reset: a reset clears the BIO's whole capacity (which an
  // initial sync grows to megabytes) on every write.
  const size_t n = BIO_ctrl_pending(tls_->wbio);
  out->size = 0;
  if (n == 0) return;
  if (out->capacity < n) {
    out->data.reset(new uint8_t[n]);  // uninitialised: BIO_read fills it
    out->capacity = n;
  }
  const int got = BIO_read(tls_->wbio, out->data.get(), static_cast<int>(n));
  out->size = got > 0 ? static_cast<size_t>(got) : 0;
}

LinkStream::OutBuf& LinkStream::handshake_out() { return tls_->handshake_out; }
LinkStream::OutBuf& LinkStream::write_out() { return tls_->write_out; }

std::string LinkStream::describe_failure(const boost::system::error_code& ec) const {
  if (!tls_) return ec == asio::error::eof ? "connection closed" : ec.message();
  if (!tls_->problem.empty()) return tls_->problem;
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated) {
    return "connection closed during the TLS handshake";
  }
  std::string m = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
        reason == SSL_R_HTTP_REQUEST) {
      m += " (the peer does not speak TLS: is it running without --tls-cert?)";
    } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
      m += " (the peer sent no certificate)";
    } else if (m.find("alert") != std::string::npos) {
      m = fmt::format(
          "the peer ended the handshake ({}): it does not accept this node's "
          "certificate",
          m);
    }
  }
  return m;
}

std::string LinkStream::peer_subject() {
  if (!tls_ || !tls_->ssl) return {};
  X509* cert = SSL_get1_peer_certificate(tls_->ssl);
  std::string s = subject_of(cert);
  X509_free(cert);
  return s;
}

}  // namespace romulus::common
