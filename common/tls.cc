#include "common/tls.h"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace romulus::common {
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

Status check_link_options(const TlsFiles& files, bool insecure) {
  if (files.enabled()) {
    if (files.cert.empty() || files.key.empty() || files.ca.empty()) {
      return Status::invalid_argument(
          "TLS needs all three of --tls-cert, --tls-key and --tls-ca (docs/operations.md, "
          "\"Certificates\")");
    }
    if (insecure) {
      return Status::invalid_argument(
          "--insecure and --tls-* contradict each other: drop --insecure to use TLS");
    }
  } else if (!files.peer_name.empty()) {
    return Status::invalid_argument("--tls-peer-name needs --tls-cert, --tls-key and --tls-ca");
  }
  return Status::ok();
}

namespace {

bool is_loopback(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  }
  return a.is_loopback();
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (!ec) return is_loopback(addr);
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  const auto results = resolver.resolve(host, "", ec);
  if (ec || results.empty()) return false;
  for (const auto& r : results) {
    if (!is_loopback(r.endpoint().address())) return false;
  }
  return true;
}

Status check_plaintext_allowed(const Endpoint& endpoint, const std::string& option, bool insecure) {
  if (insecure || is_loopback_host(endpoint.host)) return Status::ok();
  return Status::invalid_argument(fmt::format(
      "{} {} is not a loopback address, and without TLS anyone who reaches it could replace "
      "the backup's image or read the guest's memory: give --tls-cert, --tls-key and --tls-ca "
      "(docs/operations.md, \"Certificates\"), or --insecure to accept that",
      option, endpoint.to_string()));
}

namespace {

// One line of OpenSSL's error queue (or `fallback`), and the queue emptied.
std::string openssl_error(const boost::system::error_code& ec) {
  std::string m = ec.message();
  ERR_clear_error();
  return m;
}

Status readable(const std::string& path, const char* option) {
  if (access(path.c_str(), R_OK) != 0) {
    return Status::invalid_argument(fmt::format("{} '{}': {}", option, path, std::strerror(errno)));
  }
  return Status::ok();
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

std::string name_text(const X509_NAME* name) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return "?";
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  std::string s = bio_text(bio);
  BIO_free(bio);
  return s;
}

std::string time_text(const ASN1_TIME* t) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return "?";
  ASN1_TIME_print(bio, t);
  std::string s = bio_text(bio);
  BIO_free(bio);
  return s;
}

}  // namespace

Result<TlsIdentity::Loaded> TlsIdentity::build(const TlsFiles& files) {
  ROMULUS_RETURN_IF_ERROR(readable(files.cert, "--tls-cert"));
  ROMULUS_RETURN_IF_ERROR(readable(files.key, "--tls-key"));
  ROMULUS_RETURN_IF_ERROR(readable(files.ca, "--tls-ca"));
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls);
  SSL_CTX* native = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1) {
    ERR_clear_error();
    return Status::unsupported("this OpenSSL cannot restrict connections to TLS 1.3");
  }
  // Every connection verifies a certificate: no resumption.
  SSL_CTX_set_num_tickets(native, 0);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(files.cert, ec);
  if (ec) {
    return Status::invalid_argument(fmt::format(
        "--tls-cert '{}': {} (a PEM certificate is expected)", files.cert, openssl_error(ec)));
  }
  ctx->use_private_key_file(files.key, ssl::context::pem, ec);
  if (ec && ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
    ERR_clear_error();
    return Status::invalid_argument(
        fmt::format("--tls-key '{}' is not the key of the certificate in --tls-cert '{}'",
                    files.key, files.cert));
  }
  if (ec) {
    return Status::invalid_argument(fmt::format(
        "--tls-key '{}': {} (a PEM private key is expected)", files.key, openssl_error(ec)));
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    return Status::invalid_argument(
        fmt::format("--tls-key '{}' is not the key of the certificate in --tls-cert '{}'",
                    files.key, files.cert));
  }
  ctx->load_verify_file(files.ca, ec);
  if (ec) {
    return Status::invalid_argument(fmt::format(
        "--tls-ca '{}': {} (PEM CA certificates are expected)", files.ca, openssl_error(ec)));
  }
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);

  Loaded out;
  out.context = std::move(ctx);
  if (X509* cert = SSL_CTX_get0_certificate(native)) {
    const ASN1_TIME* not_after = X509_get0_notAfter(cert);
    const bool expired = X509_cmp_current_time(not_after) < 0;
    struct tm tm = {};
    if (ASN1_TIME_to_tm(not_after, &tm) == 1) out.not_after = timegm(&tm);
    out.subject = name_text(X509_get_subject_name(cert));
    out.description =
        fmt::format("certificate {} ({} {}), issued by {}", name_text(X509_get_subject_name(cert)),
                    expired ? "EXPIRED" : "valid until", time_text(not_after),
                    name_text(X509_get_issuer_name(cert)));
  }
  return out;
}

Result<std::shared_ptr<TlsIdentity>> TlsIdentity::load(TlsFiles files) {
  auto id = std::make_shared<TlsIdentity>(std::move(files));
  ROMULUS_RETURN_IF_ERROR(id->reload());
  return id;
}

Status TlsIdentity::reload() {
  auto built = build(files_);
  if (!built.is_ok()) return built.status();
  std::lock_guard lock(mu_);
  current_ = std::move(built).value();
  return Status::ok();
}

std::shared_ptr<ssl::context> TlsIdentity::context() const {
  std::lock_guard lock(mu_);
  return current_.context;
}

int64_t TlsIdentity::not_after() const {
  std::lock_guard lock(mu_);
  return current_.not_after;
}

std::string TlsIdentity::subject() const {
  std::lock_guard lock(mu_);
  return current_.subject;
}

std::string TlsIdentity::describe() const {
  std::lock_guard lock(mu_);
  std::string d = current_.description;
  if (!files_.peer_name.empty())
    d += fmt::format("; the peer must be named '{}'", files_.peer_name);
  return d;
}

}  // namespace romulus::common
