// romulus-vm-kvstore: the example VM's network service, a key-value server
// whose whole data set lives in the VM's memory (an ordinary std::map; no
// Romulus SDK, no disk). Protecting the VM protects the map: after a failover
// the VM, and this process in it, continue from the last committed checkpoint.
//
//   romulus-vm-kvstore [PORT]     (default 6379, on every address)
//
// It speaks romulus-kvstore's line protocol (examples/kvstore/README.md,
// "Protocol"): SET, GET, INCR, DEL, SIZE, PING, with the same replies, limits
// and errors, so `romulus-kvload --check` drives it unchanged.
//
// Built statically (`g++ -static -O2`) by examples/vm/build-image into the
// image's initramfs, where it is the only program besides busybox; it builds
// on the host too (the romulus-vm-kvstore target), where tests can drive it.
// Standard library and POSIX only: a VM has no Boost.
//
// Threads: one. A poll() loop over the listener and every connection; each
// connection's complete lines are executed in order and their replies queued;
// a client that does not read stops being read from once kMaxQueuedReplyBytes
// wait for it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr size_t kMaxKeyBytes = 256;
constexpr size_t kMaxValueBytes = 64 * 1024;
// "SET " + key + " " + value + "\r": the longest line a valid request can be.
constexpr size_t kMaxLineBytes = 4 + kMaxKeyBytes + 1 + kMaxValueBytes + 1;
constexpr size_t kMaxQueuedReplyBytes = 1 << 20;
constexpr size_t kMaxConnections = 1024;

bool equals_upper(std::string_view cmd, std::string_view upper) {
  if (cmd.size() != upper.size()) return false;
  for (size_t i = 0; i < cmd.size(); ++i) {
    char c = cmd[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != upper[i]) return false;
  }
  return true;
}

// The store: romulus-kvstore's commands over a std::map.
class KvStore {
 public:
  // One request line without '\n' and without a trailing '\r'; the reply line
  // without '\n'.
  std::string execute(std::string_view line) {
    std::string_view cmd = line.substr(0, line.find(' '));
    bool has_args = cmd.size() < line.size();
    std::string_view args = has_args ? line.substr(cmd.size() + 1) : "";
    if (equals_upper(cmd, "SET")) {
      size_t space = args.find(' ');
      if (space == std::string_view::npos) return "ERROR wrong number of arguments";
      std::string_view key = args.substr(0, space);
      std::string_view value = args.substr(space + 1);
      if (key.empty()) return "ERROR wrong number of arguments";
      if (key.size() > kMaxKeyBytes) return "ERROR key too long";
      if (value.size() > kMaxValueBytes) return "ERROR value too long";
      map_[std::string(key)] = std::string(value);
      return "OK";
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
      return "SIZE " + std::to_string(map_.size());
    }
    if (equals_upper(cmd, "PING")) {
      if (has_args) return "ERROR wrong number of arguments";
      return "PONG";
    }
    return "ERROR unknown command";
  }

 private:
  std::string get(std::string_view key) const {
    auto it = map_.find(key);
    if (it == map_.end()) return "NOT_FOUND";
    return "VALUE " + it->second;
  }

  std::string incr(std::string_view key) {
    int64_t value = 0;
    auto it = map_.find(key);
    if (it != map_.end()) {
      const std::string& s = it->second;
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
      if (ec != std::errc() || end != s.data() + s.size()) return "ERROR not an integer";
    }
    if (value == std::numeric_limits<int64_t>::max()) return "ERROR integer overflow";
    std::string text = std::to_string(value + 1);
    if (it == map_.end()) {
      map_.emplace(std::string(key), text);
    } else {
      it->second = text;
    }
    return "INTEGER " + text;
  }

  std::string del(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return "NOT_FOUND";
    map_.erase(it);
    return "DELETED";
  }

  std::map<std::string, std::string, std::less<>> map_;
};

struct Connection {
  int fd = -1;
  std::string input;      // bytes received, not yet a complete line
  std::string output;     // replies not yet written
  bool closing = false;   // close once output is written (a line too long)
  bool draining = false;  // closing, output written, write side shut: read until EOF
};

// Executes every complete line of c.input, queueing the replies; a line longer
// than any valid request marks the connection closing (closed once its output
// is written).
void handle_lines(Connection& c, KvStore& store) {
  size_t start = 0;
  for (;;) {
    size_t nl = c.input.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(c.input.data() + start, nl - start);
    if (line.size() > kMaxLineBytes) {
      c.output += "ERROR line too long\n";
      c.closing = true;
      c.input.clear();
      return;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    c.output += store.execute(line);
    c.output += '\n';
    start = nl + 1;
  }
  c.input.erase(0, start);
  if (c.input.size() > kMaxLineBytes) {
    c.output += "ERROR line too long\n";
    c.closing = true;
    c.input.clear();
  }
}

int listen_on(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 128) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long port = 6379;
  if (argc > 2 || (argc == 2 && (port = std::strtoul(argv[1], nullptr, 10)) > 65535)) {
    std::fprintf(stderr, "usage: romulus-vm-kvstore [PORT]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int listener = listen_on(static_cast<uint16_t>(port));
  if (listener < 0) {
    std::fprintf(stderr, "romulus-vm-kvstore: cannot listen on port %lu: %s\n", port,
                 std::strerror(errno));
    return 1;
  }
  std::printf("romulus-vm-kvstore: listening on 0.0.0.0:%lu\n", port);
  std::fflush(stdout);

  KvStore store;
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<pollfd> fds;
  char buffer[16 * 1024];
  for (;;) {
    fds.clear();
    fds.push_back(
        {listener, static_cast<short>(connections.size() < kMaxConnections ? POLLIN : 0), 0});
    for (auto& c : connections) {
      short events = 0;
      if (c->draining || (!c->closing && c->output.size() < kMaxQueuedReplyBytes)) {
        events |= POLLIN;
      }
      if (!c->output.empty()) events |= POLLOUT;
      fds.push_back({c->fd, events, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "romulus-vm-kvstore: poll: %s\n", std::strerror(errno));
      return 1;
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      Connection& c = *connections[i - 1];
      bool dead = (fds[i].revents & (POLLERR | POLLNVAL)) != 0;
      if (!dead && (fds[i].revents & (POLLIN | POLLHUP))) {
        ssize_t n = read(c.fd, buffer, sizeof buffer);
        if (n > 0 && c.draining) {
          // discarded: the connection is closing
        } else if (n > 0) {
          c.input.append(buffer, static_cast<size_t>(n));
          handle_lines(c, store);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          dead = true;
        }
      }
      if (!dead && !c.output.empty()) {
        ssize_t n = write(c.fd, c.output.data(), c.output.size());
        if (n > 0) {
          c.output.erase(0, static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          dead = true;
        }
      }
      if (!dead && c.closing && !c.draining && c.output.empty()) {
        // A lingering close, as romulus-kvstore's: the reply is read before
        // the connection ends, not destroyed by a reset over unread input.
        shutdown(c.fd, SHUT_WR);
        c.draining = true;
      }
      if (dead) {
        close(c.fd);
        c.fd = -1;
      }
    }
    std::erase_if(connections, [](const auto& c) { return c->fd < 0; });
    if (fds[0].revents & POLLIN) {
      for (;;) {
        int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto c = std::make_unique<Connection>();
        c->fd = fd;
        connections.push_back(std::move(c));
        if (connections.size() >= kMaxConnections) break;
      }
    }
  }
}
