#include "replica/link_security.h"

#include <fmt/format.h>

#include <string_view>
#include <utility>
#include <vector>

#include "common/json.h"
#include "common/endpoint.h"

namespace romulus::replica {
namespace json = boost::json;

void TlsStatus::write_json(json::object& out) const {
  auto identity = [](const Identity& id) {
    json::object o;
    o["mode"] = id.mode;
    o["certificate"] = id.certificate;
    o["not_after"] = id.not_after;
    o["describe"] = id.describe;
    return o;
  };
  out["link"] = link ? identity(*link) : json::object{{"mode", link_mode}};
  if (witness) out["witness"] = identity(*witness);
  out["reloads"] = reloads;
  out["reload_failures"] = reload_failures;
}

void TlsStatus::render_metrics(common::MetricsText& m) const {
  // When each certificate in use expires (to alert on before it does).
  if (link || witness) {
    constexpr std::string_view kExpiry = "romulus_tls_certificate_expiry_timestamp_seconds";
    m.family(kExpiry, "gauge", "When the certificate this node presents expires (Unix time).");
    if (link) m.sample(kExpiry, static_cast<double>(link->not_after), {{"link", "replication"}});
    if (witness) m.sample(kExpiry, static_cast<double>(witness->not_after), {{"link", "witness"}});
  }
  constexpr std::string_view kReloads = "romulus_tls_reloads_total";
  m.family(kReloads, "counter", "TLS file re-reads (SIGHUP, set tls reload), by result.");
  m.sample(kReloads, static_cast<double>(reloads), {{"result", "ok"}});
  m.sample(kReloads, static_cast<double>(reload_failures), {{"result", "failed"}});
}

LinkSecurity::LinkSecurity(std::function<void(const std::string&)> log) : log_(std::move(log)) {}

Status LinkSecurity::start(NodeSettings& s) {
  if (s.tls.enabled()) {
    ROMULUS_ASSIGN_OR_RETURN(tls_, common::TlsIdentity::load(s.tls));
    s.primary.tls = tls_;  // both roles' (NodeSettings::backup_config())
    mode_ = "mutual TLS 1.3";
    log_(fmt::format("replication link: mutual TLS 1.3; this node's {}", tls_->describe()));
    return Status::ok();
  }
  std::vector<std::pair<std::string, std::string>> addresses;  // (option, host:port)
  auto check = [&](const std::optional<common::Endpoint>& at, const std::string& option) {
    if (!at) return Status::ok();
    addresses.emplace_back(option, at->to_string());
    return common::check_plaintext_allowed(*at, option, s.insecure);
  };
  ROMULUS_RETURN_IF_ERROR(check(s.listen, "--listen"));
  ROMULUS_RETURN_IF_ERROR(check(s.primary.backup, "--backup"));
  ROMULUS_RETURN_IF_ERROR(check(s.peer_after_takeover, "--reprotect"));
  s.primary.insecure = s.insecure;
  std::string where;
  for (const auto& [option, ep] : addresses) {
    where += fmt::format("{}{} {}", where.empty() ? "" : ", ", option, ep);
  }
  if (s.insecure) {
    mode_ = "plaintext (--insecure)";
    log_(fmt::format(
        "WARNING: --insecure: the replication link ({}) is plaintext and unauthenticated: "
        "anyone who can reach it can replace the backup's image and make it take over, and "
        "anyone on the path can read the guest's memory (docs/operations.md, \"Certificates\")",
        where.empty() ? "none configured" : where));
  } else {
    mode_ = "plaintext (loopback)";
    log_(
        fmt::format("replication link: plaintext on loopback ({}); between hosts it needs "
                    "--tls-cert, --tls-key and --tls-ca",
                    where.empty() ? "none configured" : where));
  }
  return Status::ok();
}

Status LinkSecurity::reload() {
  if (!has_tls()) {
    return Status::invalid_argument(
        "this node uses no TLS (no --tls-cert, no etcds:// witness): there are no "
        "certificates to reload");
  }
  std::string failed;
  auto one = [&](common::TlsIdentity& id, std::string_view what) {
    Status st = id.reload();
    if (!st.is_ok()) {
      ++reloads_failed_;
      log_(fmt::format("TLS reload of the {} failed, keeping the certificates in use: {}", what,
                       st.message()));
      failed += fmt::format("{}{}: {}", failed.empty() ? "" : "; ", what, st.message());
      return;
    }
    ++reloads_ok_;
    log_(fmt::format("TLS files of the {} re-read; new connections use this node's {}", what,
                     id.describe()));
  };
  if (tls_) one(*tls_, "replication link");
  if (witness_) one(*witness_, "witness");
  if (!failed.empty()) {
    return Status::invalid_argument(
        fmt::format("{} (the certificates in use stay; fix the files and reload again)", failed));
  }
  return Status::ok();
}

TlsStatus LinkSecurity::status() const {
  auto identity = [](const common::TlsIdentity& id, std::string mode) {
    return TlsStatus::Identity{std::move(mode), id.subject(), id.not_after(), id.describe()};
  };
  TlsStatus s;
  s.link_mode = mode_;
  if (tls_) s.link = identity(*tls_, mode_);
  if (witness_) s.witness = identity(*witness_, "mutual TLS 1.3");
  s.reloads = reloads_ok_.load();
  s.reload_failures = reloads_failed_.load();
  return s;
}

common::ControlServer::Handler LinkSecurity::handler(common::ControlServer::Handler role,
                                                     RoleStatus role_status) {
  return [this, role = std::move(role),
          role_status = std::move(role_status)](const std::string& request) {
    if (request == "set tls reload") {
      Status st = reload();
      if (!st.is_ok()) return common::json_error(st.message());
      json::object tls;
      status().write_json(tls);
      return common::json_ok(json::object{{"tls", std::move(tls)}});
    }
    if (request != "status" && request != "status --json") return role(request);
    auto o = role_status();
    if (!o.is_ok()) return common::json_error(o.status().message());
    json::object tls;
    status().write_json(tls);
    (*o)["tls"] = std::move(tls);
    return common::json_ok(std::move(*o));
  };
}

common::MetricsServer::Handler LinkSecurity::metrics_handler(common::MetricsServer::Handler role) {
  return [this, role = std::move(role)] {
    common::MetricsText tls;
    status().render_metrics(tls);
    return role() + tls.text();
  };
}

}  // namespace romulus::replica
