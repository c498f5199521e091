#include "common/metrics_server.h"

#include <fmt/format.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/metrics_text.h"
#include "common/net.h"

namespace romulus::common {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// After a failed accept (out of descriptors and the like), wait this long
// before the next: long enough not to spin, short enough to serve soon after.
constexpr std::chrono::milliseconds kAcceptRetry{100};

// One client connection: read a request (bounded, with a deadline), answer
// it, and read the next one while the client keeps the connection alive.
class MetricsSession : public std::enable_shared_from_this<MetricsSession> {
 public:
  MetricsSession(tcp::socket socket, MetricsServer& server)
      : stream_(std::move(socket)), server_(server) {
    server_.session_opened();
    boost::system::error_code ec;
    const auto ep = stream_.socket().remote_endpoint(ec);
    peer_ = ec ? "?" : Endpoint{ep.address().to_string(), ep.port()}.to_string();
  }
  ~MetricsSession() { server_.session_closed(); }

  void start() { do_read_request(); }

 private:
  void do_read_request() {
    parser_.emplace();
    parser_->header_limit(MetricsServer::kMaxRequestBytes);
    parser_->body_limit(MetricsServer::kMaxRequestBytes);
    stream_.expires_after(MetricsServer::kReadTimeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_request(ec); });
  }

  void on_request(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted) {
      return close();
    }
    if (ec == beast::error::timeout) {
      // Idle between requests is a keep-alive ending; a request begun and not
      // finished is a slow (or hostile) client.
      if (buffer_.size() > 0 || parser_->got_some()) {
        server_.note_misbehaviour(
            fmt::format("{} did not complete its request within {} ms; cut off", peer_,
                        MetricsServer::kReadTimeout.count()));
      }
      return close();
    }
    if (ec == http::error::header_limit || ec == http::error::body_limit ||
        ec == http::error::buffer_overflow) {
      server_.note_misbehaviour(fmt::format("{} sent a request over {} bytes; refused", peer_,
                                            MetricsServer::kMaxRequestBytes));
      return reply(http::status::request_header_fields_too_large, "request too large\n", false);
    }
    if (ec) {
      server_.note_misbehaviour(
          fmt::format("{} sent a malformed request ({})", peer_, ec.message()));
      return reply(http::status::bad_request, "bad request\n", false);
    }
    const auto& req = parser_->get();
    const bool keep_alive = req.keep_alive();
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    if (target != "/metrics")
      return reply(http::status::not_found, "not found; try /metrics\n", keep_alive);
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      return reply(http::status::method_not_allowed, "GET /metrics\n", keep_alive);
    }
    auto text = server_.render();
    if (!text) {
      return reply(http::status::service_unavailable, "this node is changing role; try again\n",
                   keep_alive);
    }
    reply(http::status::ok, std::move(*text), keep_alive, req.method() == http::verb::head,
          kMetricsContentType);
  }

  void reply(http::status status, std::string body, bool keep_alive, bool head = false,
             std::string_view type = "text/plain; charset=utf-8") {
    response_.emplace(status, 11);
    response_->set(http::field::server, "romulus");
    response_->set(http::field::content_type, type);
    response_->keep_alive(keep_alive);
    response_->body() = std::move(body);
    response_->prepare_payload();
    if (head) response_->body().clear();  // Content-Length stays that of GET
    stream_.expires_after(MetricsServer::kWriteTimeout);
    serializer_.emplace(*response_);
    if (head) serializer_->split(true);
    auto on_written = [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
      if (ec || !keep_alive) return self->close();
      self->do_read_request();
    };
    if (head) {
      http::async_write_header(stream_, *serializer_, std::move(on_written));
    } else {
      http::async_write(stream_, *serializer_, std::move(on_written));
    }
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  MetricsServer& server_;
  std::string peer_;
  beast::flat_buffer buffer_{MetricsServer::kMaxRequestBytes};
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> response_;
  std::optional<http::response_serializer<http::string_body>> serializer_;
};

}  // namespace

MetricsServer::MetricsServer(std::string host, uint16_t port, LogFn log)
    : host_(std::move(host)), port_(port), log_(std::move(log)), acceptor_(io_) {}

MetricsServer::~MetricsServer() {
  if (thread_.joinable()) {
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      io_.stop();
    });
    thread_.join();
  }
}

Status MetricsServer::start() {
  ROMULUS_RETURN_IF_ERROR(listen_tcp(acceptor_, Endpoint{host_, port_}, "--metrics"));
  boost::system::error_code ec;
  bound_port_ = acceptor_.local_endpoint(ec).port();
  do_accept();
  thread_ = std::thread([this] { io_.run(); });
  return Status::ok();
}

void MetricsServer::set_handler(Handler handler) {
  std::lock_guard lock(mu_);
  handler_ = std::move(handler);
}

std::optional<std::string> MetricsServer::render() {
  std::lock_guard lock(mu_);
  if (!handler_) return std::nullopt;
  return handler_();
}

void MetricsServer::note_misbehaviour(const std::string& what) {
  const auto now = Clock::now();
  if (last_log_ != Clock::time_point{} && now - last_log_ < kLogQuiet) {
    ++unlogged_;
    return;
  }
  std::string line = fmt::format("metrics endpoint: {}", what);
  if (unlogged_ > 0) {
    line += fmt::format(" ({} more such events in the last {} s not logged)", unlogged_,
                        std::chrono::duration_cast<std::chrono::seconds>(now - last_log_).count());
  }
  log_(line);
  last_log_ = now;
  unlogged_ = 0;
}

void MetricsServer::do_accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors and the like: try again shortly instead of spinning.
      auto t = std::make_shared<asio::steady_timer>(io_, kAcceptRetry);
      t->async_wait([this, t](boost::system::error_code) { do_accept(); });
      note_misbehaviour(fmt::format("accept failed: {}", ec.message()));
      return;
    }
    if (open_ >= kMaxConnections) {
      note_misbehaviour(
          fmt::format("more than {} connections at once; closing the newest", kMaxConnections));
      boost::system::error_code ignored;
      socket.close(ignored);
    } else {
      std::make_shared<MetricsSession>(std::move(socket), *this)->start();
    }
    do_accept();
  });
}

}  // namespace romulus::common
