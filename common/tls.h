// Mutual TLS on the replication link: the node's identity (certificate, key,
// the CA its peer must be signed by, the name its peer must carry), and the
// rule for when plaintext is allowed.
//
// TlsIdentity owns an OpenSSL context built from the files: TLS 1.3 only,
// the peer's certificate required and verified against the CA in both
// directions (the same context serves the primary's connector and the
// backup's listener), no session tickets (every connection verifies a
// certificate afresh). reload() re-reads the files into a new context that
// new connections use; connections already up keep theirs. A failed reload
// keeps the old context and says why.
//
// Plaintext is allowed on loopback (the demo, the tests) and, with
// --insecure, anywhere; check_plaintext_allowed() is that rule.
//
// Threading: TlsIdentity is thread-safe (context() and reload() from any
// thread). The free functions are pure apart from name resolution.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/asio.h"

#include <boost/asio/ssl.hpp>  // after common/asio.h (its <utility> fix)

#include "common/endpoint.h"
#include "common/status.h"

namespace romulus::common {

// The files of --tls-cert, --tls-key, --tls-ca and the name of --tls-peer-name.
struct TlsFiles {
  std::string cert, key, ca;
  std::string peer_name;  // empty: any certificate the CA signed
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// Checks that the link options fit together: all three files or none,
// --tls-peer-name only with them, --insecure only without them.
Status check_link_options(const TlsFiles& files, bool insecure);

// Whether `host` is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x) or a
// name whose every address is one ("localhost"). An unresolvable name, a
// wildcard (0.0.0.0, ::) and any other address are not loopback.
bool is_loopback_host(const std::string& host);

// Whether the link to or on `endpoint` (of `option`) may run in plaintext:
// loopback, or --insecure. The error says what to do.
Status check_plaintext_allowed(const Endpoint& endpoint, const std::string& option, bool insecure);

class TlsIdentity {
 public:
  // Reads the files; the error names the file and what is wrong with it.
  static Result<std::shared_ptr<TlsIdentity>> load(TlsFiles files);

  // Re-reads the files for new connections. On error the old context stays.
  Status reload();

  // The context for a new connection (kept alive by the connection).
  std::shared_ptr<boost::asio::ssl::context> context() const;
  const std::string& peer_name() const { return files_.peer_name; }
  // "CN=node-a (expires 2027-11-29), CA CN=Romulus pair CA", for log lines.
  std::string describe() const;
  // The certificate in use: its notAfter (seconds since the Unix epoch; 0
  // if unreadable) and its subject, for status and metrics.
  int64_t not_after() const;
  std::string subject() const;

  explicit TlsIdentity(TlsFiles files) : files_(std::move(files)) {}

 private:
  struct Loaded {
    std::shared_ptr<boost::asio::ssl::context> context;
    std::string description;
    std::string subject;
    int64_t not_after = 0;
  };
  static Result<Loaded> build(const TlsFiles& files);

  const TlsFiles files_;
  mutable std::mutex mu_;
  Loaded current_;
};

}  // namespace romulus::common
