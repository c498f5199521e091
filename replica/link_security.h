// LinkSecurity: the replication link's security for every role of one
// process, and what the process says about it (docs/design.md, "Threat
// model"; docs/operations.md, "Certificates").
//
// start() decides once, before any role runs, how the link runs: mutual TLS
// 1.3 when the node has certificates (the identity goes into both roles'
// settings), else plaintext, which is refused on a non-loopback address
// unless --insecure (and then warned about at every start). reload()
// re-reads the TLS files of the link and of an etcds:// witness for new
// connections (SIGHUP, `romulus set tls reload`); a file that fails keeps
// the certificates in use, and says why.
//
// What it reports is a TlsStatus, a typed value written to status --json's
// "tls" and rendered as the TLS families of --metrics. handler() and
// metrics_handler() wrap a role's handlers for the process's control socket
// and metrics endpoint: the process's own request (`set tls reload`) is
// answered in front of the role, and status --json is the role's members
// plus "tls", serialised once, there.
//
// Threads: start() and set_witness() on the main thread before any role
// runs. reload(), status() and the handlers they return from any thread (the
// control socket's, the metrics server's, the signal watcher's): the counters
// are atomics and TlsIdentity is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/json.hpp>

#include "common/control_server.h"
#include "common/metrics_server.h"
#include "common/metrics_text.h"
#include "common/status.h"
#include "common/tls.h"
#include "replica/takeover.h"

namespace romulus::replica {

// The link security a node reports, taken at one instant.
struct TlsStatus {
  struct Identity {
    std::string mode;         // "mutual TLS 1.3"
    std::string certificate;  // its subject
    int64_t not_after = 0;    // when it expires (Unix time)
    std::string describe;     // TlsIdentity::describe()
  };
  std::string link_mode;  // "mutual TLS 1.3", "plaintext (loopback)", "plaintext (--insecure)"
  std::optional<Identity> link;     // the link's certificate; nullopt: plaintext
  std::optional<Identity> witness;  // the etcds:// client's; nullopt: no etcds:// witness
  uint64_t reloads = 0;             // files re-read, one per identity
  uint64_t reload_failures = 0;

  // Writes the members of status --json's "tls" into `out`: "link" ({"mode"}
  // and, with TLS, "certificate", "not_after", "describe"), "witness" (the
  // same; etcds:// only), "reloads", "reload_failures".
  void write_json(boost::json::object& out) const;
  // Appends the TLS families: romulus_tls_certificate_expiry_timestamp_seconds
  // (by link, with any certificate) and romulus_tls_reloads_total (by result).
  void render_metrics(common::MetricsText& out) const;
};

// A role's answer to `status --json`: its members, or why it has none.
using RoleStatus = std::function<Result<boost::json::object>()>;

class LinkSecurity {
 public:
  explicit LinkSecurity(std::function<void(const std::string&)> log);

  // Loads the TLS identity into `s` (both roles), or checks that plaintext
  // is allowed on every replication address `s` names. Logs the mode.
  Status start(NodeSettings& s);

  // The witness's identity (etcds://; nullptr for etcd://), re-read by
  // reload() with the link's.
  void set_witness(std::shared_ptr<common::TlsIdentity> witness) { witness_ = std::move(witness); }

  // Whether there is anything for reload() to re-read.
  bool has_tls() const { return tls_ || witness_; }

  // Re-reads the TLS files for new connections: SIGHUP, `set tls reload`. The
  // link's and the witness's files are each re-read; one that fails keeps the
  // certificates it had (connections already up keep theirs either way).
  Status reload();

  // What status --json's "tls" and the TLS metrics report, now.
  TlsStatus status() const;

  // A role's control handler, with the process's own requests in front:
  // `set tls reload`, and status ("status", "status --json"), whose reply is
  // `role_status`'s members followed by "tls". Every other request goes to
  // `role` as it is.
  common::ControlServer::Handler handler(common::ControlServer::Handler role,
                                         RoleStatus role_status);

  // A role's metrics handler with the TLS families appended.
  common::MetricsServer::Handler metrics_handler(common::MetricsServer::Handler role);

 private:
  std::function<void(const std::string&)> log_;
  std::shared_ptr<common::TlsIdentity> tls_, witness_;
  std::string mode_;
  std::atomic<uint64_t> reloads_ok_{0}, reloads_failed_{0};
};

}  // namespace romulus::replica
