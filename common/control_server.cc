#include "common/control_server.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/json.h"

namespace romulus::common {
namespace asio = boost::asio;
using local = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

namespace {

// How long start() waits for a node already on the socket to answer a ping:
// a live node answers at once; silence this long means the socket is stale.
constexpr std::chrono::seconds kLivePingWithin{1};

// One request line in, one reply line out; closed after kRequestTimeout.
class ControlSession : public std::enable_shared_from_this<ControlSession> {
 public:
  ControlSession(local::socket socket, ControlServer& server)
      : socket_(std::move(socket)), server_(server), deadline_(socket_.get_executor()) {}

  void start() {
    deadline_.expires_after(ControlServer::kRequestTimeout);
    deadline_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return;  // cancelled: the request was answered
      boost::system::error_code ignored;
      self->socket_.close(ignored);
    });
    do_read_request();
  }

 private:
  void do_read_request() {
    asio::async_read_until(socket_, asio::dynamic_buffer(buffer_, ControlServer::kMaxRequestBytes),
                           '\n',
                           [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                             self->on_request(ec, n);
                           });
  }

  void on_request(boost::system::error_code ec, size_t n) {
    if (ec == asio::error::not_found) {  // no newline within the limit
      server_.log(fmt::format("control socket: a request line over {} bytes; refused",
                              ControlServer::kMaxRequestBytes));
      write_reply(json_error(fmt::format("request line over {} bytes; send one short line",
                                         ControlServer::kMaxRequestBytes)));
      return;
    }
    if (ec) {
      deadline_.cancel();
      return;  // the client went away (or the deadline closed it)
    }
    write_reply(server_.answer(buffer_.substr(0, n - 1)));
  }

  void write_reply(std::string reply) {
    reply_ = std::move(reply) + "\n";
    asio::async_write(socket_, asio::buffer(reply_),
                      [self = shared_from_this()](boost::system::error_code, size_t) {
                        self->deadline_.cancel();
                        boost::system::error_code ignored;
                        self->socket_.shutdown(local::socket::shutdown_both, ignored);
                      });
  }

  local::socket socket_;
  ControlServer& server_;
  asio::steady_timer deadline_;
  std::string buffer_, reply_;
};

}  // namespace

ControlServer::ControlServer(std::string path, LogFn log)
    : path_(std::move(path)), log_(std::move(log)) {}

ControlServer::~ControlServer() {
  asio::post(io_, [this] {
    boost::system::error_code ignored;
    if (acceptor_) acceptor_->close(ignored);
    io_.stop();
  });
  if (thread_.joinable()) thread_.join();
  if (bound_) ::unlink(path_.c_str());
}

Status ControlServer::start() {
  std::error_code fec;
  const auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, fec);
  if (std::filesystem::exists(path_)) {
    // A live node answers; a stale socket from a dead one is replaced.
    if (control_request(path_, "ping", kLivePingWithin).is_ok()) {
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
  thread_ = std::thread([this] { io_.run(); });
  return Status::ok();
}

void ControlServer::set_handler(Handler handler) {
  std::lock_guard lock(mu_);
  handler_ = std::move(handler);
}

std::string ControlServer::answer(const std::string& request) {
  std::lock_guard lock(mu_);
  if (request == "ping") return json_ok();
  if (!handler_) return json_error("this node is changing role (taking over); try again");
  return handler_(request);
}

void ControlServer::do_accept() {
  acceptor_->async_accept([this](boost::system::error_code ec, local::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) return;
    if (!ec) std::make_shared<ControlSession>(std::move(socket), *this)->start();
    do_accept();
  });
}

Result<std::string> control_request(const std::string& path, const std::string& request,
                                    std::chrono::milliseconds timeout) {
  asio::io_context io;
  local::socket socket(io);
  asio::steady_timer deadline(io, timeout);
  std::string reply;
  boost::system::error_code result = asio::error::timed_out;
  bool done = false, timed_out = false;
  const std::string line = request + "\n";
  deadline.async_wait([&](boost::system::error_code ec) {
    if (ec || done) return;
    timed_out = true;
    boost::system::error_code ignored;
    socket.close(ignored);
  });
  socket.async_connect(local::endpoint(path), [&](boost::system::error_code ec) {
    if (ec) {
      done = true;
      result = ec;
      deadline.cancel();
      return;
    }
    asio::async_write(socket, asio::buffer(line), [&](boost::system::error_code wec, size_t) {
      if (wec) {
        done = true;
        result = wec;
        deadline.cancel();
        return;
      }
      asio::async_read_until(socket, asio::dynamic_buffer(reply, 1 << 20), '\n',
                             [&](boost::system::error_code rec, size_t) {
                               done = true;
                               result = rec;
                               deadline.cancel();
                             });
    });
  });
  io.run();
  if (timed_out) {
    return Status::timeout(fmt::format(
        "the romulus node at {} did not answer within {} ms; it may be stopped (kill -STOP) "
        "or overloaded",
        path, timeout.count()));
  }
  if (reply.empty()) {
    if (result == asio::error::connection_refused ||
        result == boost::system::errc::no_such_file_or_directory) {
      return Status::unavailable(fmt::format(
          "no romulus node at {} ({}); is it running? (--control PATH)", path, result.message()));
    }
    return Status::unavailable(fmt::format("{}: no reply ({})", path, result.message()));
  }
  if (reply.back() == '\n') reply.pop_back();
  return reply;
}

}  // namespace romulus::common
