#include "witness/etcd_client.h"

#include <fmt/format.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <exception>

#include "common/link_stream.h"

namespace romulus::witness::etcd {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

Result<EtcdUrl> EtcdUrl::parse(std::string_view text) {
  constexpr std::string_view kPlain = "etcd://", kTls = "etcds://";
  EtcdUrl url;
  std::string_view rest = text;
  if (rest.starts_with(kTls)) {
    url.tls = true;
    rest.remove_prefix(kTls.size());
  } else if (rest.starts_with(kPlain)) {
    rest.remove_prefix(kPlain.size());
  } else {
    return Status::invalid_argument(
        fmt::format("'{}': use etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS)", text));
  }
  if (rest.empty()) return Status::invalid_argument(fmt::format("'{}' names no endpoint", text));
  while (true) {
    const size_t comma = rest.find(',');
    auto ep = Endpoint::parse(rest.substr(0, comma));
    if (!ep.is_ok()) return ep.status().context(fmt::format("'{}'", text));
    url.endpoints.push_back(std::move(ep).value());
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return url;
}

std::string EtcdUrl::to_string() const {
  std::string out = tls ? "etcds://" : "etcd://";
  for (size_t i = 0; i < endpoints.size(); ++i) {
    if (i > 0) out += ',';
    out += endpoints[i].to_string();
  }
  return out;
}

// One HTTP/1.1 connection to one endpoint, driven on a private io_context.
// Each exchange runs the io_context for at most the deadline; on expiry the
// socket is closed, the aborted handlers drained, and a timeout returned.
class EtcdClient::Connection {
 public:
  Connection(size_t endpoint, const Endpoint& ep, const common::TlsIdentity* tls)
      : endpoint_(endpoint),
        resolver_(ioc_),
        stream_(tls ? common::LinkStream(tcp::socket(ioc_), *tls, ep.host)
                    : common::LinkStream(tcp::socket(ioc_))) {}

  size_t endpoint() const { return endpoint_; }
  bool connected() { return stream_.socket().is_open() && handshaken_; }

  Result<std::string> exchange(const Endpoint& ep, std::string_view path, const std::string& body,
                               std::chrono::milliseconds timeout) {
    try {
      return exchange_or_throw(ep, path, body, timeout);
    } catch (const std::exception& e) {
      close();
      return Status::io_error(fmt::format("{}: {}", ep.to_string(), e.what()));
    }
  }

  void close() {
    resolver_.cancel();
    stream_.close();
  }

 private:
  Result<std::string> exchange_or_throw(const Endpoint& ep, std::string_view path,
                                        const std::string& body,
                                        std::chrono::milliseconds timeout) {
    request_ = {};
    request_.method(http::verb::post);
    request_.target(boost::beast::string_view(path.data(), path.size()));
    request_.version(11);
    request_.set(http::field::host, ep.to_string());
    request_.set(http::field::content_type, "application/json");
    request_.keep_alive(true);
    request_.body() = body;
    request_.prepare_payload();
    parser_.emplace();
    parser_->body_limit(kMaxReplyBytes);
    buffer_.clear();
    done_ = false;
    error_ = {};
    step_ = "connect";

    ioc_.restart();
    if (connected()) {
      do_write();
    } else {
      boost::system::error_code ec;
      const asio::ip::address addr = asio::ip::make_address(ep.host, ec);
      if (!ec) {
        do_connect(tcp::resolver::results_type::create(tcp::endpoint(addr, ep.port), ep.host,
                                                       std::to_string(ep.port)));
      } else {
        step_ = "resolve";
        resolver_.async_resolve(ep.host, std::to_string(ep.port),
                                [this](boost::system::error_code e, tcp::resolver::results_type r) {
                                  if (e) return finish(e);
                                  do_connect(std::move(r));
                                });
      }
    }
    ioc_.run_for(timeout);
    if (!done_) {
      close();
      ioc_.restart();
      ioc_.run();  // let the aborted handlers run
      return Status::timeout(
          fmt::format("{}: no reply within {} ms ({})", ep.to_string(), timeout.count(), step_));
    }
    if (error_) {
      const std::string why =
          stream_.tls() && !handshaken_ ? stream_.describe_failure(error_) : error_.message();
      close();
      return Status::unavailable(fmt::format("{}: {}: {}", ep.to_string(), step_, why));
    }
    http::response<http::string_body> response = parser_->release();
    if (!response.keep_alive()) close();
    const unsigned code = response.result_int();
    std::string reply = std::move(response.body());
    // The gateway puts errors in a JSON body; a non-JSON error page is reported by its status.
    if (code >= 300 && (reply.empty() || reply.front() != '{')) {
      return Status::unavailable(fmt::format("{}: HTTP {}", ep.to_string(), code));
    }
    return reply;
  }

  void do_connect(const tcp::resolver::results_type& results) {
    step_ = "connect";
    asio::async_connect(stream_.socket(), results,
                        [this](boost::system::error_code e, const tcp::endpoint&) {
                          if (e) return finish(e);
                          boost::system::error_code ignored;
                          stream_.socket().set_option(tcp::no_delay(true), ignored);
                          do_handshake();
                        });
  }

  void do_handshake() {
    step_ = stream_.tls() ? "TLS handshake" : "connect";
    stream_.async_handshake(common::LinkStream::Side::kClient, [this](boost::system::error_code e) {
      if (e) return finish(e);
      handshaken_ = true;
      do_write();
    });
  }

  void do_write() {
    step_ = "send";
    http::async_write(stream_, request_, [this](boost::system::error_code e, size_t) {
      if (e) return finish(e);
      do_read();
    });
  }

  void do_read() {
    step_ = "read reply";
    http::async_read(stream_, buffer_, *parser_,
                     [this](boost::system::error_code e, size_t) { finish(e); });
  }

  void finish(boost::system::error_code e) {
    done_ = true;
    error_ = e;
  }

  size_t endpoint_;
  asio::io_context ioc_;
  tcp::resolver resolver_;
  common::LinkStream stream_;
  bool handshaken_ = false;
  boost::beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  std::optional<http::response_parser<http::string_body>> parser_;
  bool done_ = false;
  boost::system::error_code error_;
  const char* step_ = "connect";
};

EtcdClient::EtcdClient(std::vector<Endpoint> endpoints)
    : EtcdClient(std::move(endpoints), Options()) {}

EtcdClient::EtcdClient(std::vector<Endpoint> endpoints, Options options)
    : endpoints_(std::move(endpoints)), options_(options) {}

EtcdClient::~EtcdClient() = default;

Result<std::string> EtcdClient::post_once(size_t endpoint, std::string_view path,
                                          const std::string& body) {
  const bool reuse = conn_ && conn_->endpoint() == endpoint && conn_->connected();
  if (!reuse) {
    conn_ = std::make_unique<Connection>(endpoint, endpoints_[endpoint], options_.tls.get());
    ++connections_opened_;
  }
  Result<std::string> r = conn_->exchange(endpoints_[endpoint], path, body, options_.timeout);
  if (!r.is_ok() && reuse && r.status().code() == StatusCode::kUnavailable) {
    // The server may have closed an idle kept-alive connection: one fresh try.
    conn_ = std::make_unique<Connection>(endpoint, endpoints_[endpoint], options_.tls.get());
    ++connections_opened_;
    r = conn_->exchange(endpoints_[endpoint], path, body, options_.timeout);
  }
  if (!r.is_ok()) conn_.reset();
  return r;
}

std::string EtcdClient::describe() const {
  return EtcdUrl{endpoints_, options_.tls != nullptr}.to_string();
}

Result<std::string> EtcdClient::post(std::string_view path, const std::string& body) {
  if (endpoints_.empty()) return Status::invalid_argument("no witness endpoints");
  std::string errors;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    const size_t ep = (current_ + i) % endpoints_.size();
    Result<std::string> r = post_once(ep, path, body);
    if (r.is_ok()) {
      current_ = ep;
      return r;
    }
    if (!errors.empty()) errors += "; ";
    errors += r.status().message();
  }
  return Status::unavailable(fmt::format("{} {}: {}", describe(), path, errors));
}

namespace {

std::string id_body(int64_t id) {
  json::object o;
  o["ID"] = std::to_string(id);
  return json::serialize(o);
}

}  // namespace

Result<GrantReply> EtcdClient::grant(int64_t ttl_seconds) {
  json::object o;
  o["TTL"] = std::to_string(ttl_seconds);
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/lease/grant", json::serialize(o)));
  return parse_grant_reply(reply);
}

Result<int64_t> EtcdClient::keepalive(int64_t lease) {
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/lease/keepalive", id_body(lease)));
  return parse_keepalive_reply(reply);
}

Status EtcdClient::revoke(int64_t lease) {
  Result<std::string> reply = post("/v3/lease/revoke", id_body(lease));
  if (!reply.is_ok()) return reply.status();
  Status s = parse_empty_reply(*reply);
  if (!s.is_ok() && s.message().find("lease not found") != std::string::npos) return Status::ok();
  return s;
}

Result<int64_t> EtcdClient::time_to_live(int64_t lease) {
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/lease/timetolive", id_body(lease)));
  return parse_time_to_live_reply(reply);
}

Result<std::optional<KeyValue>> EtcdClient::get(std::string_view key) {
  json::object o;
  o["key"] = base64_encode(key);
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/range", json::serialize(o)));
  return parse_range_reply(reply);
}

Result<AcquireReply> EtcdClient::acquire(std::string_view key, std::string_view value,
                                         int64_t lease, const AcquireGuard* guard) {
  const std::string k = base64_encode(key);
  json::object put{{"key", k}, {"value", base64_encode(value)}, {"lease", std::to_string(lease)}};
  json::object range{{"key", k}};
  auto attempt = [&](json::array compare) -> Result<TxnReply> {
    json::object txn;
    txn["compare"] = std::move(compare);
    txn["success"] =
        json::array{json::object{{"request_put", put}}, json::object{{"request_range", range}}};
    txn["failure"] = json::array{json::object{{"request_range", range}}};
    ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/txn", json::serialize(txn)));
    return parse_txn_reply(reply);
  };
  const json::object key_absent{{"target", "CREATE"}, {"key", k}, {"create_revision", "0"}};
  if (!guard) {
    ROMULUS_ASSIGN_OR_RETURN(TxnReply t, attempt(json::array{key_absent}));
    return AcquireReply{t.succeeded, std::move(t.range_kv), false};
  }
  const std::string g = base64_encode(guard->key);
  // Either the guard key is absent...
  ROMULUS_ASSIGN_OR_RETURN(
      TxnReply t,
      attempt(json::array{
          key_absent, json::object{{"target", "CREATE"}, {"key", g}, {"create_revision", "0"}}}));
  if (t.succeeded || t.range_kv) return AcquireReply{t.succeeded, std::move(t.range_kv), false};
  // ...or it holds exactly the allowed value (this node's own marker).
  ROMULUS_ASSIGN_OR_RETURN(
      TxnReply t2, attempt(json::array{
                       key_absent, json::object{{"target", "VALUE"},
                                                {"key", g},
                                                {"value", base64_encode(guard->allowed_value)}}}));
  return AcquireReply{t2.succeeded, std::move(t2.range_kv), !t2.succeeded && !t2.range_kv};
}

Result<bool> EtcdClient::put_if_owner(std::string_view key, std::string_view value,
                                      std::string_view owner_key, int64_t lease) {
  json::object txn;
  txn["compare"] = json::array{json::object{
      {"target", "LEASE"}, {"key", base64_encode(owner_key)}, {"lease", std::to_string(lease)}}};
  txn["success"] = json::array{json::object{
      {"request_put", json::object{{"key", base64_encode(key)}, {"value", base64_encode(value)}}}}};
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/txn", json::serialize(txn)));
  ROMULUS_ASSIGN_OR_RETURN(TxnReply t, parse_txn_reply(reply));
  return t.succeeded;
}

Result<bool> EtcdClient::delete_if_value(std::string_view key, std::string_view value) {
  const std::string k = base64_encode(key);
  json::object txn;
  txn["compare"] =
      json::array{json::object{{"target", "VALUE"}, {"key", k}, {"value", base64_encode(value)}}};
  txn["success"] = json::array{json::object{{"request_delete_range", json::object{{"key", k}}}}};
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/txn", json::serialize(txn)));
  ROMULUS_ASSIGN_OR_RETURN(TxnReply t, parse_txn_reply(reply));
  return t.succeeded && t.deleted;
}

Result<bool> EtcdClient::release(std::string_view key, int64_t lease) {
  const std::string k = base64_encode(key);
  json::object txn;
  txn["compare"] =
      json::array{json::object{{"target", "LEASE"}, {"key", k}, {"lease", std::to_string(lease)}}};
  txn["success"] = json::array{json::object{{"request_delete_range", json::object{{"key", k}}}}};
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/txn", json::serialize(txn)));
  ROMULUS_ASSIGN_OR_RETURN(TxnReply t, parse_txn_reply(reply));
  ROMULUS_RETURN_IF_ERROR(revoke(lease));
  return t.succeeded && t.deleted;
}

Status EtcdClient::put(std::string_view key, std::string_view value) {
  json::object o;
  o["key"] = base64_encode(key);
  o["value"] = base64_encode(value);
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/put", json::serialize(o)));
  return parse_empty_reply(reply);
}

Status EtcdClient::remove(std::string_view key) {
  json::object o;
  o["key"] = base64_encode(key);
  ROMULUS_ASSIGN_OR_RETURN(std::string reply, post("/v3/kv/deleterange", json::serialize(o)));
  return parse_empty_reply(reply);
}

}  // namespace romulus::witness::etcd
