// romulus-bankload: concurrent transfers against romulus-bank, and (--check) the
// proof that no acknowledged transfer was lost and no partial one survived.
//
//   romulus-bankload --server HOST:PORT [--server HOST:PORT ...] [--connections 16]
//                    [--seconds 5] [--accounts 100] [--max-amount 20] [--check]
//                    [--seed N] [--json] [--quiet] [--reconnect-timeout 30s]
//                    [--request-timeout 10s]
//
// Each connection sends TRANSFER requests one at a time (closed loop) with ids
// unique to this run ("<run>-<connection>-<seq>", <run> drawn from the seed) and
// records the ones answered OK or DUPLICATE: acknowledged. When a connection
// breaks (reset, EOF, refused, or no reply within --request-timeout) the
// transfer in flight is unacknowledged (it may or may not have committed), and
// the connection tries the servers in order, round robin, 50 ms apart, until
// --reconnect-timeout.
//
// --check, after the load: AUDIT must answer "AUDIT ok" (PRAGMA integrity_check
// ok, the total unchanged, every balance equal to what the transfer log says:
// no partial transaction survived and none was applied twice), and CHECK of
// every acknowledged id must find it with its from, to and amount (ids are the
// log's primary key, so present means present exactly once). Unacknowledged ids
// found are counted, not failed.
//
// Output: a summary on stderr (unless --quiet); with --json one line on stdout:
//   {"transfers":..,"refused":..,"unacked":..,"errors":..,"reconnects":..,
//    "seconds":..,"transfers_per_sec":..,"p50_ms":..,"p99_ms":..,"max_ms":..,
//    "check":{"acked_lost":..,"mismatched":..,"unacked_found":..,"audit":".."}}
// Exit status: 0 when the run completed with nothing lost and the audit ok, 1
// otherwise, 2 on bad options.
//
// Threads: one per connection, blocking sockets with timeouts; each thread owns
// its connection and its records, merged by main() after join. (A thread per
// connection keeps a closed-loop client simple; the server, not this, is measured.)
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

Clock::time_point after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

struct Options {
  std::vector<std::string> servers;
  int connections = 16;
  double seconds = 5;
  uint32_t accounts = 100;
  uint32_t max_amount = 20;
  bool check = false;
  uint64_t seed = 0;
  bool json = false;
  bool quiet = false;
  double reconnect_timeout = 30;
  double request_timeout = 10;
};

struct Endpoint {
  std::string host;
  uint16_t port = 0;
};

double parse_seconds(const std::string& text) {
  size_t pos = 0;
  double v = std::stod(text, &pos);
  std::string unit = text.substr(pos);
  if (unit == "ms") return v / 1000;
  if (unit == "s" || unit.empty()) return v;
  throw std::runtime_error("bad duration '" + text + "' (use 500ms or 5s)");
}

// One blocking line connection with a per-request deadline.
class LineConnection {
 public:
  ~LineConnection() { close(); }
  bool connect(const Endpoint& e) {
    close();
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &res) != 0) {
      return false;
    }
    fd_ = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    bool ok = fd_ >= 0 && ::connect(fd_, res->ai_addr, res->ai_addrlen) == 0;
    freeaddrinfo(res);
    if (!ok) {
      close();
      return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    buffer_.clear();
    return true;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // The next line (without '\n'), or nullopt on EOF, error or deadline.
  std::optional<std::string> read_line(Clock::time_point deadline) {
    for (;;) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return std::nullopt;
      if (r == 0) continue;
      char chunk[4096];
      ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

struct Transfer {
  std::string id;
  uint32_t from, to, amount;
};

struct Worker {
  std::vector<Transfer> acked;
  std::vector<Transfer> unacked;
  std::vector<double> latencies_ms;
  uint64_t refused = 0, errors = 0, reconnects = 0;
  bool gave_up = false;
  std::string last_error;
};

class Client {
 public:
  Client(const Options& o, std::vector<Endpoint> servers) : o_(o), servers_(std::move(servers)) {}

  // Connects to any server, trying them in order from the one that last worked.
  bool reconnect(LineConnection& c, size_t& next) {
    const auto end = after(o_.reconnect_timeout);
    while (Clock::now() < end) {
      for (size_t i = 0; i < servers_.size(); ++i) {
        const size_t s = (next + i) % servers_.size();
        if (c.connect(servers_[s])) {
          next = s;
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // One request; nullopt if the connection broke (and was re-established, or not).
  std::optional<std::string> request(LineConnection& c, const std::string& line) {
    if (!c.send(line + "\n")) return std::nullopt;
    return c.read_line(after(o_.request_timeout));
  }

  void run_worker(int index, const std::string& run_id, uint64_t seed, Clock::time_point end,
                  Worker& w) {
    std::mt19937_64 rng(seed);
    LineConnection c;
    size_t server = 0;
    if (!reconnect(c, server)) {
      w.gave_up = true;
      w.last_error = "could not connect to any server";
      return;
    }
    for (uint64_t seq = 0; Clock::now() < end; ++seq) {
      Transfer t;
      t.from = static_cast<uint32_t>(rng() % o_.accounts);
      t.to = static_cast<uint32_t>((t.from + 1 + rng() % (o_.accounts - 1)) % o_.accounts);
      t.amount = static_cast<uint32_t>(1 + rng() % o_.max_amount);
      t.id = fmt::format("{}-{}-{}", run_id, index, seq);
      const auto start = Clock::now();
      auto reply = request(c, fmt::format("TRANSFER {} {} {} {}", t.from, t.to, t.amount, t.id));
      if (!reply) {
        w.unacked.push_back(std::move(t));
        ++w.reconnects;
        if (!reconnect(c, server)) {
          w.gave_up = true;
          w.last_error = "lost the server and could not reconnect";
          return;
        }
        continue;
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (reply->rfind("OK ", 0) == 0 || reply->rfind("DUPLICATE ", 0) == 0) {
        w.latencies_ms.push_back(ms);
        w.acked.push_back(std::move(t));
      } else if (reply->rfind("REFUSED", 0) == 0) {
        w.latencies_ms.push_back(ms);
        ++w.refused;
      } else {
        ++w.errors;
        w.last_error = *reply;
      }
    }
  }

  // Sends `lines` pipelined in batches; replies in order, or false if the
  // connection broke (the caller retries on a new one).
  bool pipelined(LineConnection& c, const std::vector<std::string>& lines,
                 std::vector<std::string>& replies) {
    replies.clear();
    constexpr size_t kBatch = 256;
    for (size_t at = 0; at < lines.size(); at += kBatch) {
      std::string out;
      const size_t n = std::min(kBatch, lines.size() - at);
      for (size_t i = 0; i < n; ++i) out += lines[at + i] + "\n";
      if (!c.send(out)) return false;
      for (size_t i = 0; i < n; ++i) {
        auto r = c.read_line(after(o_.request_timeout));
        if (!r) return false;
        replies.push_back(std::move(*r));
      }
    }
    return true;
  }

 private:
  const Options& o_;
  std::vector<Endpoint> servers_;
};

Options parse_options(int argc, char** argv, std::vector<Endpoint>& servers) {
  Options o;
  std::string reconnect = "30s", request = "10s";
  po::options_description desc("usage: romulus-bankload --server HOST:PORT [options]");
  desc.add_options()("help,h", "show this help")("server", po::value(&o.servers)->composing(),
                                                 "HOST:PORT, in failover order (repeatable)")(
      "connections", po::value(&o.connections)->default_value(o.connections), "connections")(
      "seconds", po::value(&o.seconds)->default_value(o.seconds), "how long to send transfers")(
      "accounts", po::value(&o.accounts)->default_value(o.accounts),
      "accounts to use (0 .. N-1; the bank must have at least this many)")(
      "max-amount", po::value(&o.max_amount)->default_value(o.max_amount), "largest amount")(
      "check", po::bool_switch(&o.check), "audit and look up every acknowledged transfer")(
      "seed", po::value(&o.seed), "random seed (default: random, printed)")(
      "json", po::bool_switch(&o.json), "print the report as one JSON line on stdout")(
      "quiet", po::bool_switch(&o.quiet), "no summary on stderr")(
      "reconnect-timeout", po::value(&reconnect)->default_value(reconnect),
      "how long a broken connection tries the servers")(
      "request-timeout", po::value(&request)->default_value(request),
      "a request with no reply for this long counts as a broken connection");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      std::exit(0);
    }
    if (!vm.count("seed")) o.seed = std::random_device{}();
    if (o.servers.empty()) throw std::runtime_error("give at least one --server HOST:PORT");
    for (const std::string& s : o.servers) {
      size_t colon = s.rfind(':');
      if (colon == std::string::npos) throw std::runtime_error("--server wants HOST:PORT: " + s);
      int port = std::stoi(s.substr(colon + 1));
      if (port <= 0 || port > 65535) throw std::runtime_error("bad port in --server " + s);
      servers.push_back({s.substr(0, colon), static_cast<uint16_t>(port)});
    }
    if (o.connections < 1 || o.connections > 1000) {
      throw std::runtime_error("--connections must be 1 to 1000");
    }
    if (o.accounts < 2) throw std::runtime_error("--accounts must be at least 2");
    if (o.max_amount < 1) throw std::runtime_error("--max-amount must be at least 1");
    o.reconnect_timeout = parse_seconds(reconnect);
    o.request_timeout = parse_seconds(request);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-bankload: %s\n", e.what());
    std::cerr << desc << "\n";
    std::exit(2);
  }
  return o;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Endpoint> servers;
  Options o = parse_options(argc, argv, servers);
  if (!o.quiet) {
    std::fprintf(stderr, "romulus-bankload: seed %llu (repeat with --seed %llu)\n",
                 static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(o.seed));
  }
  std::mt19937_64 rng(o.seed);
  const std::string run_id = fmt::format("r{:x}", rng() & 0xffffffffffffULL);
  Client client(o, servers);
  std::vector<Worker> workers(static_cast<size_t>(o.connections));
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < o.connections; ++i) {
      threads.emplace_back([&, i, seed = rng()] {
        client.run_worker(i, run_id, seed, end, workers[static_cast<size_t>(i)]);
      });
    }
    for (auto& t : threads) t.join();
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<Transfer> acked, unacked;
  std::vector<double> lat;
  uint64_t refused = 0, errors = 0, reconnects = 0, gave_up = 0;
  std::string last_error;
  for (Worker& w : workers) {
    acked.insert(acked.end(), w.acked.begin(), w.acked.end());
    unacked.insert(unacked.end(), w.unacked.begin(), w.unacked.end());
    lat.insert(lat.end(), w.latencies_ms.begin(), w.latencies_ms.end());
    refused += w.refused;
    errors += w.errors;
    reconnects += w.reconnects;
    gave_up += w.gave_up ? 1 : 0;
    if (!w.last_error.empty()) last_error = w.last_error;
  }
  const double p50 = percentile(lat, 0.5), p99 = percentile(lat, 0.99);
  const double max = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());

  bool ok = gave_up == 0 && errors == 0;
  std::string check_json;
  if (o.check) {
    uint64_t lost = 0, mismatched = 0, unacked_found = 0;
    std::string audit = "no reply";
    std::vector<std::string> lines, replies;
    LineConnection c;
    size_t server = 0;
    bool done = false;
    for (int attempt = 0; attempt < 5 && !done; ++attempt) {
      if (!client.reconnect(c, server)) break;
      auto a = client.request(c, "AUDIT");
      if (!a) continue;
      audit = *a;
      lines.clear();
      for (const Transfer& t : acked) lines.push_back("CHECK " + t.id);
      for (const Transfer& t : unacked) lines.push_back("CHECK " + t.id);
      if (!client.pipelined(c, lines, replies)) continue;
      done = true;
    }
    if (!done) {
      ok = false;
      last_error = "the check could not reach a server";
    } else {
      for (size_t i = 0; i < acked.size(); ++i) {
        const Transfer& t = acked[i];
        if (replies[i].rfind("NOT_FOUND", 0) == 0) {
          ++lost;
        } else if (replies[i] != fmt::format("FOUND {} {} {} {}", t.id, t.from, t.to, t.amount)) {
          ++mismatched;
        }
      }
      for (size_t i = 0; i < unacked.size(); ++i) {
        if (replies[acked.size() + i].rfind("FOUND", 0) == 0) ++unacked_found;
      }
    }
    if (lost || mismatched || audit.rfind("AUDIT ok", 0) != 0) ok = false;
    check_json = fmt::format(
        ",\"check\":{{\"acked_lost\":{},\"mismatched\":{},\"unacked_found\":{},\"audit\":\"{}\"}}",
        lost, mismatched, unacked_found, audit);
    if (!o.quiet) {
      std::fprintf(stderr,
                   "romulus-bankload: check: acknowledged transfers %zu, LOST %llu, mismatched "
                   "%llu, unacknowledged %zu of which found %llu; %s\n",
                   acked.size(), static_cast<unsigned long long>(lost),
                   static_cast<unsigned long long>(mismatched), unacked.size(),
                   static_cast<unsigned long long>(unacked_found), audit.c_str());
    }
  }
  if (!o.quiet) {
    std::fprintf(stderr,
                 "romulus-bankload: %zu transfers acknowledged (%.0f/s), %llu refused, %zu "
                 "unacknowledged, %llu errors, %llu reconnects; latency p50 %.2f ms p99 %.2f ms "
                 "max %.2f ms%s%s\n",
                 acked.size(), static_cast<double>(acked.size()) / elapsed,
                 static_cast<unsigned long long>(refused), unacked.size(),
                 static_cast<unsigned long long>(errors),
                 static_cast<unsigned long long>(reconnects), p50, p99, max,
                 last_error.empty() ? "" : "; last error: ", last_error.c_str());
  }
  if (o.json) {
    std::printf(
        "{\"transfers\":%zu,\"refused\":%llu,\"unacked\":%zu,\"errors\":%llu,\"reconnects\":%llu,"
        "\"seconds\":%.3f,\"transfers_per_sec\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%."
        "3f%s}\n",
        acked.size(), static_cast<unsigned long long>(refused), unacked.size(),
        static_cast<unsigned long long>(errors), static_cast<unsigned long long>(reconnects),
        elapsed, static_cast<double>(acked.size()) / elapsed, p50, p99, max, check_json.c_str());
    std::fflush(stdout);
  }
  return ok ? 0 : 1;
}
