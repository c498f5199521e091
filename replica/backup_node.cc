#include "replica/backup_node.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>

#include "checkpoint/asio.h"
#include "checkpoint/control_server.h"
#include "protocol/backup_messages.h"
#include "protocol/checkpoint_reader.h"
#include "protocol/handshake.h"
#include "protocol/page.h"
#include "replica/replica_state.h"

namespace romulus::replica {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using checkpoint::json_error;
using checkpoint::json_escape;

namespace {

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

}  // namespace

// One primary's connection: handshake, then the checkpoint stream.
class PrimarySession : public std::enable_shared_from_this<PrimarySession>,
                       public protocol::CheckpointSink {
 public:
  PrimarySession(tcp::socket socket, BackupNode::Impl& node);

  void start();
  void close(const std::string& why);
  void send_message(protocol::Bytes bytes);
  bool streaming() const { return streaming_; }
  bool closed() const { return closed_; }
  bool said_goodbye() const { return goodbye_; }
  Clock::time_point last_rx() const { return last_rx_; }
  Clock::time_point last_tx() const { return last_tx_; }
  Clock::time_point accepted_at() const { return accepted_at_; }
  const std::string& peer() const { return peer_; }

  // CheckpointSink: pages go to the replica state; stream events stay here.
  Status on_begin(uint64_t epoch, uint32_t flags) override;
  protocol::MutablePageView page_for(uint64_t pfn, bool needs_current) override;
  Status on_end(uint64_t epoch, uint32_t page_count) override;
  void on_goodbye() override { goodbye_ = true; }

 private:
  void do_read();
  void do_write();
  void handle_handshake();
  void handle_stream(protocol::ByteSpan bytes);

  tcp::socket socket_;
  BackupNode::Impl& node_;
  std::string peer_;
  std::array<uint8_t, 256 * 1024> buf_{};
  protocol::Bytes handshake_buf_;
  std::unique_ptr<protocol::CheckpointReader> reader_;
  std::deque<protocol::Bytes> out_;
  bool writing_ = false;
  bool streaming_ = false;
  bool closed_ = false;
  bool goodbye_ = false;
  bool refuse_ = false;
  std::string refusal_;
  Clock::time_point last_rx_ = Clock::now(), last_tx_ = Clock::now();
  const Clock::time_point accepted_at_ = Clock::now();
};

struct BackupNode::Impl {
  BackupConfig config;
  std::function<void(const std::string&)> log;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer watchdog{io};
  std::unique_ptr<checkpoint::ControlServer> control;
  ReplicaState state;
  std::shared_ptr<PrimarySession> session;
  // When the last stream ended, and whether it ended with GOODBYE.
  std::optional<Clock::time_point> stream_ended;
  bool clean_shutdown = false;
  Clock::time_point last_contact = Clock::now();
  bool waiting_logged = false;
  std::optional<Result<Activation>> outcome;
  uint64_t streams = 0;

  Impl(BackupConfig c, std::function<void(const std::string&)> l)
      : config(std::move(c)), log(std::move(l)), state(config.memory_bytes / protocol::kPageSize) {}

  uint64_t page_count() const { return config.memory_bytes / protocol::kPageSize; }

  void do_accept();
  void on_tick();
  void session_ended(PrimarySession* s, const std::string& why, bool lost_at_once);
  void primary_lost(const std::string& why);
  // How long an accepted connection may take to complete its handshake: a
  // primary sends its hello as soon as it connects, so this is short, and
  // well inside the failover timeout, so that a primary whose hello was lost
  // or damaged can reconnect before this backup gives up on it.
  std::chrono::milliseconds handshake_timeout() const {
    return std::clamp<std::chrono::milliseconds>(config.failover_timeout / 2,
                                                 std::chrono::milliseconds(100),
                                                 std::chrono::milliseconds(1000));
  }
  void activate(const std::string& reason);
  std::string status_json();
};

PrimarySession::PrimarySession(tcp::socket socket, BackupNode::Impl& node)
    : socket_(std::move(socket)), node_(node) {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  peer_ = ec ? "?" : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  socket_.set_option(tcp::no_delay(true), ec);
}

void PrimarySession::start() { do_read(); }

void PrimarySession::close(const std::string& why) {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  node_.session_ended(this, why, false);
}

void PrimarySession::send_message(protocol::Bytes bytes) {
  if (closed_) return;
  out_.push_back(std::move(bytes));
  if (!writing_) do_write();
}

void PrimarySession::do_write() {
  if (out_.empty() || closed_) {
    writing_ = false;
    return;
  }
  writing_ = true;
  last_tx_ = Clock::now();
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(out_.front()),
                    [this, self](boost::system::error_code ec, size_t) {
                      if (ec) {
                        writing_ = false;
                        return;  // the read side reports the loss
                      }
                      out_.pop_front();
                      if (refuse_ && out_.empty()) {
                        close(refusal_);
                        return;
                      }
                      do_write();
                    });
}

void PrimarySession::do_read() {
  auto self = shared_from_this();
  socket_.async_read_some(asio::buffer(buf_), [this, self](boost::system::error_code ec, size_t n) {
    if (closed_) return;
    if (ec) {
      // EOF or reset. Without GOODBYE that is a lost primary.
      const bool lost = streaming_ && !goodbye_;
      closed_ = true;
      node_.session_ended(
          this,
          goodbye_ ? "primary said goodbye"
                   : fmt::format("connection {} ({})", ec == asio::error::eof ? "closed" : "reset",
                                 ec.message()),
          lost);
      return;
    }
    last_rx_ = Clock::now();
    const protocol::ByteSpan bytes(buf_.data(), n);
    if (!streaming_) {
      handshake_buf_.insert(handshake_buf_.end(), bytes.begin(), bytes.end());
      handle_handshake();
    } else {
      handle_stream(bytes);
    }
    // Contact with a primary: bytes of an accepted stream (or the hello that
    // opened it), not of a connection that never became one.
    if (streaming_) node_.last_contact = last_rx_;
    if (!closed_ && !refuse_) do_read();
  });
}

void PrimarySession::handle_handshake() {
  auto parsed = protocol::parse_hello(handshake_buf_);
  protocol::Reply reply;
  reply.last_committed_epoch = node_.state.committed_epoch();
  reply.committed_session_id = node_.state.session_id();
  if (!parsed.is_ok()) {
    reply.accept = false;
    reply.reason = parsed.status().message();
  } else if (!parsed->has_value()) {
    if (handshake_buf_.size() > 2 * protocol::kMaxHandshakeBody) {
      reply.accept = false;
      reply.reason = "handshake too long";
    } else {
      return;  // need more bytes
    }
  } else {
    const auto& [hello, used] = **parsed;
    protocol::LocalGeometry ours;
    ours.page_size = protocol::kPageSize;
    ours.word_size = protocol::kWordSize;
    ours.guest_page_count = node_.page_count();
    Status compat = protocol::check_hello_compatible(hello, ours);
    auto& current = node_.session;
    if (!compat.is_ok()) {
      reply.accept = false;
      reply.reason = compat.message();
    } else if (current && current.get() != this && !current->closed()) {
      reply.accept = false;
      reply.reason =
          fmt::format("another primary ({}) is connected to this backup", current->peer());
    } else {
      reply.accept = true;
      node_.state.set_session_id(hello.session_id);
      const protocol::Bytes rest(handshake_buf_.begin() + static_cast<long>(used),
                                 handshake_buf_.end());
      handshake_buf_.clear();
      streaming_ = true;
      reader_ = std::make_unique<protocol::CheckpointReader>(node_.page_count(), this);
      node_.log(fmt::format("primary {} connected (session {:016x}); our last committed epoch: {}",
                            peer_, hello.session_id, node_.state.committed_epoch()));
      send_message(protocol::encode_reply(reply));
      if (!rest.empty()) handle_stream(rest);
      return;
    }
  }
  node_.log(fmt::format("refused primary {}: {}", peer_, reply.reason));
  refuse_ = true;
  refusal_ = "refused: " + reply.reason;
  send_message(protocol::encode_reply(reply));
}

void PrimarySession::handle_stream(protocol::ByteSpan bytes) {
  Status st = reader_->feed(bytes);
  if (st.is_ok()) return;
  // Discard what is in flight; the image stays at the last committed epoch.
  node_.state.abort_stream();
  const std::string why =
      fmt::format("checkpoint discarded ({}); the image stays at epoch {}; the primary must resync",
                  st.message(), node_.state.committed_epoch());
  node_.log(why);
  send_message(protocol::encode_error(Status(st.code(), why)));
  refuse_ = true;  // close once the error is written
  refusal_ = why;
}

Status PrimarySession::on_begin(uint64_t epoch, uint32_t flags) {
  return node_.state.on_begin(epoch, flags);
}
protocol::MutablePageView PrimarySession::page_for(uint64_t pfn, bool needs_current) {
  return node_.state.page_for(pfn, needs_current);
}
Status PrimarySession::on_end(uint64_t epoch, uint32_t page_count) {
  const bool had_image = node_.state.has_committed();
  const bool consistent = node_.state.in_consistent_unit();
  ROMULUS_RETURN_IF_ERROR(node_.state.on_end(epoch, page_count));
  // ACK(E) means "the image is a state of the guest at epoch E": output of
  // epochs <= E may be released. Pre-copy rounds are not states, so they are
  // never acknowledged.
  if (consistent) send_message(protocol::encode_ack(epoch));
  if (!had_image && node_.state.has_committed()) {
    node_.log(fmt::format("initial sync complete: image consistent at epoch {}", epoch));
  }
  return Status::ok();
}

void BackupNode::Impl::do_accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || outcome) return;
    if (!ec) {
      auto s = std::make_shared<PrimarySession>(std::move(socket), *this);
      if (!session || session->closed()) {
        session = s;
        streams++;
      }
      s->start();
    }
    do_accept();
  });
}

void BackupNode::Impl::session_ended(PrimarySession* s, const std::string& why, bool lost_at_once) {
  if (session.get() != s) return;  // a refused extra connection
  const bool was_streaming = s->streaming();
  session.reset();
  // A connection that never completed its handshake changes nothing: above
  // all, it does not restart the wait for a lost primary to reconnect.
  if (!was_streaming) return;
  state.abort_stream();
  clean_shutdown = s->said_goodbye();
  stream_ended = Clock::now();
  if (clean_shutdown) {
    log("primary shut down cleanly (goodbye); not taking over. Waiting for a primary; "
        "`romulus failover` takes over by hand");
    return;
  }
  if (lost_at_once) {
    primary_lost(fmt::format("primary lost: {}", why));
  } else {
    log(fmt::format("stream ended: {}; waiting up to {} ms for the primary to reconnect", why,
                    config.failover_timeout.count()));
  }
}

void BackupNode::Impl::primary_lost(const std::string& why) {
  if (!state.has_committed()) {
    if (!waiting_logged) {
      log(
          fmt::format("{}, but this backup never completed an initial sync: its image is not a "
                      "state of the guest, so it will not take over. Waiting for a primary.",
                      why));
    }
    waiting_logged = true;
    return;
  }
  activate(why);
}

void BackupNode::Impl::activate(const std::string& reason) {
  if (outcome) return;
  if (session) {
    auto s = session;
    session.reset();
    s->close("taking over");
  }
  Activation a;
  a.epoch = state.committed_epoch();
  a.session_id = state.session_id();
  a.reason = reason;
  a.last_contact = last_contact;
  a.image = std::move(*state.take_committed());
  outcome.emplace(std::move(a));
  boost::system::error_code ec;
  acceptor.close(ec);
  watchdog.cancel();
  control.reset();
  io.stop();
}

void BackupNode::Impl::on_tick() {
  watchdog.expires_after(config.heartbeat);
  watchdog.async_wait([this](boost::system::error_code ec) {
    if (ec || outcome) return;
    if (session && session->streaming() && !session->closed()) {
      if (Clock::now() - session->last_tx() >= config.heartbeat) {
        session->send_message(protocol::encode_backup_heartbeat(now_ns()));
      }
      if (Clock::now() - session->last_rx() > config.failover_timeout) {
        const auto silent = ms_since(session->last_rx());
        auto s = session;
        s->close("silent");
        primary_lost(fmt::format("primary lost: silent for {} ms", silent));
      }
    } else if (session && !session->streaming() && !session->closed() &&
               Clock::now() - session->accepted_at() > handshake_timeout()) {
      // Connected but never completed a handshake (a corrupted hello, or not
      // a Romulus primary at all): it would hold the one primary slot, and
      // with it the takeover, forever.
      auto s = session;
      log(fmt::format("connection from {} sent no complete handshake within {} ms; closing it",
                      s->peer(), handshake_timeout().count()));
      s->close("no complete handshake");
    }
    if (!outcome && (!session || !session->streaming()) && stream_ended && !clean_shutdown &&
        Clock::now() - *stream_ended > config.failover_timeout) {
      primary_lost(fmt::format("primary lost: it did not reconnect within {} ms",
                               config.failover_timeout.count()));
      if (!outcome) stream_ended.reset();
    }
    on_tick();
  });
}

std::string BackupNode::Impl::status_json() {
  std::string st;
  if (session && session->streaming())
    st = state.has_committed() ? "protecting" : "syncing";
  else
    st = state.has_committed() ? "waiting for primary (image consistent)"
                               : "waiting for primary (no image yet)";
  return fmt::format(
      R"({{"ok":true,"role":"backup","state":"{}","peer":"{}","listen":"{}:{}",)"
      R"("last_committed_epoch":{},"image_consistent":{},"checkpoints_committed":{},)"
      R"("precopy_rounds_applied":{},"pages_applied":{},"streams":{},"failover_timeout_ms":{},)"
      R"("ms_since_contact":{}}})",
      json_escape(st), session ? json_escape(session->peer()) : "", config.listen_host,
      config.listen_port, state.committed_epoch(), state.has_committed() ? "true" : "false",
      state.checkpoints_committed(), state.rounds_applied(), state.pages_applied(), streams,
      config.failover_timeout.count(), ms_since(last_contact));
}

BackupNode::BackupNode(BackupConfig config, std::function<void(const std::string&)> log)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(log))) {}

BackupNode::~BackupNode() = default;

void BackupNode::request_stop() {
  asio::post(impl_->io, [im = impl_.get()] {
    if (!im->outcome) im->outcome.emplace(Status::aborted("stopped"));
    im->io.stop();
  });
}

std::string BackupNode::handle_control(const std::string& request) {
  auto& im = *impl_;
  if (request == "ping") return R"({"ok":true})";
  if (request == "status" || request == "status --json") return im.status_json();
  if (request == "failover") {
    if (!im.state.has_committed()) {
      return json_error(
          "refusing to take over: this backup never completed an initial sync, so "
          "its image is not a state of the guest");
    }
    const uint64_t epoch = im.state.committed_epoch();
    asio::post(im.io, [&im] { im.activate("manual failover"); });
    return fmt::format(R"({{"ok":true,"epoch":{}}})", epoch);
  }
  if (request.rfind("set ", 0) == 0) {
    return json_error("a backup has no run-time settings; set them on the primary");
  }
  return json_error(fmt::format("unknown request '{}'", request));
}

Result<Activation> BackupNode::run() {
  auto& im = *impl_;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(im.config.listen_host, ec);
  if (ec) {
    tcp::resolver resolver(im.io);
    auto results =
        resolver.resolve(im.config.listen_host, std::to_string(im.config.listen_port), ec);
    if (ec || results.empty()) {
      return Status::invalid_argument(fmt::format("cannot resolve --listen host '{}': {}",
                                                  im.config.listen_host, ec.message()));
    }
    addr = results.begin()->endpoint().address();
  }
  const tcp::endpoint ep(addr, im.config.listen_port);
  im.acceptor.open(ep.protocol(), ec);
  if (!ec) im.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) im.acceptor.bind(ep, ec);
  if (!ec) im.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::unavailable(fmt::format(
        "cannot listen on {}:{}: {}{}", im.config.listen_host, im.config.listen_port, ec.message(),
        ec == asio::error::address_in_use ? " (another process uses it; pick another --listen port)"
                                          : ""));
  }
  im.log(fmt::format("backup listening on {}:{} ({} MiB arena); waiting for a primary",
                     im.config.listen_host, im.config.listen_port, im.config.memory_bytes >> 20));
  if (!im.config.control_path.empty()) {
    im.control = std::make_unique<checkpoint::ControlServer>(
        im.io, im.config.control_path, [this](const std::string& r) { return handle_control(r); });
    Status cs = im.control->start();
    if (!cs.is_ok()) im.log(cs.message() + "; continuing without a control socket");
  }
  im.do_accept();
  im.on_tick();
  im.io.run();
  if (!im.outcome) return Status::aborted("stopped");
  return std::move(*im.outcome);
}

}  // namespace romulus::replica
