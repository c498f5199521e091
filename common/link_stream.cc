#include "common/link_stream.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace romulus::common {
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

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

}  // namespace

LinkStream::LinkStream(tcp::socket socket) : plain_(std::move(socket)) {}

LinkStream::LinkStream(tcp::socket socket, const TlsIdentity& identity)
    : LinkStream(std::move(socket), identity, identity.peer_name()) {}

LinkStream::LinkStream(tcp::socket socket, const TlsIdentity& identity, const std::string& name)
    : context_(identity.context()) {
  tls_.emplace(std::move(socket), *context_);
  SSL* ssl_handle = tls_->native_handle();
  if (!name.empty()) {
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
  // Record the first certificate problem for the log line; the verdict is
  // OpenSSL's own.
  tls_->set_verify_callback([problem = verify_problem_](bool preverified,
                                                        ssl::verify_context& ctx) {
    if (!preverified && problem->empty()) {
      X509_STORE_CTX* store = ctx.native_handle();
      const int err = X509_STORE_CTX_get_error(store);
      X509* cert = X509_STORE_CTX_get_current_cert(store);
      *problem = fmt::format("{}: certificate {}, issued by {}", X509_verify_cert_error_string(err),
                             subject_of(cert), issuer_of(cert));
    }
    return preverified;
  });
}

LinkStream LinkStream::make(tcp::socket socket, const TlsIdentity* identity) {
  if (identity) return LinkStream(std::move(socket), *identity);
  return LinkStream(std::move(socket));
}

void LinkStream::close() {
  boost::system::error_code ec;
  socket().shutdown(tcp::socket::shutdown_both, ec);
  socket().close(ec);
}

boost::system::error_code LinkStream::normalize(const boost::system::error_code& ec) {
  if (ec == ssl::error::stream_truncated) return asio::error::eof;
  return ec;
}

std::string LinkStream::describe_failure(const boost::system::error_code& ec) const {
  if (!tls_) return ec == asio::error::eof ? "connection closed" : ec.message();
  if (!verify_problem_->empty()) return *verify_problem_;
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
  if (!tls_) return {};
  X509* cert = SSL_get1_peer_certificate(tls_->native_handle());
  std::string s = subject_of(cert);
  X509_free(cert);
  return s;
}

}  // namespace romulus::common
