// romulus-kvload: load generator and lost-write checker for romulus-kvstore.
//
//   romulus-kvload --server HOST:PORT [--server HOST:PORT ...] [--connections 8]
//                  [--pipeline 1] [--seconds S | --ops N] [--mix set=50,get=40,incr=10] [--keys
//                  1000]
//                  [--value-size 32] [--check] [--reconnect-timeout 30s]
//                  [--request-timeout 10s] [--seed N] [--json] [--quiet]
//                  [--protocol text|resp [--wait each|batch|none]]
//
// N connections run closed-loop (one request, wait for its reply, next) for S
// seconds or N operations in all, then report throughput and latency. With
// --pipeline P each connection writes P requests at once and waits for their P
// replies before the next batch (like a pipelining Redis client); a request's
// latency is from its batch's write to its own reply. With
// --json the final report is one JSON line on stdout:
//
//   {"ops":..,"ops_per_sec":..,"p50_ms":..,"p99_ms":..,"max_ms":..,"errors":..,
//    "reconnects":..,"check":{"acked_writes":..,"acked_lost":..,"unacked_found":..,
//    "unacked_writes":..,"keys_checked":..,"corrupt":..,"writes_lost":..,
//    "earliest_lost_ack_ns":..}}
//
// ("check" only with --check.) Progress goes to stderr once a second unless --quiet.
//
// --protocol resp speaks Redis (RESP2) instead of the kvstore's line protocol,
// so the same load runs against Redis with a replica (bench/e2e): SET, GET and
// INCR as RESP arrays, and after writes `WAIT 1 0` (block until one replica has
// the write). --wait each: every write (SET, INCR) is followed by its own WAIT
// and counts as an operation when that WAIT returns at least 1 (a write
// acknowledged by a replica); --pipeline P then sends P such pairs at once.
// --wait batch: the P operations of a batch, then one WAIT for all of them
// (what a pipelining Redis user would do). --wait none: no WAIT (asynchronous
// replication; a write counts when the primary says OK). A WAIT that returns 0
// counts its writes as errors and unacknowledged. Latency of a write is from
// the batch's write to its WAIT's reply. --check is text-protocol only.
// Replies are parsed as hostile input (resp_reply.h): a malformed reply is one
// line on stderr and a broken connection (reconnect), never a crash.
//
// Failover: when a connection breaks (reset, EOF, refused, or no reply within
// --request-timeout) it tries the servers in the order given, round robin, 50 ms
// apart, until --reconnect-timeout. The requests in flight then (those of the
// batch not yet answered) were never acknowledged: a write counts in
// "unacked_writes", not as an error.
//
// Check mode (--check): connection c owns keys c<c>:k<i> and counters c<c>:n<i>
// (i < keys/connections), so no two connections race. It first deletes them
// (so earlier runs do not matter; pipelined, like the final read-back), then SETs c<c>:k<i> to
// "<c>:<i>:<seq>" with a per-key increasing seq (padded with ":xxx..." to --value-size), INCRs
// c<c>:n<i>, and GETs. It records the highest seq acknowledged with OK and the
// highest seq sent, and for counters the INCRs acknowledged and sent. At the end
// it reads every key back:
//   stored < acknowledged             -> an acknowledged write was lost (failure)
//   acknowledged < stored <= sent     -> an unacknowledged write was found (fine)
//   stored > sent, or a garbage value -> corrupt (failure)
// The GET replies and INCR results of the run itself are judged the same way
// (a reply is released only once its state is committed, so it may never show
// less than what was acknowledged before it was sent); this catches a loss that
// later writes would hide. Counts are per key: a key is lost or corrupt at most
// once; unacked_found is counted at the final read-back only. For a lost key
// it also counts the acknowledged writes lost (writes_lost: of the key's last
// 1,024 acknowledgements, those above what it showed) and notes when the
// earliest of them was acknowledged: earliest_lost_ack_ns, on the
// CLOCK_MONOTONIC clock (Python's time.monotonic_ns()), -1 if nothing was
// lost, 0 if it was acknowledged before what a key remembers. Under
// `--durable async` a test compares it with the lag the backup reported. Exit status: 0 when the
// run completed with nothing lost or corrupt, 1 otherwise, 2 on bad options.
//
// Threads: one. Every connection is a small state machine on the io_context of
// main(); the shared totals are touched only from that thread.
#include <signal.h>

#include <fmt/format.h>
#include <algorithm>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>,
// which g++ 12 rejects in C++20 mode, so <utility> comes before it.
#include <utility>
// (a separate include block, so that clang-format keeps this order)
#include <boost/asio.hpp>

#include "examples/kvload/resp_reply.h"

namespace {

using romulus::kvload::append_resp_command;
using romulus::kvload::parse_resp_reply;
using romulus::kvload::RespParse;
using romulus::kvload::RespReply;
using romulus::kvload::RespType;

namespace asio = boost::asio;
namespace po = boost::program_options;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

constexpr Millis kBackoff{50};
constexpr Millis kConnectTimeout{1000};
// Prepare and verify requests pipelined in one write.
constexpr size_t kSweepBatch = 512;
// Longer than any valid reply ("VALUE " + 64 KiB): a server sending more is broken.
constexpr size_t kMaxReplyBytes = 128 * 1024;

struct Mix {
  unsigned set = 50, get = 40, incr = 10;
};

enum class Protocol { kText, kResp };
enum class WaitMode { kEach, kBatch, kNone };  // --protocol resp: when to send WAIT 1 0

struct Options {
  std::vector<std::string> servers;
  Protocol protocol = Protocol::kText;
  WaitMode wait = WaitMode::kEach;
  unsigned connections = 8;
  unsigned pipeline = 1;  // load requests in flight per connection
  double seconds = 0;     // 0: not a timed run
  uint64_t ops = 0;       // 0: not a counted run
  Mix mix;
  uint64_t keys = 1000;
  size_t value_size = 32;
  bool check = false;
  Millis reconnect_timeout{30000};
  Millis request_timeout{10000};
  uint64_t seed = 0;
  bool json = false;
  bool quiet = false;
};

// "30s", "500ms", "2m", "1.5s" or a bare number of seconds.
std::optional<Millis> parse_duration(std::string_view text) {
  double scale = 1000;
  if (text.ends_with("ms")) {
    scale = 1, text.remove_suffix(2);
  } else if (text.ends_with("s")) {
    text.remove_suffix(1);
  } else if (text.ends_with("m")) {
    scale = 60000, text.remove_suffix(1);
  }
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < 0) {
    return std::nullopt;
  }
  return Millis(static_cast<int64_t>(v * scale));
}

// "set=50,get=40,incr=10"; kinds left out get weight 0.
std::optional<Mix> parse_mix(std::string_view text) {
  Mix mix{0, 0, 0};
  while (!text.empty()) {
    std::string_view item = text.substr(0, text.find(','));
    text.remove_prefix(std::min(text.size(), item.size() + 1));
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    std::string_view name = item.substr(0, eq), num = item.substr(eq + 1);
    unsigned v = 0;
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (num.empty() || ec != std::errc() || end != num.data() + num.size()) return std::nullopt;
    if (name == "set") {
      mix.set = v;
    } else if (name == "get") {
      mix.get = v;
    } else if (name == "incr") {
      mix.incr = v;
    } else {
      return std::nullopt;
    }
  }
  if (mix.set + mix.get + mix.incr == 0) return std::nullopt;
  return mix;
}

// The check-mode value of key c<c>:k<i> at seq, padded to value_size.
std::string check_value(unsigned c, uint64_t i, uint64_t seq, size_t value_size) {
  std::string v = fmt::format("{}:{}:{}", c, i, seq);
  if (v.size() + 1 < value_size) {
    v.push_back(':');
    v.append(value_size - v.size(), 'x');
  }
  return v;
}

// Parses a value written by check_value for (c, i); nullopt if it is anything else.
std::optional<uint64_t> parse_check_value(std::string_view v, unsigned c, uint64_t i) {
  std::string prefix = fmt::format("{}:{}:", c, i);
  if (!v.starts_with(prefix)) return std::nullopt;
  v.remove_prefix(prefix.size());
  uint64_t seq = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), seq);
  if (ec != std::errc() || end == v.data()) return std::nullopt;
  std::string_view pad(end, v.data() + v.size() - end);
  if (!pad.empty()) {
    if (pad[0] != ':' || pad.find_first_not_of('x', 1) != std::string_view::npos) {
      return std::nullopt;
    }
  }
  return seq;
}

std::optional<int64_t> parse_int(std::string_view v) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

struct CheckTotals {
  uint64_t acked_writes = 0;
  uint64_t acked_lost = 0;
  // Of the lost keys (acked_lost), the acknowledged writes they lost, and
  // when the earliest of those was acknowledged (steady_clock, the clock of
  // CLOCK_MONOTONIC; {} when none was lost, or when it is older than the
  // acknowledgements a key remembers).
  uint64_t writes_lost = 0;
  std::optional<std::chrono::steady_clock::time_point> earliest_lost_ack;
  uint64_t unacked_found = 0;
  uint64_t keys_checked = 0;
  uint64_t corrupt = 0;
};

// Everything the connections add up; io thread only.
struct Totals {
  uint64_t ops = 0;  // acknowledged requests of the load phase
  uint64_t errors = 0;
  uint64_t reconnects = 0;
  uint64_t unacked_writes = 0;
  uint64_t failed_connections = 0;  // gave up after --reconnect-timeout
  uint64_t bad_replies = 0;         // malformed RESP replies (each broke its connection)
  std::vector<uint32_t> latencies_us;
  CheckTotals check;
  std::vector<std::string> problems;  // the first few lost/corrupt keys, for stderr
};

// The run's shared clock: when the load phase began and whether it is over.
struct RunState {
  const Options& options;
  Totals totals;
  std::optional<Clock::time_point> load_start;
  std::optional<Clock::time_point> load_end;  // the last connection's end of load
  Clock::time_point last_load_reply;          // for a run where every connection gave up
  uint64_t ops_claimed = 0;
  bool stop_requested = false;  // SIGINT/SIGTERM
  unsigned connections_done = 0;

  explicit RunState(const Options& o) : options(o) {}

  // Called by a connection before each load operation; false once the run's
  // time or operation budget is spent.
  bool claim_op() {
    auto now = Clock::now();
    if (!load_start) load_start = now;
    if (load_over(now)) return false;
    ++ops_claimed;
    return true;
  }

  bool load_over(Clock::time_point now) const {
    if (stop_requested) return true;
    if (options.ops > 0) return ops_claimed >= options.ops;
    return load_start && now - *load_start >= std::chrono::duration<double>(options.seconds);
  }

  void add_problem(std::string text) {
    if (totals.problems.size() < 20) totals.problems.push_back(std::move(text));
  }
};

class Connection {
 public:
  Connection(asio::io_context& io, RunState& run, const std::vector<tcp::endpoint>& servers,
             unsigned id, std::function<void()> on_done)
      : run_(run),
        servers_(servers),
        id_(id),
        socket_(io),
        timer_(io),
        reply_(kMaxReplyBytes),
        rng_(run.options.seed * 1000003 + id),
        on_done_(std::move(on_done)) {
    keys_ = run.options.check ? std::max<uint64_t>(1, run.options.keys / run.options.connections)
                              : std::max<uint64_t>(1, run.options.keys);
    if (run.options.check) keys_state_.resize(keys_);
  }

  void start() {
    phase_ = run_.options.check ? Phase::kPrepare : Phase::kLoad;
    connect_deadline_ = Clock::now() + run_.options.reconnect_timeout;
    attempt_connect();
  }

 private:
  enum class Phase { kPrepare, kLoad, kVerify, kDone };
  enum class Kind { kSet, kGet, kIncr, kDel, kWait };

  // Per owned key in check mode.
  struct KeyState {
    uint64_t seq_sent = 0, seq_acked = 0;    // c<c>:k<i>
    uint64_t incr_sent = 0, incr_acked = 0;  // c<c>:n<i>
    bool lost[2] = {false, false};           // [0] c<c>:k<i>, [1] c<c>:n<i>
    bool corrupt[2] = {false, false};
    // The last kAcksKept acknowledgements (value acknowledged, when), to
    // tell when a lost write was acknowledged.
    std::deque<std::pair<uint64_t, Clock::time_point>> acks[2];
  };
  static constexpr size_t kAcksKept = 1024;
  void note_ack(KeyState& k, int which, uint64_t value) {
    auto& acks = k.acks[which];
    acks.emplace_back(value, Clock::now());
    if (acks.size() > kAcksKept) acks.pop_front();
  }

  // What the request in flight was, to judge its reply.
  struct Request {
    Kind kind = Kind::kGet;
    uint64_t index = 0;    // key index i
    bool counter = false;  // c<c>:n<i> rather than c<c>:k<i>
    uint64_t seq = 0;      // SET: the seq written
  };

  // --- connecting -----------------------------------------------------------

  void attempt_connect() {
    if (phase_ == Phase::kLoad && !run_.options.check && run_.load_over(Clock::now())) {
      return finish();  // nothing left to do that needs a server
    }
    if (Clock::now() >= connect_deadline_) return give_up();
    const tcp::endpoint& endpoint = servers_[server_index_ % servers_.size()];
    boost::system::error_code ignored;
    socket_.close(ignored);
    uint64_t op = ++op_id_;
    arm_timer(op, std::min<Clock::duration>(kConnectTimeout, connect_deadline_ - Clock::now()));
    socket_.async_connect(endpoint, [this, op](boost::system::error_code ec) {
      if (op != op_id_) return;  // timed out; the timer already moved on
      ++op_id_;
      timer_.cancel();
      if (ec) return retry_connect();
      boost::system::error_code ignored;
      socket_.set_option(tcp::no_delay(true), ignored);
      if (ever_connected_) ++run_.totals.reconnects;
      ever_connected_ = true;
      reply_.consume(reply_.size());
      next_request();
    });
  }

  void retry_connect() {
    ++server_index_;
    timer_.expires_after(kBackoff);
    uint64_t op = ++op_id_;
    timer_.async_wait([this, op](boost::system::error_code ec) {
      if (!ec && op == op_id_) attempt_connect();
    });
  }

  // The connection broke (error, EOF, timeout): the request in flight stays
  // unacknowledged; reconnect and carry on.
  void on_break() {
    if (in_flight_ && phase_ == Phase::kLoad) {
      for (size_t i = replies_; i < batch_.size(); ++i) {
        if (batch_[i].kind == Kind::kSet || batch_[i].kind == Kind::kIncr ||
            batch_[i].kind == Kind::kDel) {
          ++run_.totals.unacked_writes;
        }
      }
      run_.totals.unacked_writes += awaiting_wait_;  // OK from the primary, no WAIT yet
      awaiting_wait_ = 0;
    }
    in_flight_ = false;
    boost::system::error_code ignored;
    socket_.close(ignored);
    connect_deadline_ = Clock::now() + run_.options.reconnect_timeout;
    retry_connect();
  }

  void give_up() {
    ++run_.totals.failed_connections;
    if (!run_.options.quiet) {
      std::fprintf(stderr,
                   "kvload: connection %u: no server answered within the reconnect timeout\n", id_);
    }
    finish();
  }

  void finish() {
    phase_ = Phase::kDone;
    boost::system::error_code ignored;
    socket_.close(ignored);
    ++op_id_;
    timer_.cancel();
    on_done_();
  }

  // Arms the one deadline timer for operation `op`: if op is still the
  // current one when it fires, the socket is closed and the connection breaks.
  void arm_timer(uint64_t op, Clock::duration after) {
    timer_.expires_after(after);
    timer_.async_wait([this, op](boost::system::error_code ec) {
      if (ec || op != op_id_) return;
      ++op_id_;  // the operation's own completion (operation_aborted) is now stale
      if (phase_ == Phase::kDone) return;
      if (in_flight_ || socket_.is_open()) {
        boost::system::error_code ignored;
        socket_.close(ignored);
      }
      if (connecting()) return retry_connect();
      on_break();
    });
  }

  bool connecting() const { return !in_flight_; }

  // --- requests -------------------------------------------------------------

  void next_request() {
    switch (phase_) {
      case Phase::kPrepare:
        if (step_ < 2 * keys_) return send_sweep(Kind::kDel);
        phase_ = Phase::kLoad;
        step_ = 0;
        return next_request();
      case Phase::kLoad: {
        std::vector<Request> batch;
        std::string lines;
        for (unsigned n = 0; n < run_.options.pipeline && run_.claim_op(); ++n) {
          add_load_op(batch, lines);
        }
        // --wait batch: one WAIT after the batch covers every write in it.
        if (resp() && run_.options.wait == WaitMode::kBatch &&
            std::any_of(batch.begin(), batch.end(),
                        [](const Request& r) { return r.kind != Kind::kGet; })) {
          add_wait(batch, lines);
        }
        if (batch.empty()) {
          run_.load_end = std::max(run_.load_end.value_or(Clock::time_point()), Clock::now());
          if (!run_.options.check) return finish();
          phase_ = Phase::kVerify;
          step_ = 0;
          return next_request();
        }
        return send(std::move(batch), std::move(lines));
      }
      case Phase::kVerify:
        if (step_ < 2 * keys_) return send_sweep(Kind::kGet);
        return finish();
      case Phase::kDone:
        return;
    }
  }

  std::string key_name(const Request& r) const {
    if (run_.options.check) return fmt::format("c{}:{}{}", id_, r.counter ? 'n' : 'k', r.index);
    return fmt::format("{}{}", r.counter ? "ctr" : "key", r.index);
  }

  // Appends one load operation of the mix to a batch.
  void add_load_op(std::vector<Request>& batch, std::string& lines) {
    const Mix& mix = run_.options.mix;
    unsigned pick =
        std::uniform_int_distribution<unsigned>(0, mix.set + mix.get + mix.incr - 1)(rng_);
    Request r;
    r.index = std::uniform_int_distribution<uint64_t>(0, keys_ - 1)(rng_);
    if (pick < mix.set) {
      r.kind = Kind::kSet;
      std::string value;
      if (run_.options.check) {
        r.seq = ++keys_state_[r.index].seq_sent;
        value = check_value(id_, r.index, r.seq, run_.options.value_size);
      } else {
        value.resize(std::max<size_t>(1, run_.options.value_size));
        for (char& ch : value) ch = static_cast<char>('a' + rng_() % 26);
      }
      if (resp()) {
        append_resp_command(lines, {"SET", key_name(r), value});
      } else {
        lines += "SET " + key_name(r) + " " + value + "\n";
      }
      batch.push_back(r);
      if (resp() && run_.options.wait == WaitMode::kEach) add_wait(batch, lines);
      return;
    }
    if (pick < mix.set + mix.get) {
      r.kind = Kind::kGet;
      r.counter = run_.options.check && rng_() % 2 == 1;
      if (resp()) {
        append_resp_command(lines, {"GET", key_name(r)});
      } else {
        lines += "GET " + key_name(r) + "\n";
      }
      batch.push_back(r);
      return;
    }
    r.kind = Kind::kIncr;
    r.counter = true;
    if (run_.options.check) ++keys_state_[r.index].incr_sent;
    if (resp()) {
      append_resp_command(lines, {"INCR", key_name(r)});
    } else {
      lines += "INCR " + key_name(r) + "\n";
    }
    batch.push_back(r);
    if (resp() && run_.options.wait == WaitMode::kEach) add_wait(batch, lines);
  }

  bool resp() const { return run_.options.protocol == Protocol::kResp; }

  // WAIT 1 0: block until one replica has every write sent before it.
  void add_wait(std::vector<Request>& batch, std::string& lines) {
    append_resp_command(lines, {"WAIT", "1", "0"});
    Request w;
    w.kind = Kind::kWait;
    batch.push_back(w);
  }

  // Prepare (DEL) and verify (GET) go over every owned key, k<i> and n<i>
  // interleaved, from step_ on: pipelined in batches, so they take a few
  // round trips (each one is an epoch behind an output-commit proxy), not
  // 2 * keys of them. A batch cut off by a failover resumes at its first
  // unanswered request.
  void send_sweep(Kind kind) {
    std::vector<Request> batch;
    std::string lines;
    for (uint64_t s = step_; s < 2 * keys_ && batch.size() < kSweepBatch; ++s) {
      Request r{kind, s / 2, s % 2 == 1, 0};
      lines += (kind == Kind::kDel ? "DEL " : "GET ") + key_name(r) + "\n";
      batch.push_back(r);
    }
    send(std::move(batch), std::move(lines));
  }

  // Sends `lines` (one request per entry of batch, '\n'-terminated) in one
  // write and reads the replies as they come, alongside the write (a server
  // that stops reading while its replies queue up cannot deadlock us).
  // The request timeout covers the whole batch.
  void send(std::vector<Request> batch, std::string lines) {
    batch_ = std::move(batch);
    replies_ = 0;
    out_ = std::move(lines);
    in_flight_ = true;
    writing_ = true;
    awaiting_wait_ = 0;
    sent_at_ = Clock::now();
    uint64_t op = ++op_id_;
    arm_timer(op, run_.options.request_timeout);
    asio::async_write(socket_, asio::buffer(out_),
                      [this, op](boost::system::error_code ec, size_t) {
                        if (op != op_id_) return;
                        writing_ = false;
                        if (ec) return fail();
                        if (replies_ == batch_.size()) complete();
                      });
    read_reply(op);
  }

  void read_reply(uint64_t op) {
    if (resp()) return read_resp_reply(op);
    asio::async_read_until(
        socket_, reply_, '\n', [this, op](boost::system::error_code ec, size_t n) {
          if (op != op_id_) return;
          if (ec) return fail();
          std::string line(asio::buffers_begin(reply_.data()),
                           asio::buffers_begin(reply_.data()) + static_cast<std::ptrdiff_t>(n) - 1);
          reply_.consume(n);
          if (!line.empty() && line.back() == '\r') line.pop_back();
          on_reply(batch_[replies_], line);
          if (++replies_ < batch_.size()) return read_reply(op);
          if (!writing_) complete();
        });
  }

  // RESP: dispatches every complete reply buffered, then reads more. A
  // malformed reply (hostile or broken server) breaks the connection.
  void read_resp_reply(uint64_t op) {
    for (;;) {
      auto data = reply_.data();
      std::string_view in(static_cast<const char*>(data.data()), data.size());
      RespParse p = parse_resp_reply(in, kMaxReplyBytes);
      if (p.outcome == RespParse::Outcome::kBad) {
        ++run_.totals.errors;
        // Logged even with --quiet (the first few): the server is broken or hostile.
        if (++run_.totals.bad_replies <= 5) {
          std::fprintf(stderr, "kvload: connection %u: bad RESP reply (%.*s); reconnecting\n", id_,
                       static_cast<int>(p.error.size()), p.error.data());
        }
        return fail();
      }
      if (p.outcome == RespParse::Outcome::kNeedMore) break;
      on_resp_reply(batch_[replies_], p.reply);
      reply_.consume(p.consumed);
      if (++replies_ == batch_.size()) {
        if (!writing_) complete();
        return;
      }
    }
    size_t room = std::min<size_t>(16 * 1024, kMaxReplyBytes - reply_.size());
    if (room == 0) return fail();  // cannot happen: the parser rejects longer replies
    socket_.async_read_some(reply_.prepare(room),
                            [this, op](boost::system::error_code ec, size_t n) {
                              if (op != op_id_) return;
                              if (ec) return fail();
                              reply_.commit(n);
                              read_resp_reply(op);
                            });
  }

  // The current batch is written and answered.
  void complete() {
    ++op_id_;
    timer_.cancel();
    in_flight_ = false;
    next_request();
  }

  // The current batch's write or read failed: the connection broke.
  void fail() {
    ++op_id_;
    timer_.cancel();
    on_break();
  }

  void on_reply(const Request& r, std::string_view line) {
    switch (phase_) {
      case Phase::kPrepare:
        if (line != "DELETED" && line != "NOT_FOUND") {
          ++run_.totals.errors;
          run_.add_problem(fmt::format("DEL {}: unexpected reply '{}'", key_name(r), line));
        }
        ++step_;
        break;
      case Phase::kLoad:
        on_load_reply(r, line);
        break;
      case Phase::kVerify:
        judge(r, stored_state(r, line), line, true);
        ++step_;
        break;
      case Phase::kDone:
        return;
    }
  }

  // One load operation answered (or acknowledged by a replica): its latency
  // is from the batch's write until now.
  void count_ops(uint64_t n) {
    auto now = Clock::now();
    auto latency = std::chrono::duration_cast<std::chrono::microseconds>(now - sent_at_);
    for (uint64_t i = 0; i < n; ++i) {
      run_.totals.latencies_us.push_back(static_cast<uint32_t>(
          std::min<int64_t>(latency.count(), std::numeric_limits<uint32_t>::max())));
    }
    run_.totals.ops += n;
    run_.last_load_reply = now;
  }

  // RESP, load phase: a write counts once its WAIT says a replica has it
  // (or at once under --wait none); a GET when it is answered.
  void on_resp_reply(const Request& r, const RespReply& reply) {
    bool ok = false;
    switch (r.kind) {
      case Kind::kSet:
      case Kind::kIncr:
        ok = r.kind == Kind::kSet ? reply.type == RespType::kSimple && reply.text == "OK"
                                  : reply.type == RespType::kInteger;
        if (ok && run_.options.wait == WaitMode::kNone) count_ops(1);
        if (ok && run_.options.wait != WaitMode::kNone) ++awaiting_wait_;
        break;
      case Kind::kGet:
        ok = reply.type == RespType::kBulk || reply.type == RespType::kNull;
        if (ok) count_ops(1);
        break;
      case Kind::kWait:
        ok = reply.type == RespType::kInteger && reply.integer >= 1;
        if (ok) {
          count_ops(awaiting_wait_);
        } else {
          run_.totals.unacked_writes += awaiting_wait_;
          run_.totals.errors += awaiting_wait_;
        }
        awaiting_wait_ = 0;
        break;
      case Kind::kDel:
        ok = reply.type == RespType::kInteger;
        break;
    }
    if (!ok) {
      ++run_.totals.errors;
      if (run_.totals.errors <= 5 && !run_.options.quiet) {
        std::string_view what = reply.type == RespType::kInteger ? "an integer" : reply.text;
        std::fprintf(stderr, "kvload: %s: unexpected RESP reply '%.*s'\n",
                     r.kind == Kind::kWait ? "WAIT" : key_name(r).c_str(),
                     static_cast<int>(std::min<size_t>(what.size(), 200)), what.data());
      }
    }
  }

  void on_load_reply(const Request& r, std::string_view line) {
    count_ops(1);
    bool ok = false;
    switch (r.kind) {
      case Kind::kSet:
        ok = line == "OK";
        if (ok && run_.options.check) {
          KeyState& k = keys_state_[r.index];
          k.seq_acked = std::max(k.seq_acked, r.seq);
          note_ack(k, 0, r.seq);
          ++run_.totals.check.acked_writes;
        }
        break;
      case Kind::kGet:
        ok = line.starts_with("VALUE ") || line == "NOT_FOUND";
        if (run_.options.check) judge(r, stored_state(r, line), line, false);
        break;
      case Kind::kIncr:
        ok = line.starts_with("INTEGER ") && parse_int(line.substr(8)).has_value();
        if (ok && run_.options.check) {
          ++keys_state_[r.index].incr_acked;
          note_ack(keys_state_[r.index], 1, keys_state_[r.index].incr_acked);
          ++run_.totals.check.acked_writes;
          auto n = parse_int(line.substr(8));
          std::optional<uint64_t> count;
          if (*n >= 0) count = static_cast<uint64_t>(*n);
          judge(r, count, line, false);  // the count after this INCR
        }
        break;
      case Kind::kDel:
        ok = line == "DELETED" || line == "NOT_FOUND";
        break;
      case Kind::kWait:  // RESP only
        break;
    }
    if (!ok) {
      ++run_.totals.errors;
      if (run_.totals.errors <= 5 && !run_.options.quiet) {
        std::fprintf(stderr, "kvload: %s: unexpected reply '%.*s'\n", key_name(r).c_str(),
                     static_cast<int>(std::min<size_t>(line.size(), 200)), line.data());
      }
    }
  }

  // The stored state a GET reply shows for an owned key: its seq (c<c>:k<i>)
  // or count (c<c>:n<i>), 0 when missing; nullopt for anything malformed.
  std::optional<uint64_t> stored_state(const Request& r, std::string_view line) const {
    if (line == "NOT_FOUND") return 0;
    if (!line.starts_with("VALUE ")) return std::nullopt;
    std::string_view v = line.substr(6);
    if (!r.counter) return parse_check_value(v, id_, r.index);
    auto n = parse_int(v);
    if (!n || *n < 0) return std::nullopt;
    return static_cast<uint64_t>(*n);
  }

  // Judges a state the server showed for an owned key (a GET reply or the
  // value an INCR returned) against what was acknowledged and sent so far.
  // Replies are released only once committed, so a state below the
  // acknowledged one means an acknowledged write was lost. Each key counts at
  // most once as lost and once as corrupt. `final` marks the read-back at the
  // end, which also counts keys_checked and unacked_found.
  void judge(const Request& r, std::optional<uint64_t> stored, std::string_view line, bool final) {
    CheckTotals& t = run_.totals.check;
    KeyState& k = keys_state_[r.index];
    int which = r.counter ? 1 : 0;
    uint64_t acked = r.counter ? k.incr_acked : k.seq_acked;
    uint64_t sent = r.counter ? k.incr_sent : k.seq_sent;
    const char* when = final ? "at the end" : "during the run";
    if (final) ++t.keys_checked;
    if (!stored || *stored > sent) {
      if (!k.corrupt[which]) {
        k.corrupt[which] = true;
        ++t.corrupt;
        run_.add_problem(fmt::format("CORRUPT {} ({}): reply '{}' (acknowledged {}, sent {})",
                                     key_name(r), when, line.substr(0, 100), acked, sent));
      }
    } else if (*stored < acked) {
      if (!k.lost[which]) {
        k.lost[which] = true;
        ++t.acked_lost;
        // Which acknowledged writes it lost, and when the first was acknowledged.
        std::optional<Clock::time_point> first;
        const auto& acks = k.acks[which];
        if (acks.size() == kAcksKept && acks.front().first > *stored + 1)
          first = Clock::time_point{};
        for (const auto& [value, at] : acks) {
          if (value <= *stored) continue;
          ++t.writes_lost;
          if (!first) first = at;
        }
        if (first && (!t.earliest_lost_ack || *first < *t.earliest_lost_ack)) {
          t.earliest_lost_ack = *first;
        }
        run_.add_problem(fmt::format("LOST {} ({}): stored {} < acknowledged {} (sent {})",
                                     key_name(r), when, *stored, acked, sent));
      }
    } else if (*stored > acked && final) {
      ++t.unacked_found;
    }
  }

  RunState& run_;
  const std::vector<tcp::endpoint>& servers_;
  const unsigned id_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  asio::streambuf reply_;
  std::mt19937_64 rng_;
  std::function<void()> on_done_;

  uint64_t keys_ = 0;
  std::vector<KeyState> keys_state_;  // check mode only
  Phase phase_ = Phase::kLoad;
  uint64_t step_ = 0;  // prepare/verify: the next of 2 * keys_ requests
  size_t server_index_ = 0;
  bool ever_connected_ = false;
  Clock::time_point connect_deadline_;
  // Incremented whenever an operation completes or times out; a handler whose
  // op id is no longer current has been overtaken and does nothing.
  uint64_t op_id_ = 0;
  bool in_flight_ = false;  // a batch is written or being answered
  bool writing_ = false;    // its write has not completed yet
  std::vector<Request> batch_;
  size_t replies_ = 0;          // replies received for batch_
  uint64_t awaiting_wait_ = 0;  // RESP: writes answered OK whose WAIT has not come
  std::string out_;
  Clock::time_point sent_at_;
};

// --- options and report -------------------------------------------------------

[[noreturn]] void bad_option(const std::string& msg, const po::options_description& desc) {
  std::fprintf(stderr, "romulus-kvload: %s\n", msg.c_str());
  std::cerr << desc << "\n";
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  std::string mix = "set=50,get=40,incr=10", reconnect = "30s", request = "10s";
  std::string protocol = "text", wait = "each";
  std::optional<uint64_t> seed;
  po::options_description desc("usage: romulus-kvload --server HOST:PORT [options]");
  desc.add_options()                //
      ("help,h", "show this help")  //
      ("server", po::value(&o.servers)->composing(),
       "HOST:PORT of a kvstore (repeatable: tried in order, round robin, on reconnect)")  //
      ("connections", po::value(&o.connections)->default_value(o.connections),
       "concurrent connections")  //
      ("pipeline", po::value(&o.pipeline)->default_value(o.pipeline),
       "load requests sent at once per connection (1: one request, then wait for its "
       "reply)")                                                             //
      ("seconds", po::value(&o.seconds), "run for S seconds (default 10)")   //
      ("ops", po::value(&o.ops), "run for N operations in all")              //
      ("mix", po::value(&mix)->default_value(mix), "operation weights")      //
      ("keys", po::value(&o.keys)->default_value(o.keys), "number of keys")  //
      ("value-size", po::value(&o.value_size)->default_value(o.value_size),
       "bytes per SET value")                                                       //
      ("check", po::bool_switch(&o.check), "prove no acknowledged write was lost")  //
      ("reconnect-timeout", po::value(&reconnect)->default_value(reconnect),
       "give up reconnecting after this long (e.g. 30s, 500ms)")  //
      ("request-timeout", po::value(&request)->default_value(request),
       "treat a connection as broken when a reply takes this long")                  //
      ("seed", po::value<uint64_t>(), "random seed (default: random, printed)")      //
      ("json", po::bool_switch(&o.json), "final report as one JSON line on stdout")  //
      ("quiet", po::bool_switch(&o.quiet), "no progress lines on stderr")            //
      ("protocol", po::value(&protocol)->default_value(protocol),
       "text (romulus-kvstore) or resp (Redis)")  //
      ("wait", po::value(&wait)->default_value(wait),
       "resp: WAIT 1 0 after each write (each), after each batch (batch), or never (none)");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      std::exit(0);
    }
    if (vm.count("seed")) seed = vm["seed"].as<uint64_t>();
    if (vm.count("seconds") && vm.count("ops"))
      bad_option("give --seconds or --ops, not both", desc);
    if (!vm.count("seconds") && !vm.count("ops")) o.seconds = 10;
    if (vm.count("seconds") && !(o.seconds > 0)) bad_option("--seconds must be positive", desc);
    if (vm.count("ops") && o.ops == 0) bad_option("--ops must be positive", desc);
  } catch (const std::exception& e) {
    bad_option(e.what(), desc);
  }
  if (o.servers.empty()) bad_option("at least one --server HOST:PORT is needed", desc);
  if (o.connections == 0 || o.connections > 10000)
    bad_option("--connections must be 1..10000", desc);
  if (o.pipeline == 0 || o.pipeline > 1024) bad_option("--pipeline must be 1..1024", desc);
  if (o.keys == 0) bad_option("--keys must be positive", desc);
  if (o.value_size > 64 * 1024) bad_option("--value-size must be at most 65536", desc);
  if (protocol == "resp") {
    o.protocol = Protocol::kResp;
  } else if (protocol != "text") {
    bad_option("bad --protocol '" + protocol + "' (want text or resp)", desc);
  }
  if (wait == "batch") {
    o.wait = WaitMode::kBatch;
  } else if (wait == "none") {
    o.wait = WaitMode::kNone;
  } else if (wait != "each") {
    bad_option("bad --wait '" + wait + "' (want each, batch or none)", desc);
  }
  if (o.protocol == Protocol::kResp && o.check) {
    bad_option("--check needs --protocol text (romulus-kvstore)", desc);
  }
  auto m = parse_mix(mix);
  if (!m) bad_option("bad --mix '" + mix + "' (want e.g. set=50,get=40,incr=10)", desc);
  o.mix = *m;
  auto rt = parse_duration(reconnect), qt = parse_duration(request);
  if (!rt) bad_option("bad --reconnect-timeout '" + reconnect + "'", desc);
  if (!qt || qt->count() == 0) bad_option("bad --request-timeout '" + request + "'", desc);
  o.reconnect_timeout = *rt;
  o.request_timeout = *qt;
  o.seed = seed ? *seed : std::random_device{}();
  return o;
}

std::vector<tcp::endpoint> resolve_servers(asio::io_context& io, const Options& o) {
  std::vector<tcp::endpoint> endpoints;
  tcp::resolver resolver(io);
  for (const std::string& s : o.servers) {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
      std::fprintf(stderr, "romulus-kvload: bad --server '%s' (want HOST:PORT)\n", s.c_str());
      std::exit(2);
    }
    std::string host = s.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    boost::system::error_code ec;
    auto results = resolver.resolve(host, s.substr(colon + 1), ec);
    if (ec || results.empty()) {
      std::fprintf(stderr, "romulus-kvload: cannot resolve '%s': %s\n", s.c_str(),
                   ec ? ec.message().c_str() : "no address");
      std::exit(2);
    }
    endpoints.push_back(results.begin()->endpoint());
  }
  return endpoints;
}

double percentile_ms(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k] / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse_options(argc, argv);
  asio::io_context io;
  std::vector<tcp::endpoint> servers = resolve_servers(io, options);
  RunState run(options);
  auto started = Clock::now();

  asio::steady_timer progress(io);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  std::vector<std::unique_ptr<Connection>> connections;
  bool all_done = false;
  auto on_done = [&] {
    if (++run.connections_done < options.connections) return;
    all_done = true;
    progress.cancel();
    signals.cancel();
  };
  for (unsigned c = 0; c < options.connections; ++c) {
    connections.push_back(std::make_unique<Connection>(io, run, servers, c, on_done));
  }

  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec,
                                                                      int) {
    if (ec) return;
    if (run.stop_requested) {  // second signal: stop now
      io.stop();
      return;
    }
    run.stop_requested = true;
    if (!options.quiet) std::fprintf(stderr, "kvload: stopping (signal again to abort)\n");
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);

  std::function<void(boost::system::error_code)> on_progress = [&](boost::system::error_code ec) {
    if (ec || all_done) return;
    double t = std::chrono::duration<double>(Clock::now() - started).count();
    std::fprintf(stderr, "kvload: %6.1fs ops %llu (%.0f/s) errors %llu reconnects %llu\n", t,
                 static_cast<unsigned long long>(run.totals.ops),
                 t > 0 ? static_cast<double>(run.totals.ops) / t : 0.0,
                 static_cast<unsigned long long>(run.totals.errors),
                 static_cast<unsigned long long>(run.totals.reconnects));
    progress.expires_after(std::chrono::seconds(1));
    progress.async_wait(on_progress);
  };
  if (!options.quiet) {
    std::fprintf(stderr, "kvload: %u connections, seed %llu\n", options.connections,
                 static_cast<unsigned long long>(options.seed));
    progress.expires_after(std::chrono::seconds(1));
    progress.async_wait(on_progress);
  }

  for (auto& c : connections) c->start();
  io.run();
  bool completed = all_done && run.totals.failed_connections == 0;

  Totals& t = run.totals;
  // Throughput covers the load phase only: from the first load operation to
  // the moment the last connection stopped issuing them (not --check's prepare
  // and verify reads).
  double elapsed = 0;
  if (run.load_start) {
    auto end = std::max(run.load_end.value_or(run.last_load_reply), *run.load_start);
    elapsed = std::chrono::duration<double>(end - *run.load_start).count();
  }
  double ops_per_sec = elapsed > 0 ? static_cast<double>(t.ops) / elapsed : 0.0;
  double p50 = percentile_ms(t.latencies_us, 0.50);
  double p99 = percentile_ms(t.latencies_us, 0.99);
  double max = t.latencies_us.empty()
                   ? 0.0
                   : *std::max_element(t.latencies_us.begin(), t.latencies_us.end()) / 1000.0;

  for (const std::string& p : t.problems) std::fprintf(stderr, "kvload: %s\n", p.c_str());
  if (!completed) {
    std::fprintf(stderr, "kvload: the run did not complete (%llu connection(s) gave up)\n",
                 static_cast<unsigned long long>(t.failed_connections));
  }
  if (options.json) {
    boost::json::object report{{"ops", t.ops},
                               {"ops_per_sec", ops_per_sec},
                               {"p50_ms", p50},
                               {"p99_ms", p99},
                               {"max_ms", max},
                               {"errors", t.errors},
                               {"reconnects", t.reconnects}};
    if (options.check) {
      report["check"] = boost::json::object{
          {"acked_writes", t.check.acked_writes},
          {"acked_lost", t.check.acked_lost},
          {"unacked_found", t.check.unacked_found},
          {"unacked_writes", t.unacked_writes},
          {"keys_checked", t.check.keys_checked},
          {"corrupt", t.check.corrupt},
          {"writes_lost", t.check.writes_lost},
          {"earliest_lost_ack_ns", t.check.earliest_lost_ack
                                       ? std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             t.check.earliest_lost_ack->time_since_epoch())
                                             .count()
                                       : int64_t{-1}}};
    }
    std::printf("%s\n", boost::json::serialize(report).c_str());
  } else {
    std::printf(
        "kvload: %llu ops in %.2f s: %.0f ops/s; latency p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
        static_cast<unsigned long long>(t.ops), elapsed, ops_per_sec, p50, p99, max);
    std::printf("kvload: errors %llu, reconnects %llu, unacknowledged writes %llu\n",
                static_cast<unsigned long long>(t.errors),
                static_cast<unsigned long long>(t.reconnects),
                static_cast<unsigned long long>(t.unacked_writes));
    if (options.check) {
      std::printf(
          "kvload: check: %llu keys checked, %llu acknowledged writes, %llu unacknowledged "
          "writes found, %llu corrupt\n",
          static_cast<unsigned long long>(t.check.keys_checked),
          static_cast<unsigned long long>(t.check.acked_writes),
          static_cast<unsigned long long>(t.check.unacked_found),
          static_cast<unsigned long long>(t.check.corrupt));
    }
  }
  if (options.check) {
    // The verdict, in words, on stderr when stdout carries the JSON.
    std::FILE* out = options.json ? stderr : stdout;
    std::fprintf(out, "acknowledged writes lost: %llu\n",
                 static_cast<unsigned long long>(t.check.acked_lost));
  }
  std::fflush(stdout);
  bool ok = completed && (!options.check || (t.check.acked_lost == 0 && t.check.corrupt == 0));
  return ok ? 0 : 1;
}
