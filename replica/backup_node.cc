#include "replica/backup_node.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <future>
#include <set>

#include "common/asio.h"
#include "common/json.h"
#include "common/link_stream.h"
#include "common/net.h"
#include "protocol/backup_messages.h"
#include "protocol/checkpoint_reader.h"
#include "protocol/handshake.h"
#include "protocol/page.h"
#include "replica/backup_state.h"
#include "replica/connection_state.h"
#include "replica/durable_checkpoints.h"
#include "replica/failure_detector.h"
#include "replica/image_copy.h"
#include "replica/replica_state.h"
#include "storage/durable_image.h"
#include "storage/durable_writer.h"
#include "storage/file_system.h"
#include "storage/snapshot_file.h"

namespace romulus::replica {
namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using common::json_error;
using StreamEnd = FailureDetector::StreamEnd;
using Verdict = FailureDetector::Verdict;

namespace {

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

// How long a request from another thread (control socket, metrics) waits
// for the node's own thread to answer, and what it says when it does not.
constexpr std::chrono::seconds kAnswerWithin{2};
// The longest a snapshot's copy of the image may take (it advances a slice per
// turn of the node's event loop: seconds for gigabytes).
constexpr std::chrono::seconds kSnapshotCopyWithin{300};
std::string no_answer() {
  return fmt::format("the backup did not answer within {} s (busy or stopping)",
                     kAnswerWithin.count());
}

// The handshake timeout is half the failover timeout, but at least this
// (a hello over a slow link still arrives in time)...
constexpr std::chrono::milliseconds kHandshakeAtLeast{100};
// ...and at most this (a lost hello is noticed soon, the primary reconnects).
constexpr std::chrono::milliseconds kHandshakeAtMost{1000};
// While a takeover waits on its gate, "not taking over yet" is logged at
// most this often: the reason stays in view without flooding the log.
constexpr std::chrono::milliseconds kGateWaitLogEvery{500};

// The --memory value for an arena of `bytes` ("256M", "12K").
std::string memory_option(uint64_t bytes) {
  if (bytes != 0 && bytes % (1ull << 30) == 0) return fmt::format("{}G", bytes >> 30);
  if (bytes != 0 && bytes % (1ull << 20) == 0) return fmt::format("{}M", bytes >> 20);
  return fmt::format("{}K", bytes >> 10);
}

}  // namespace

std::string refuse_older_image(const Result<std::optional<TakeoverGate::ImageHolder>>& holder,
                               uint64_t own_epoch) {
  if (!holder.is_ok()) {
    return fmt::format(
        "refusing to start from this node's image by hand: the witness cannot say which node "
        "holds the newest durable image ({}); try again once it answers",
        holder.status().message());
  }
  if (!*holder || (*holder)->this_node) return "";
  const TakeoverGate::ImageHolder& h = **holder;
  return fmt::format(
      "refusing to start from this node's image (epoch {}) by hand: the witness records node {} "
      "as holding the newest durable image (from epoch {}), which has what this one lacks. "
      "Start node {} (it takes the pair over), or, if its disk is lost for good, delete the "
      "record (`etcdctl del {}`) to accept the loss and run `romulus failover` again",
      own_epoch, h.node, h.epoch, h.node, h.key);
}

// One connection: handshake, then (if accepted) the checkpoint stream. Its
// state is a ConnectionState (replica/connection_state.h, drawn there). One
// write is in flight exactly while the queue is not empty (Asio's chat
// server); everything runs on the node's thread.
class PrimarySession : public std::enable_shared_from_this<PrimarySession>,
                       public protocol::CheckpointSink {
 public:
  PrimarySession(tcp::socket socket, BackupNode::Impl& node);

  // TLS handshake (if any), then the protocol's handshake and stream.
  void start();
  // Closes the socket; `how` says why, for the failure detector.
  void close(StreamEnd how, const std::string& why);
  void send_message(protocol::Bytes bytes);
  bool closed() const { return state_.state() == ConnectionState::kClosed; }
  Clock::time_point last_tx() const { return last_tx_; }
  Clock::time_point accepted_at() const { return accepted_at_; }
  const std::string& peer() const { return peer_; }
  // Which accepted stream this is (BackupNode::Impl::streams when it started).
  uint64_t stream_no() const { return stream_no_; }
  // Reading stops while the durable image's writer is too far behind
  // (BackupNode::Impl::disk_backlogged()): TCP then holds the primary back,
  // so a disk slower than the stream costs throughput, not unbounded memory.
  bool read_paused() const { return read_paused_; }
  void resume_read() {
    if (!read_paused_) return;
    read_paused_ = false;
    if (reading()) do_read();
  }
  // Ends the stream with an ERROR that says why (the node's own failure).
  void fail_stream(const std::string& why) {
    end_with(protocol::encode_error(Status::unavailable(why)), StreamEnd::kEndedByBackup, why);
  }

  // CheckpointSink: pages go to the replica state; stream events to the node.
  Status on_begin(uint64_t epoch, uint32_t flags) override;
  protocol::MutablePageView page_for(uint64_t pfn, bool needs_current) override;
  Status on_end(uint64_t epoch, uint32_t page_count) override;
  Status on_device_state(protocol::ByteSpan state) override;
  void on_goodbye() override;
  void on_dropped() override;
  void on_handover() override;

 private:
  void do_read();
  void do_write();
  void handle_handshake();
  void handle_stream(protocol::ByteSpan bytes);
  // Sends `message` and closes once it is written (refusals, stream errors).
  void end_with(protocol::Bytes message, StreamEnd how, std::string why);
  // Whether reads go on (handshaking, streaming).
  bool reading() const;

  common::LinkStream stream_;
  BackupNode::Impl& node_;
  std::string peer_;
  std::array<uint8_t, 256 * 1024> buf_{};
  protocol::Bytes handshake_buf_;
  std::unique_ptr<protocol::CheckpointReader> reader_;
  std::deque<protocol::Bytes> out_;  // the front is being written
  common::StateMachine<ConnectionState> state_;
  // In kEnding: what close() says once the last message is written.
  StreamEnd end_how_ = StreamEnd::kEndedByBackup;
  std::string end_why_;
  Clock::time_point last_tx_ = Clock::now();
  bool read_paused_ = false;
  const Clock::time_point accepted_at_ = Clock::now();
  uint64_t stream_no_ = 0;
};

struct BackupNode::Impl {
  BackupConfig config;
  std::function<void(const std::string&)> log;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer watchdog{io};
  asio::steady_timer accept_backoff{io};
  ReplicaState replica;
  FailureDetector detector;
  common::StateMachine<BackupState> state;
  // The accepted stream (at most one) and connections still in their handshake.
  std::shared_ptr<PrimarySession> primary;
  std::set<std::shared_ptr<PrimarySession>> pending;
  bool loss_handled = false;  // this loss was acted on (taken over, or refused to)
  TakeoverGate* gate = nullptr;
  std::string takeover_reason;  // while waiting for the gate
  Clock::time_point next_wait_log{};
  bool overflow_logged = false, emfile_logged = false;
  std::optional<Result<Activation>> outcome;
  uint64_t streams = 0;
  std::string last_peer;
  // --data-dir: the writer of the durable image (nullptr: memory only), the
  // checkpoints whose ACK waits for it (--durable sync: stream, epoch), and
  // the write error that stopped it.
  std::unique_ptr<storage::DurableWriter> durable;
  std::deque<std::pair<uint64_t, uint64_t>> awaiting_disk;
  std::string durable_error;
  LagWarning lag_warning;
  // With a witness: the current stream's base (its first durable
  // checkpoint), and whether the witness records this node as the newest
  // image's holder from it (TakeoverGate::record_image); under sync no ACK
  // of the stream leaves before it does.
  uint64_t base_epoch = 0;
  bool base_recorded = true, record_asked = false;
  // The committed image is the one read back from --data-dir (no stream has
  // committed since).
  bool image_from_disk = false;
  // Pages waiting for the disk (in the writer's queue, or held for a base):
  // above --disk-backlog the primary's stream is not read until half of them
  // are written, so the memory a slow disk may take is bounded.
  uint64_t held_bytes = 0;  // pages in held_for_base
  bool backlog_logged = false;
  uint64_t disk_backlog() const {
    return durable && durable_error.empty() ? durable->queued_bytes() + held_bytes : 0;
  }
  bool disk_backlogged() const { return disk_backlog() > config.durable.max_backlog_bytes; }
  void note_read_paused();
  // Resumes the primary's stream once the backlog has halved (or the disk
  // failed: then nothing more is queued).
  void maybe_resume_read();
  // Copies of the committed image in progress (image_copy.h), a slice per
  // event-loop turn: a new durable base (the checkpoints after it wait in
  // held_for_base, in order, for the base to reach the writer first), and a
  // snapshot (its requester waits on snapshot_done).
  std::unique_ptr<ImageCopy> base_copy;
  std::vector<CheckpointPages> held_for_base;
  std::unique_ptr<ImageCopy> snapshot_copy;
  std::function<void(ImageCopy&)> snapshot_done;
  bool copy_step_posted = false;

  Impl(BackupConfig c, std::function<void(const std::string&)> l)
      : config(std::move(c)),
        log(std::move(l)),
        replica(config.memory_bytes / protocol::kPageSize, config.vm),
        detector(config.failover_timeout),
        state(BackupState::kNoImage, log) {
    replica.before_overwrite = [this](uint64_t pfn) {
      if (base_copy) base_copy->before_overwrite(pfn);
      if (snapshot_copy) snapshot_copy->before_overwrite(pfn);
    };
    replica.before_replace = [this] { finish_copies(); };
  }

  uint64_t page_count() const { return config.memory_bytes / protocol::kPageSize; }

  // How long an accepted connection may take to complete its handshake: a
  // primary sends its hello as soon as it connects, so this is short, and
  // well inside the failover timeout, so that a primary whose hello was lost
  // or damaged can reconnect before this backup gives up on it.
  std::chrono::milliseconds handshake_timeout() const {
    return std::clamp<std::chrono::milliseconds>(config.failover_timeout / 2, kHandshakeAtLeast,
                                                 kHandshakeAtMost);
  }

  void do_accept();
  void on_tick();
  // Session events.
  bool claim_primary_slot(PrimarySession* s, std::string* refusal);
  void stream_started(PrimarySession* s);
  void contact() { detector.on_contact(Clock::now()); }
  void goodbye();
  void dropped();
  void handover();
  void session_closed(PrimarySession* s, StreamEnd how, const std::string& why);
  void image_committed(uint64_t epoch, bool first);
  // The durable image (--data-dir).
  Status open_durable();
  bool acks_wait_for_disk() const {
    return durable && config.durable.mode == storage::DurableMode::kSync;
  }
  void write_to_disk(uint64_t epoch, bool whole_image);
  void await_disk(uint64_t stream_no, uint64_t epoch) {
    awaiting_disk.emplace_back(stream_no, epoch);
  }
  void on_disk(uint64_t durable_epoch);
  void image_recorded(uint64_t epoch);
  void disk_failed(const Status& why);
  // The copies' next slices, on the next turn of the event loop.
  void post_copy_step();
  void copy_step();
  void base_copied();
  void snapshot_copied();
  // Completes every copy now (the image is about to be replaced or handed over).
  void finish_copies();
  // Verdicts.
  // `exited`: the primary's process left evidence that it is gone (see
  // FailureDetector::Judgement::exited).
  void primary_lost(const std::string& why, bool exited);
  void try_takeover(const std::string& reason, bool exited = false);
  void poll_gate();
  void activate(const std::string& reason);
  BackupMetrics metrics() const;
};

PrimarySession::PrimarySession(tcp::socket socket, BackupNode::Impl& node)
    : stream_(common::LinkStream::make(std::move(socket), node.config.tls.get())),
      node_(node),
      state_(ConnectionState::kHandshaking, node.log) {
  boost::system::error_code ec;
  auto ep = stream_.socket().remote_endpoint(ec);
  peer_ = ec ? "?" : common::Endpoint{ep.address().to_string(), ep.port()}.to_string();
  stream_.socket().set_option(tcp::no_delay(true), ec);
}

void PrimarySession::start() {
  if (!stream_.tls()) return do_read();
  stream_.async_handshake(common::LinkStream::Side::kServer, [this, self = shared_from_this()](
                                                                 boost::system::error_code ec) {
    if (closed()) return;  // timed out (logged by the node)
    if (ec) {
      const std::string why = stream_.describe_failure(ec);
      node_.log(fmt::format("refused connection from {}: TLS: {}", peer_, why));
      close(StreamEnd::kEndedByBackup, "TLS refused: " + why);
      return;
    }
    do_read();
  });
}

bool PrimarySession::reading() const {
  const ConnectionState s = state_.state();
  return s == ConnectionState::kHandshaking || s == ConnectionState::kStreaming;
}

void PrimarySession::close(StreamEnd how, const std::string& why) {
  if (closed()) return;
  state_.transition(ConnectionState::kClosed);
  stream_.close();
  node_.session_closed(this, how, why);
}

void PrimarySession::send_message(protocol::Bytes bytes) {
  if (closed()) return;
  const bool idle = out_.empty();
  out_.push_back(std::move(bytes));
  if (idle) do_write();
}

void PrimarySession::end_with(protocol::Bytes message, StreamEnd how, std::string why) {
  if (closed()) return;
  state_.transition(ConnectionState::kEnding);
  end_how_ = how;
  end_why_ = std::move(why);
  send_message(std::move(message));
}

void PrimarySession::do_write() {
  last_tx_ = Clock::now();
  stream_.async_write(asio::buffer(out_.front()),
                      [this, self = shared_from_this()](boost::system::error_code ec, size_t) {
                        if (ec) {
                          out_.clear();  // undeliverable; the next message starts a write
                          return;        // the read side reports the loss
                        }
                        out_.pop_front();
                        if (state_.state() == ConnectionState::kEnding && out_.empty()) {
                          close(end_how_, end_why_);
                          return;
                        }
                        if (!out_.empty() && !closed()) do_write();
                      });
}

void PrimarySession::do_read() {
  stream_.async_read_some(asio::buffer(buf_), [this, self = shared_from_this()](
                                                  boost::system::error_code ec, size_t n) {
    if (closed()) return;
    if (ec) {
      if (reader_ && reader_->saw_goodbye()) {
        close(StreamEnd::kGoodbye, "primary said goodbye");
      } else if (reader_ && reader_->saw_dropped()) {
        close(StreamEnd::kDropped, "primary dropped this backup");
      } else if (reader_ && reader_->saw_handover()) {
        close(StreamEnd::kHandover, "primary handed the pair over");
      } else if (ec == asio::error::eof) {
        close(StreamEnd::kClosed, ec.message());
      } else if (ec == asio::error::connection_reset) {
        close(StreamEnd::kReset, ec.message());
      } else {
        close(StreamEnd::kSocketError, ec.message());
      }
      return;
    }
    const protocol::ByteSpan bytes(buf_.data(), n);
    if (state_.state() == ConnectionState::kHandshaking) {
      handshake_buf_.insert(handshake_buf_.end(), bytes.begin(), bytes.end());
      handle_handshake();
    } else {
      // Contact with a primary: bytes of an accepted stream, not of a
      // connection that never became one.
      node_.contact();
      handle_stream(bytes);
    }
    if (!reading()) return;
    if (node_.disk_backlogged()) {
      read_paused_ = true;  // BackupNode::Impl::on_disk() resumes
      node_.note_read_paused();
      return;
    }
    do_read();
  });
}

void PrimarySession::handle_handshake() {
  auto parsed = protocol::parse_hello(handshake_buf_);
  protocol::Reply reply;
  reply.last_committed_epoch = node_.replica.committed_epoch();
  reply.committed_session_id = node_.replica.session_id();
  if (!parsed.is_ok()) {
    reply.accept = false;
    reply.reason = parsed.status().message();
  } else if (!parsed->has_value()) {
    return;  // need more bytes (parse_hello bounds the header and body lengths)
  } else {
    const auto& [hello, used] = **parsed;
    protocol::LocalGeometry ours;
    ours.page_size = protocol::kPageSize;
    ours.word_size = protocol::kWordSize;
    ours.guest_page_count = node_.page_count();
    Status compat = protocol::check_hello_compatible(hello, ours);
    std::string busy;
    if (!compat.is_ok()) {
      reply.accept = false;
      reply.reason = compat.message();
      if (hello.page_size == ours.page_size && hello.guest_page_count != ours.guest_page_count &&
          hello.guest_page_count < (1ull << 40)) {
        reply.reason += fmt::format("; start the backup with --memory {}",
                                    memory_option(hello.guest_page_count * ours.page_size));
      }
    } else if (!node_.durable_error.empty() &&
               node_.config.durable.mode == storage::DurableMode::kSync) {
      reply.accept = false;
      reply.reason = node_.durable_error;
    } else if (!node_.claim_primary_slot(this, &busy)) {
      reply.accept = false;
      reply.reason = busy;
    } else {
      reply.accept = true;
      node_.replica.set_session_id(hello.session_id);
      const protocol::Bytes rest(handshake_buf_.begin() + static_cast<long>(used),
                                 handshake_buf_.end());
      handshake_buf_.clear();
      state_.transition(ConnectionState::kStreaming);
      // The Hello's codec list binds the stream: a payload of another codec is corrupt.
      reader_ =
          std::make_unique<protocol::CheckpointReader>(node_.page_count(), this, hello.codecs);
      const std::string tls =
          stream_.tls() ? fmt::format(", TLS verified: {}", stream_.peer_subject()) : "";
      node_.log(
          fmt::format("primary {} connected (session {:016x}{}); our last committed epoch: {}",
                      peer_, hello.session_id, tls, node_.replica.committed_epoch()));
      node_.stream_started(this);
      stream_no_ = node_.streams;
      send_message(protocol::encode_reply(reply));
      if (!rest.empty()) handle_stream(rest);
      return;
    }
  }
  node_.log(fmt::format("refused primary {}: {}", peer_, reply.reason));
  end_with(protocol::encode_reply(reply), StreamEnd::kEndedByBackup, "refused: " + reply.reason);
}

void PrimarySession::handle_stream(protocol::ByteSpan bytes) {
  Status st = reader_->feed(bytes);
  if (st.is_ok()) return;
  // Discard what is in flight; the image stays at the last committed epoch.
  node_.replica.abort_stream();
  const std::string why =
      fmt::format("checkpoint discarded ({}); the image stays at epoch {}; the primary must resync",
                  st.message(), node_.replica.committed_epoch());
  node_.log(why);
  end_with(protocol::encode_error(Status(st.code(), why)), StreamEnd::kEndedByBackup, why);
}

Status PrimarySession::on_begin(uint64_t epoch, uint32_t flags) {
  return node_.replica.on_begin(epoch, flags);
}
protocol::MutablePageView PrimarySession::page_for(uint64_t pfn, bool needs_current) {
  return node_.replica.page_for(pfn, needs_current);
}
Status PrimarySession::on_end(uint64_t epoch, uint32_t page_count) {
  const bool had_image = node_.replica.has_committed();
  const bool consistent = node_.replica.in_consistent_unit();
  // ACK(E) means "the image is a state of the guest at epoch E": output of
  // epochs <= E may be released. Pre-copy rounds are not states, so they are
  // never acknowledged. Remus's rule: the ack leaves as soon as the checkpoint
  // is complete and verified in memory (the reader has checked it whole), before
  // it is copied onto the image, so the copy is off the reply's path. Nothing
  // can see the image in between: the copy runs next, on this thread, before
  // any other event (a takeover included) is handled.
  // With --data-dir the checkpoint is also written to disk; under `--durable
  // sync` its ACK waits for that (DurableWriter's group commit: one fdatasync
  // for every checkpoint queued meanwhile), so an acknowledged reply survives
  // the loss of both nodes. The sync's first checkpoint replaces the image
  // whole, so it goes to disk as a new base image, after it is applied.
  const bool ack = consistent && node_.replica.ends_unit(epoch);
  const bool whole = node_.replica.unit_ends_sync();
  const bool ack_now = ack && !node_.acks_wait_for_disk();
  if (ack_now) send_message(protocol::encode_ack(epoch));
  if (ack && node_.durable && !whole) node_.write_to_disk(epoch, false);
  ROMULUS_RETURN_IF_ERROR(node_.replica.on_end(epoch, page_count));
  if (ack && node_.durable && whole) node_.write_to_disk(epoch, true);
  if (ack && !ack_now) node_.await_disk(stream_no_, epoch);
  if (ack) node_.image_committed(epoch, !had_image);
  return Status::ok();
}
Status PrimarySession::on_device_state(protocol::ByteSpan state) {
  return node_.replica.on_device_state(state);
}
void PrimarySession::on_goodbye() { node_.goodbye(); }
void PrimarySession::on_handover() { node_.handover(); }
void PrimarySession::on_dropped() { node_.dropped(); }

// ---- The node.

void BackupNode::Impl::do_accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || outcome || !acceptor.is_open()) return;
    if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec.value() == ENOMEM ||
        ec == asio::error::no_buffer_space) {
      // Out of descriptors: accepting again at once would spin. Pause.
      if (!emfile_logged) {
        log(fmt::format("cannot accept connections ({}); pausing accepts for {} ms", ec.message(),
                        kAcceptBackoff.count()));
        emfile_logged = true;
      }
      accept_backoff.expires_after(kAcceptBackoff);
      accept_backoff.async_wait([this](boost::system::error_code e) {
        if (!e) do_accept();
      });
      return;
    }
    emfile_logged = false;
    if (!ec) {
      if (pending.size() >= kMaxUnauthenticated) {
        if (!overflow_logged) {
          log(fmt::format(
              "more than {} connections without a completed handshake; closing new ones "
              "until they finish or time out",
              kMaxUnauthenticated));
          overflow_logged = true;
        }
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        overflow_logged = false;
        auto s = std::make_shared<PrimarySession>(std::move(socket), *this);
        pending.insert(s);
        s->start();
      }
    }
    do_accept();
  });
}

bool BackupNode::Impl::claim_primary_slot(PrimarySession* s, std::string* refusal) {
  if (primary && primary.get() != s && !primary->closed()) {
    *refusal = fmt::format("another primary ({}) is connected to this backup", primary->peer());
    return false;
  }
  if (outcome) {
    *refusal = "this backup has taken over";
    return false;
  }
  for (auto it = pending.begin(); it != pending.end(); ++it) {
    if (it->get() == s) {
      primary = *it;
      pending.erase(it);
      return true;
    }
  }
  return false;
}

void BackupNode::Impl::stream_started(PrimarySession* s) {
  if (state.state() == BackupState::kTakingOver && gate) {
    // The primary is back before this node won the pair: follow it again.
    gate->cancel();
    takeover_reason.clear();
    log("the primary is back: no longer trying to take over");
  }
  streams++;
  last_peer = s->peer();
  loss_handled = false;
  detector.on_stream_started(Clock::now());
  state.transition(BackupState::kSyncing);
}

void BackupNode::Impl::goodbye() {
  detector.on_goodbye(Clock::now());
  replica.abort_stream();
  state.transition(replica.has_committed() ? BackupState::kPrimaryStopped : BackupState::kNoImage);
  log("primary shut down cleanly (goodbye); not taking over. Waiting for a primary; "
      "`romulus failover` takes over by hand");
}

void BackupNode::Impl::handover() {
  const auto now = Clock::now();
  detector.on_handover(now);
  replica.abort_stream();
  state.transition(replica.has_committed() ? BackupState::kPrimarySilent : BackupState::kNoImage);
  const auto j = detector.judge(now);
  primary_lost("primary handed over: " + j.reason, j.exited);
}

void BackupNode::Impl::dropped() {
  detector.on_dropped(Clock::now());
  replica.abort_stream();
  state.transition(replica.has_committed() ? BackupState::kPrimarySilent : BackupState::kNoImage);
  log("the primary dropped this backup (it judged it lost) and runs on without it: not taking "
      "over (this image falls behind). Waiting for the primary to reconnect");
}

void BackupNode::Impl::image_committed(uint64_t epoch, bool first) {
  image_from_disk = false;
  if (first) log(fmt::format("initial sync complete: image consistent at epoch {}", epoch));
  if (state.state() == BackupState::kSyncing) state.transition(BackupState::kProtecting);
}

Status BackupNode::Impl::open_durable() {
  const storage::DurableSettings& d = config.durable;
  storage::DurableImage::Options options;
  options.force = d.force;
  ROMULUS_ASSIGN_OR_RETURN(
      auto image,
      storage::DurableImage::open(storage::posix_file_system(), d.data_dir,
                                  storage::ImageIdentity{page_count(), config.pair_id}, options));
  for (const std::string& note : image->recovery_notes()) {
    log(fmt::format("--data-dir {}: {}", d.data_dir, note));
  }
  const uint64_t epoch = image->epoch();
  if (epoch > 0) {
    ROMULUS_ASSIGN_OR_RETURN(auto memory,
                             common::SharedMemory::create("romulus-replica", config.memory_bytes));
    if (Status st = image->read_image(memory.data(), memory.size()); !st.is_ok()) {
      return st.context(fmt::format("reading the image in --data-dir {}", d.data_dir));
    }
    replica.adopt_committed(std::move(memory), epoch);
    image_from_disk = true;
    state.transition(BackupState::kPrimaryStopped);
    log(
        fmt::format("image read back from --data-dir {} at epoch {}: waiting for a primary; "
                    "`romulus failover` resumes the guest from it",
                    d.data_dir, epoch));
  } else {
    log(
        fmt::format("--data-dir {}: no image yet; every committed checkpoint is written there "
                    "(--durable {})",
                    d.data_dir, enum_name(storage::kDurableModeNames, d.mode)));
  }
  durable = std::make_unique<storage::DurableWriter>(
      std::move(image), [this](uint64_t e) { asio::post(io, [this, e] { on_disk(e); }); },
      [this](Status why) { asio::post(io, [this, why] { disk_failed(why); }); });
  return Status::ok();
}

void BackupNode::Impl::write_to_disk(uint64_t epoch, bool whole_image) {
  if (!durable_error.empty()) return;
  if (whole_image) {
    base_epoch = epoch;
    base_recorded = gate == nullptr;
    record_asked = false;
    // A new base: the whole image as of this epoch, copied a slice at a time
    // so that this thread stays responsive (heartbeats, acks).
    if (base_copy) {
      base_copy->finish();
      base_copied();
    }
    const common::SharedMemory& image = replica.committed_image();
    auto copy = ImageCopy::start(image.data(), image.size(), epoch);
    if (!copy.is_ok()) return disk_failed(copy.status());
    base_copy = std::move(copy).value();
    post_copy_step();
    return;
  }
  CheckpointPages c = copy_unit_pages(replica, epoch);
  if (base_copy) {
    held_bytes += c.pages.size();
    held_for_base.push_back(std::move(c));
  } else {
    durable->submit_checkpoint(c.epoch, std::move(c.pfns), std::move(c.pages));
  }
  if (config.durable.mode == storage::DurableMode::kAsync) {
    lag_warning.note(epoch, durable->durable_epoch(), config.durable, log);
  }
}

void BackupNode::Impl::post_copy_step() {
  if (copy_step_posted) return;
  copy_step_posted = true;
  asio::post(io, [this] { copy_step(); });
}

void BackupNode::Impl::copy_step() {
  copy_step_posted = false;
  if (base_copy && base_copy->step()) base_copied();
  if (snapshot_copy && snapshot_copy->step()) snapshot_copied();
  if ((base_copy || snapshot_copy) && !outcome) post_copy_step();
}

void BackupNode::Impl::base_copied() {
  auto copy = std::move(base_copy);
  held_bytes = 0;
  if (!durable || !durable_error.empty()) {
    held_for_base.clear();
    maybe_resume_read();
    return;
  }
  durable->submit_base(copy->epoch(), storage::ArenaView{copy->data(), copy->bytes()});
  for (CheckpointPages& c : held_for_base) {
    durable->submit_checkpoint(c.epoch, std::move(c.pfns), std::move(c.pages));
  }
  held_for_base.clear();
}

void BackupNode::Impl::snapshot_copied() {
  auto copy = std::move(snapshot_copy);
  auto done = std::move(snapshot_done);
  snapshot_done = nullptr;
  if (done) done(*copy);
}

void BackupNode::Impl::finish_copies() {
  if (base_copy) {
    base_copy->finish();
    base_copied();
  }
  if (snapshot_copy) {
    snapshot_copy->finish();
    snapshot_copied();
  }
}

void BackupNode::Impl::on_disk(uint64_t durable_epoch) {
  // Once the stream's base is on disk, this node's image is the pair's newest
  // durable one: the witness records it before anything of the stream is
  // acknowledged from this disk.
  uint64_t ackable = durable_epoch;
  if (!base_recorded && durable_epoch >= base_epoch) {
    if (!record_asked) {
      record_asked = true;
      gate->record_image(
          base_epoch, [this, e = base_epoch] { asio::post(io, [this, e] { image_recorded(e); }); });
    }
    ackable = base_epoch - 1;
  }
  // The newest checkpoint of the current stream that is now on disk: one ACK
  // covers it and every one before it (ACK(E) releases every epoch <= E).
  uint64_t ack = 0;
  while (!awaiting_disk.empty() && awaiting_disk.front().second <= ackable) {
    if (primary && !primary->closed() && awaiting_disk.front().first == primary->stream_no()) {
      ack = awaiting_disk.front().second;
    }
    awaiting_disk.pop_front();
  }
  if (ack != 0) primary->send_message(protocol::encode_ack(ack));
  maybe_resume_read();
}

void BackupNode::Impl::image_recorded(uint64_t epoch) {
  if (epoch != base_epoch || base_recorded) return;  // a newer base is being recorded
  base_recorded = true;
  if (durable) on_disk(durable->durable_epoch());
}

void BackupNode::Impl::note_read_paused() {
  if (backlog_logged) return;
  backlog_logged = true;
  log(fmt::format(
      "the durable image in --data-dir {} is {} MiB behind the stream: reading from the primary "
      "pauses until half of it is written (the primary is held back; is the disk slow?)",
      config.durable.data_dir, disk_backlog() >> 20));
}

void BackupNode::Impl::maybe_resume_read() {
  if (!primary || primary->closed() || !primary->read_paused()) return;
  if (disk_backlog() > config.durable.max_backlog_bytes / 2) return;
  if (backlog_logged) log("the durable image caught up: reading from the primary again");
  backlog_logged = false;
  primary->resume_read();
}

void BackupNode::Impl::disk_failed(const Status& why) {
  if (!durable_error.empty()) return;
  durable_error = disk_failure_text(config.durable, why, durable ? durable->durable_epoch() : 0);
  if (config.durable.mode == storage::DurableMode::kSync) {
    durable_error +=
        "; this backup acknowledges nothing until it is restarted with a working --data-dir";
    log(durable_error);
    awaiting_disk.clear();
    if (primary && !primary->closed()) {
      auto s = primary;
      s->fail_stream(durable_error);
    }
  } else {
    durable_error += "; the backup goes on in memory only (--durable async)";
    log(durable_error);
    maybe_resume_read();  // nothing is queued for the disk any more
  }
}

void BackupNode::Impl::session_closed(PrimarySession* s, StreamEnd how, const std::string& why) {
  if (primary.get() != s) {
    // A connection that never completed its handshake (or a refused one)
    // changes nothing: above all, it does not restart the wait for a lost
    // primary to reconnect.
    for (auto it = pending.begin(); it != pending.end(); ++it) {
      if (it->get() == s) {
        pending.erase(it);
        break;
      }
    }
    return;
  }
  auto keep = primary;  // s stays alive until this returns
  primary.reset();
  replica.abort_stream();
  const auto now = Clock::now();
  detector.on_stream_ended(how, now, why);
  if (how == StreamEnd::kGoodbye || how == StreamEnd::kDropped || how == StreamEnd::kHandover) {
    return;  // already handled
  }
  if (!replica.has_committed()) {
    state.transition(BackupState::kNoImage);
  } else {
    state.transition(BackupState::kPrimarySilent);
  }
  const auto j = detector.judge(now);
  if (j.verdict == Verdict::kWaiting) {
    log(fmt::format("stream ended: {}; waiting up to {} ms for the primary to reconnect", j.reason,
                    j.remaining.count()));
  } else if (j.verdict == Verdict::kLost) {
    primary_lost("primary lost: " + j.reason, j.exited);
  }
}

void BackupNode::Impl::primary_lost(const std::string& why, bool exited) {
  if (loss_handled || outcome) return;
  loss_handled = true;
  if (!durable_error.empty() && config.durable.mode == storage::DurableMode::kSync) {
    // Since its data directory failed this backup acknowledged nothing, so the
    // primary has run on unprotected, releasing output this image lacks:
    // taking over would lose it. Only an operator decides that.
    log(
        fmt::format("{}, but this backup stopped acknowledging when its --data-dir failed, and "
                    "the primary has run on without it since: not taking over "
                    "(`romulus failover` would resume from epoch {}, older than what clients "
                    "may have seen)",
                    why, replica.committed_epoch()));
    return;
  }
  if (!replica.has_committed()) {
    log(
        fmt::format("{}, but this backup never completed an initial sync: its image is not a "
                    "state of the guest, so it will not take over. Waiting for a primary.",
                    why));
    return;
  }
  try_takeover(why, exited);
}

void BackupNode::Impl::try_takeover(const std::string& reason, bool exited) {
  if (!gate) return activate(reason);
  if (!takeover_reason.empty()) return;  // already trying
  if (!state.transition(BackupState::kTakingOver)) return;
  takeover_reason = reason;
  log(fmt::format("{}: taking over once this node owns the pair in the witness", reason));
  gate->request(exited);
  next_wait_log = {};
  poll_gate();
}

void BackupNode::Impl::poll_gate() {
  if (!gate || takeover_reason.empty() || outcome) return;
  std::string detail;
  switch (gate->poll(&detail)) {
    case TakeoverGate::Verdict::kWon:
      activate(takeover_reason);
      return;
    case TakeoverGate::Verdict::kOtherOwner:
      log(fmt::format("not taking over: {}; waiting for it to connect to this backup", detail));
      takeover_reason.clear();
      state.transition(BackupState::kPrimarySilent);
      return;
    case TakeoverGate::Verdict::kWaiting:
      if (Clock::now() >= next_wait_log) {
        log(fmt::format("not taking over yet: {}", detail));
        next_wait_log = Clock::now() + kGateWaitLogEvery;
      }
      return;
  }
}

void BackupNode::Impl::activate(const std::string& reason) {
  if (outcome) return;
  if (!state.transition(BackupState::kTakingOver)) return;
  if (primary) {
    auto s = primary;
    s->close(StreamEnd::kEndedByBackup, "taking over");
  }
  for (auto s : std::set<std::shared_ptr<PrimarySession>>(pending)) {
    s->close(StreamEnd::kEndedByBackup, "taking over");
  }
  finish_copies();
  if (durable) {
    // Whatever was committed goes to disk before the image becomes the
    // guest's arena (under sync it is there already).
    durable->stop();
    durable.reset();
  }
  Activation a;
  a.epoch = replica.committed_epoch();
  a.session_id = replica.session_id();
  a.reason = reason;
  a.last_contact = detector.last_contact();
  a.device_state = replica.committed_device_state();
  a.image = std::move(*replica.take_committed());
  outcome.emplace(std::move(a));
  state.transition(BackupState::kServing);
  boost::system::error_code ec;
  acceptor.close(ec);
  watchdog.cancel();
  accept_backoff.cancel();
  io.stop();
}

void BackupNode::Impl::on_tick() {
  watchdog.expires_after(config.heartbeat);
  watchdog.async_wait([this](boost::system::error_code ec) {
    if (ec || outcome) return;
    const auto now = Clock::now();
    if (primary && !primary->closed() && now - primary->last_tx() >= config.heartbeat) {
      primary->send_message(protocol::encode_backup_heartbeat(now_ns()));
    }
    // Connected but never completed a handshake (a corrupted hello, or not a
    // Romulus primary at all): closed, so it cannot hold a slot forever.
    for (auto s : std::set<std::shared_ptr<PrimarySession>>(pending)) {
      if (!s->closed() && now - s->accepted_at() > handshake_timeout()) {
        log(fmt::format("connection from {} sent no complete handshake within {} ms; closing it",
                        s->peer(), handshake_timeout().count()));
        s->close(StreamEnd::kEndedByBackup, "no complete handshake");
      }
    }
    poll_gate();
    // Not reading (the disk is behind) is this node's doing, not the
    // primary's silence: no failover for it.
    if (primary && !primary->closed() && primary->read_paused()) {
      contact();
      maybe_resume_read();  // a safety net: on_disk() and disk_failed() resume it first
    }
    const auto j = detector.judge(now);
    if (j.verdict == Verdict::kLost) {
      if (primary && !primary->closed()) {
        auto s = primary;
        s->close(StreamEnd::kSilent, "silent");  // judges and acts
      } else {
        primary_lost("primary lost: " + j.reason, j.exited);
      }
    }
    on_tick();
  });
}

BackupMetrics BackupNode::Impl::metrics() const {
  const auto now = Clock::now();
  BackupMetrics m;
  m.state = state.state();
  m.peer = primary ? primary->peer() : "";
  m.last_peer = last_peer;
  m.listen = config.listen.to_string();
  m.last_committed_epoch = replica.committed_epoch();
  m.image_consistent = replica.has_committed();
  m.checkpoints_committed = replica.checkpoints_committed();
  m.precopy_rounds_applied = replica.rounds_applied();
  m.pages_applied = replica.pages_applied();
  m.streams = streams;
  m.connections_in_handshake = pending.size();
  m.failover_timeout = config.failover_timeout;
  if (detector.last_contact() != Clock::time_point{}) {
    m.since_contact =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - detector.last_contact());
  }
  m.detector = detector.judge(now);
  if (gate) m.witness = gate->report();
  if (config.durable.enabled()) {
    DurableReport r;
    r.data_dir = config.durable.data_dir;
    r.mode = std::string(enum_name(storage::kDurableModeNames, config.durable.mode));
    r.error = durable_error;
    if (durable) {
      const storage::DurableImage::Stats st = durable->stats();
      r.durable_epoch = durable->durable_epoch();
      r.submitted_epoch = durable->submitted_epoch();
      const storage::DurableWriter::Lag lag = durable->lag(now);
      r.lag_epochs = lag.epochs;
      r.lag = std::chrono::duration_cast<std::chrono::milliseconds>(lag.age);
      r.log_bytes = st.log_bytes;
      r.bytes_written = st.bytes_written;
      r.syncs = st.syncs;
      r.compactions = st.compactions;
    }
    m.durable = std::move(r);
  }
  return m;
}

BackupNode::BackupNode(BackupConfig config, std::function<void(const std::string&)> log)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(log))) {}

BackupNode::~BackupNode() {
  if (impl_->gate) {
    impl_->gate->set_wake(nullptr);
    impl_->gate->forget_image_record();
  }
}

void BackupNode::set_takeover_gate(TakeoverGate* gate) {
  impl_->gate = gate;
  if (!gate) return;
  // The witness's decision reaches the node at once, not at its next tick.
  gate->set_wake([im = impl_.get()] { asio::post(im->io, [im] { im->poll_gate(); }); });
}

void BackupNode::set_on_state_change(std::function<void(BackupState)> fn) {
  impl_->state.set_observer([fn = std::move(fn)](BackupState, BackupState to) { fn(to); });
}

void BackupNode::request_stop() {
  asio::post(impl_->io, [im = impl_.get()] {
    if (!im->outcome) im->outcome.emplace(Status::aborted("stopped"));
    im->io.stop();
  });
}

std::string BackupNode::take_snapshot(const std::string& path) {
  auto& im = *impl_;
  // A copy of the committed image, taken between two events of the node's
  // thread (the primary's guest never waits for it; acknowledgements wait for
  // the copy), then written here, on the control socket's thread.
  struct Copy {
    std::shared_ptr<const uint8_t> data;
    size_t bytes = 0;
    uint64_t epoch = 0;
    std::string error;
  };
  auto answer = std::make_shared<std::promise<Copy>>();
  auto result = answer->get_future();
  asio::post(im.io, [&im, answer] {
    Copy c;
    if (!im.replica.has_committed()) {
      c.error =
          "no snapshot: this backup holds no committed image yet (its initial sync has not "
          "completed)";
    } else if (im.snapshot_copy) {
      c.error = "a snapshot is being taken already; ask again when it is written";
    } else {
      const common::SharedMemory& image = im.replica.committed_image();
      auto copy = ImageCopy::start(image.data(), image.size(), im.replica.committed_epoch());
      if (!copy.is_ok()) {
        c.error = copy.status().message();
      } else {
        im.snapshot_copy = std::move(copy).value();
        im.snapshot_done = [answer](ImageCopy& done) {
          answer->set_value(Copy{done.data(), done.bytes(), done.epoch(), ""});
        };
        im.post_copy_step();
        return;
      }
    }
    answer->set_value(std::move(c));
  });
  if (result.wait_for(kSnapshotCopyWithin) != std::future_status::ready) {
    return json_error(no_answer());
  }
  Copy c;
  try {
    c = result.get();
  } catch (const std::future_error&) {  // the node stopped with the copy in progress
    return json_error("the backup stopped before its snapshot was copied; ask again");
  }
  if (!c.error.empty()) return json_error(c.error);
  const auto started = Clock::now();
  storage::SnapshotInfo info;
  info.page_count = im.page_count();
  info.epoch = c.epoch;
  info.pair_id = im.config.pair_id;
  if (Status st =
          storage::write_snapshot(storage::posix_file_system(), path, info, c.data.get(), c.bytes);
      !st.is_ok()) {
    return json_error(fmt::format("snapshot {}: {}", path, st.message()));
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  im.log(fmt::format("snapshot of epoch {} written to {} in {} ms", c.epoch, path, ms));
  json::object o;
  o["epoch"] = c.epoch;
  o["file"] = path;
  o["write_ms"] = ms;
  return common::json_ok(std::move(o));
}

std::string BackupNode::handle_control(const std::string& request) {
  auto& im = *impl_;
  if (request.rfind("snapshot ", 0) == 0) return take_snapshot(request.substr(9));
  // A takeover by hand from an image read back from disk asks the witness
  // first (here: its call may take longer than the node's thread may wait).
  std::optional<Result<std::optional<TakeoverGate::ImageHolder>>> holder;
  if (request == "failover" && im.gate && im.config.durable.enabled()) {
    holder = im.gate->image_holder();
  }
  // Everything below reads or changes the node's state: on its own thread.
  auto answer = std::make_shared<std::promise<std::string>>();
  auto result = answer->get_future();
  asio::post(im.io, [&im, request, answer, holder = std::move(holder)] {
    if (request == "status" || request == "status --json") {
      json::object o;
      write_backup_status(im.metrics(), o);
      answer->set_value(common::json_ok(std::move(o)));
    } else if (request == "failover") {
      if (!im.replica.has_committed()) {
        answer->set_value(
            json_error("refusing to take over: this backup never completed an initial sync, so "
                       "its image is not a state of the guest"));
        return;
      }
      if (im.image_from_disk && holder) {
        if (std::string why = refuse_older_image(*holder, im.replica.committed_epoch());
            !why.empty()) {
          answer->set_value(json_error(why));
          return;
        }
      }
      json::object o;
      o["epoch"] = im.replica.committed_epoch();
      answer->set_value(common::json_ok(std::move(o)));
      asio::post(im.io, [&im] { im.try_takeover("manual failover"); });
    } else if (request.rfind("set ", 0) == 0) {
      answer->set_value(json_error("a backup has no run-time settings; set them on the primary"));
    } else {
      answer->set_value(json_error(fmt::format("unknown request '{}'", request)));
    }
  });
  if (result.wait_for(kAnswerWithin) != std::future_status::ready) return json_error(no_answer());
  return result.get();
}

Result<BackupMetrics> BackupNode::metrics() {
  auto& im = *impl_;
  auto answer = std::make_shared<std::promise<BackupMetrics>>();
  auto result = answer->get_future();
  asio::post(im.io, [&im, answer] { answer->set_value(im.metrics()); });
  if (result.wait_for(kAnswerWithin) != std::future_status::ready) {
    return Status::unavailable(no_answer());
  }
  return result.get();
}

Result<Activation> BackupNode::run() {
  auto& im = *impl_;
  if (im.config.durable.enabled()) ROMULUS_RETURN_IF_ERROR(im.open_durable());
  ROMULUS_RETURN_IF_ERROR(common::listen_tcp(im.acceptor, im.config.listen, "--listen"));
  im.log(fmt::format("backup listening on {} ({} MiB arena); waiting for a primary",
                     im.config.listen.to_string(), im.config.memory_bytes >> 20));
  im.do_accept();
  im.on_tick();
  im.io.run();
  if (!im.outcome) return Status::aborted("stopped");
  return std::move(*im.outcome);
}

}  // namespace romulus::replica
