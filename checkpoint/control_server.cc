#include "checkpoint/control_server.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace romulus::checkpoint {
namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

// One request line in, one reply line out.
class ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  ControlSession(local::socket socket, const ControlServer::Handler& handler)
      : socket_(std::move(socket)), handler_(handler) {}

  void start() { do_read_request(); }

 private:
  void do_read_request() {
    auto self = shared_from_this();
    asio::async_read_until(socket_, asio::dynamic_buffer(buffer_, 4096), '\n',
                           [this, self](boost::system::error_code ec, size_t n) {
                             if (ec) return;
                             std::string line = buffer_.substr(0, n - 1);
                             reply_ = handler_(line) + "\n";
                             do_write_reply();
                           });
  }
  void do_write_reply() {
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(reply_),
                      [this, self](boost::system::error_code, size_t) {
                        boost::system::error_code ignored;
                        socket_.shutdown(local::socket::shutdown_both, ignored);
                      });
  }

  local::socket socket_;
  const ControlServer::Handler& handler_;
  std::string buffer_, reply_;
};

}  // namespace

ControlServer::ControlServer(asio::io_context& io, std::string path, Handler handler)
    : io_(io), path_(std::move(path)), handler_(std::move(handler)) {}

ControlServer::~ControlServer() {
  if (acceptor_) {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
  }
  if (bound_) ::unlink(path_.c_str());
}

Status ControlServer::start() {
  std::error_code fec;
  const auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, fec);
  if (std::filesystem::exists(path_)) {
    // A live node answers; a stale socket from a dead one is replaced.
    if (control_request(path_, "ping").is_ok()) {
      return Status::invalid_argument(fmt::format(
          "control socket {} is in use by another romulus node; pass --control PATH", path_));
    }
    ::unlink(path_.c_str());
  }
  acceptor_ = std::make_unique<local::acceptor>(io_);
  boost::system::error_code ec;
  acceptor_->open(local(), ec);
  if (!ec) acceptor_->bind(local::endpoint(path_), ec);
  if (!ec) acceptor_->listen(16, ec);
  if (ec) {
    return Status::io_error(fmt::format("cannot create control socket {}: {} (pass --control PATH)",
                                        path_, ec.message()));
  }
  bound_ = true;
  ::chmod(path_.c_str(), 0600);
  do_accept();
  return Status::ok();
}

void ControlServer::do_accept() {
  acceptor_->async_accept([this](boost::system::error_code ec, local::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) std::make_shared<ControlSession>(std::move(socket), handler_)->start();
    do_accept();
  });
}

Result<std::string> control_request(const std::string& path, const std::string& request) {
  asio::io_context io;
  local::socket socket(io);
  boost::system::error_code ec;
  socket.connect(local::endpoint(path), ec);
  if (ec) {
    return Status::unavailable(fmt::format(
        "no romulus node at {} ({}); is it running? (--control PATH)", path, ec.message()));
  }
  const std::string line = request + "\n";
  asio::write(socket, asio::buffer(line), ec);
  std::string reply;
  asio::read_until(socket, asio::dynamic_buffer(reply, 1 << 20), '\n', ec);
  if (ec && reply.empty()) {
    return Status::unavailable(fmt::format("{}: no reply ({})", path, ec.message()));
  }
  if (!reply.empty() && reply.back() == '\n') reply.pop_back();
  return reply;
}

std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string json_error(const std::string& message) {
  return fmt::format(R"({{"ok":false,"error":"{}"}})", json_escape(message));
}

}  // namespace romulus::checkpoint
