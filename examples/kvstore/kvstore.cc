// romulus-kvstore: a TCP key-value server whose whole data set lives in the
// Romulus arena, so a failover resumes it with every committed key.
//
//   romulus-kvstore [--port N] [--listen ADDR] [--work N]
//
// --work N (default 0) makes every write (SET, INCR, DEL) first compute N
// rounds of a hash, outside any Update: a CPU-bound guest for benchmarks
// (bench/e2e --guest-work), the same work per request protected or not.
//
// Under a supervisor it listens on 127.0.0.1:<ROMULUS_SERVICE_PORT> (the output
// proxy's guest port) and ignores --port/--listen; alone it listens on
// ADDR:N (default 127.0.0.1:6379; --port 0 picks a free port, printed on start).
// The line protocol is documented in examples/kvstore/README.md.
//
// Data: one boost::container::map of interprocess strings, found in the arena's
// managed segment under the name "romulus-kvstore". Every mutation, including
// its allocations, runs inside one romulus::guest::Update, so a checkpoint holds
// each command entirely or not at all; reads need no Update. The map never
// holds raw pointers (Boost.Interprocess allocators use offset_ptr), so it works
// at the different address the arena has after a resume.
//
// Threads: one. The io_context runs on main(); sessions, the store and the
// segment are only touched from it, so the segment needs no locking of ours.
// Sessions follow Asio's chat_server: one object per connection, one write in
// flight, replies queued behind it in request order.
#include <signal.h>

#include <boost/container/map.hpp>
#include <boost/container/string.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/program_options.hpp>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <string_view>

// Boost's asio/awaitable.hpp has used std::exchange without including <utility>
// (1.74 with g++ 12 in C++20 mode), so <utility> comes first. (Guests link the
// SDK only, not common/asio.h, which does the same.)
#include <utility>
// (a separate include block, so that clang-format keeps this order)
#include <boost/asio.hpp>

#include "examples/support/line_server.h"
#include "guest/guest.h"

namespace {

namespace asio = boost::asio;
namespace bip = boost::interprocess;
namespace po = boost::program_options;
using asio::ip::tcp;

constexpr size_t kMaxKeyBytes = 256;
constexpr size_t kMaxValueBytes = 64 * 1024;
// "SET " + key + " " + value + "\r": the longest line a valid request can be.
constexpr size_t kMaxLineBytes = 4 + kMaxKeyBytes + 1 + kMaxValueBytes + 1;

// ---------------------------------------------------------------------------
// The store: the arena-resident map and the commands over it.

using SegmentManager = bip::managed_external_buffer::segment_manager;
using ShmString = boost::container::basic_string<char, std::char_traits<char>,
                                                 bip::allocator<char, SegmentManager>>;

// Orders keys by their bytes; transparent so lookups take a std::string_view and
// allocate nothing in the segment.
struct KeyLess {
  using is_transparent = void;
  static std::string_view view(const ShmString& s) { return {s.data(), s.size()}; }
  static std::string_view view(std::string_view s) { return s; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return view(a) < view(b);
  }
};

using ShmMap =
    boost::container::map<ShmString, ShmString, KeyLess,
                          bip::allocator<std::pair<const ShmString, ShmString>, SegmentManager>>;

constexpr const char* kMapName = "romulus-kvstore";

// Executes request lines against the map. Not thread-safe (one io thread).
class KvStore {
 public:
  explicit KvStore(bip::managed_external_buffer& segment, uint64_t work = 0)
      : segment_manager_(segment.get_segment_manager()), work_(work) {
    romulus::guest::Update u;  // the map appears in a checkpoint whole or not at all
    map_ = segment.find_or_construct<ShmMap>(kMapName)(KeyLess(), segment_manager_);
  }

  size_t size() const { return map_->size(); }

  // One request line, without '\n' and without a trailing '\r'; returns the
  // reply line without '\n'.
  std::string execute(std::string_view line) {
    std::string_view cmd = line.substr(0, line.find(' '));
    std::string_view args = cmd.size() < line.size() ? line.substr(cmd.size() + 1) : "";
    bool has_args = cmd.size() < line.size();
    if (work_ != 0 &&
        (equals_upper(cmd, "SET") || equals_upper(cmd, "INCR") || equals_upper(cmd, "DEL"))) {
      compute();
    }
    if (equals_upper(cmd, "SET")) {
      size_t space = args.find(' ');
      if (space == std::string_view::npos) return "ERROR wrong number of arguments";
      return set(args.substr(0, space), args.substr(space + 1));
    }
    if (equals_upper(cmd, "GET") || equals_upper(cmd, "INCR") || equals_upper(cmd, "DEL")) {
      if (args.empty() || args.find(' ') != std::string_view::npos) {
        return "ERROR wrong number of arguments";
      }
      if (args.size() > kMaxKeyBytes) return "ERROR key too long";
      if (equals_upper(cmd, "GET")) return get(args);
      if (equals_upper(cmd, "INCR")) return incr(args);
      return del(args);
    }
    if (equals_upper(cmd, "SIZE")) {
      if (has_args) return "ERROR wrong number of arguments";
      return "SIZE " + std::to_string(map_->size());
    }
    if (equals_upper(cmd, "PING")) {
      if (has_args) return "ERROR wrong number of arguments";
      return "PONG";
    }
    return "ERROR unknown command";
  }

 private:
  static bool equals_upper(std::string_view cmd, std::string_view upper) {
    if (cmd.size() != upper.size()) return false;
    for (size_t i = 0; i < cmd.size(); ++i) {
      char c = cmd[i];
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
      if (c != upper[i]) return false;
    }
    return true;
  }

  ShmString make_string(std::string_view s) const {
    return ShmString(s.data(), s.size(), ShmString::allocator_type(segment_manager_));
  }

  std::string set(std::string_view key, std::string_view value) {
    if (key.empty()) return "ERROR wrong number of arguments";
    if (key.size() > kMaxKeyBytes) return "ERROR key too long";
    if (value.size() > kMaxValueBytes) return "ERROR value too long";
    try {
      romulus::guest::Update u;
      put(key, value);
    } catch (const std::bad_alloc&) {
      return "ERROR out of memory";
    } catch (const bip::bad_alloc&) {
      return "ERROR out of memory";
    }
    return "OK";
  }

  std::string get(std::string_view key) const {
    auto it = map_->find(key);
    if (it == map_->end()) return "NOT_FOUND";
    std::string reply = "VALUE ";
    reply.append(it->second.data(), it->second.size());
    return reply;
  }

  std::string incr(std::string_view key) {
    int64_t value = 0;
    if (auto it = map_->find(key); it != map_->end()) {
      const ShmString& s = it->second;
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
      if (ec != std::errc() || end != s.data() + s.size()) return "ERROR not an integer";
    }
    if (value == std::numeric_limits<int64_t>::max()) return "ERROR integer overflow";
    ++value;
    std::string text = std::to_string(value);
    try {
      romulus::guest::Update u;
      put(key, text);
    } catch (const std::bad_alloc&) {
      return "ERROR out of memory";
    } catch (const bip::bad_alloc&) {
      return "ERROR out of memory";
    }
    return "INTEGER " + text;
  }

  std::string del(std::string_view key) {
    romulus::guest::Update u;
    auto it = map_->find(key);
    if (it == map_->end()) return "NOT_FOUND";
    map_->erase(it);
    return "DELETED";
  }

  // Inserts or overwrites; call inside an Update. Strong guarantee: on
  // bad_alloc the map is as it was (both strings are built before the node is
  // linked; assign() allocates before it frees).
  void put(std::string_view key, std::string_view value) {
    auto it = map_->lower_bound(key);
    if (it != map_->end() && KeyLess::view(it->first) == key) {
      it->second.assign(value.data(), value.size());
    } else {
      map_->emplace_hint(it, make_string(key), make_string(value));
    }
  }

  // --work: work_ rounds of splitmix64, kept from the optimiser by a volatile
  // sink. Registers only: it writes no memory a checkpoint would carry.
  void compute() {
    uint64_t x = work_;
    for (uint64_t i = 0; i < work_; ++i) {
      x += 0x9e3779b97f4a7c15ull;
      x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
      x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
      x ^= x >> 31;
    }
    sink_ = x;
  }

  SegmentManager* segment_manager_;
  ShmMap* map_ = nullptr;
  uint64_t work_ = 0;
  volatile uint64_t sink_ = 0;
};

using Server = romulus::examples::LineServer<KvStore>;

struct Options {
  std::string listen = "127.0.0.1";
  uint16_t port = 6379;
  uint64_t work = 0;
};

// Parses the command line; exits with status 2 on a bad option.
Options parse_options(int argc, char** argv) {
  Options options;
  po::options_description desc("usage: romulus-kvstore [options]");
  desc.add_options()("help,h", "show this help")(
      "port", po::value<uint16_t>(&options.port)->default_value(options.port),
      "TCP port when run alone (0: pick a free one); under Romulus the supervisor's "
      "ROMULUS_SERVICE_PORT wins")(
      "listen", po::value<std::string>(&options.listen)->default_value(options.listen),
      "address to listen on when run alone")(
      "work", po::value<uint64_t>(&options.work)->default_value(options.work),
      "rounds of a hash computed before each write (a CPU-bound guest for benchmarks)");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      std::exit(0);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-kvstore: %s\n", e.what());
    std::cerr << desc << "\n";
    std::exit(2);
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse_options(argc, argv);
  auto arena = romulus::guest::attach();
  if (!arena.is_ok()) {
    std::fprintf(stderr, "romulus-kvstore: %s\n", arena.status().to_string().c_str());
    return 1;
  }
  std::unique_ptr<KvStore> store;
  try {
    store = std::make_unique<KvStore>(arena->segment(), options.work);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-kvstore: cannot place the map in the arena: %s\n", e.what());
    return 1;
  }

  asio::io_context io;
  std::unique_ptr<Server> server;
  try {
    tcp::endpoint endpoint;
    if (auto port = arena->service_port()) {
      endpoint = tcp::endpoint(asio::ip::address_v4::loopback(), *port);
    } else {
      endpoint = tcp::endpoint(asio::ip::make_address(options.listen), options.port);
    }
    server = std::make_unique<Server>(io, endpoint, *store, kMaxLineBytes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-kvstore: cannot listen: %s\n", e.what());
    return 1;
  }
  if (arena->resumed()) {
    std::printf("romulus-kvstore: resumed at epoch %llu with %zu keys\n",
                static_cast<unsigned long long>(arena->resumed_epoch().value_or(0)), store->size());
  }
  std::printf("romulus-kvstore: listening on %s:%u\n", server->address().c_str(),
              static_cast<unsigned>(server->port()));
  std::fflush(stdout);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    server->stop();
    io.stop();
  });
  server->start();
  io.run();
  std::printf("romulus-kvstore: stopped with %zu keys\n", store->size());
  return 0;
}
