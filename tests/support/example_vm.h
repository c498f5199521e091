// The example VM (examples/vm) for tests that run a real QEMU: where QEMU and
// the image are, the user's command line for it, and a client of the
// kvstore's line protocol it serves.
//
// The image is looked for in $ROMULUS_BUILD_DIR/vm-image (`ninja vm-image`)
// and built there with examples/vm/build-image when missing (cached: a
// second build does nothing). Tests skip, saying why, without QEMU or when
// the image cannot be built.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/guest_paths.h"

namespace romulus::testing {

inline std::optional<std::string> find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t colon = dirs.find(':', start);
    std::string dir =
        dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return std::nullopt;
}

inline std::string source_dir() {
  if (const char* dir = std::getenv("ROMULUS_SOURCE_DIR")) return dir;
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

// The example image's directory, built when missing; nullopt with `why` if it cannot be.
inline std::optional<std::string> example_vm_image(std::string& why) {
  std::string dir = build_dir() + "/vm-image";
  std::string script = source_dir() + "/examples/vm/build-image";
  std::string log = dir + ".log";
  std::filesystem::create_directories(dir);
  // Quick when the image is there and current; builds it otherwise.
  std::string command = "'" + script + "' '" + dir + "' >'" + log + "' 2>&1";
  if (std::system(command.c_str()) != 0) {
    why = "the example VM image could not be built (" + script + "; see " + log +
          "; scripts/setup installs what it needs)";
    return std::nullopt;
  }
  return dir;
}

// The user's command line for the example VM with its service on `port`
// (a number, or "$ROMULUS_SERVICE_PORT" for a VmGuest to fill in).
inline std::vector<std::string> example_vm_argv(const std::string& qemu, const std::string& image,
                                                const std::string& port) {
  return {qemu,
          "-machine",
          "q35,accel=tcg",
          "-kernel",
          image + "/vmlinuz",
          "-initrd",
          image + "/initrd.img",
          "-append",
          "console=ttyS0 quiet panic=-1",
          "-nographic",
          "-no-reboot",
          "-netdev",
          "user,id=n0,hostfwd=tcp:127.0.0.1:" + port + "-:6379",
          "-device",
          "virtio-net-pci,netdev=n0,romfile="};
}

// A blocking TCP connection to 127.0.0.1:port speaking the kvstore's line protocol.
class LineClient {
 public:
  LineClient() = default;
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;
  ~LineClient() { close(); }
  bool connect(uint16_t port) {
    close();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  // Sends one request line and returns its reply line ("" on a broken connection).
  std::string request(const std::string& line) {
    std::string out = line + "\n";
    if (::send(fd_, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
      return "";
    }
    std::string reply;
    char c;
    while (::recv(fd_, &c, 1, 0) == 1) {
      if (c == '\n') return reply;
      reply += c;
    }
    return "";
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Sends request lines without waiting for their replies.
  void send_only(const std::string& lines) {
    (void)::send(fd_, lines.data(), lines.size(), MSG_NOSIGNAL);
  }

 private:
  int fd_ = -1;
};

// Connects until the service answers PING (slirp accepts before the guest listens).
inline bool wait_for_line_service(LineClient& client, uint16_t port,
                                  std::chrono::steady_clock::time_point deadline) {
  while (std::chrono::steady_clock::now() < deadline) {
    if (client.connect(port) && client.request("PING") == "PONG") return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace romulus::testing
