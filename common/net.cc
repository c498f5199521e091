#include "common/net.h"

#include <fmt/format.h>

#include <fstream>
#include <random>
#include <utility>

namespace romulus::common {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

Status listen_tcp(tcp::acceptor& acceptor, const Endpoint& at, const std::string& option_name) {
  const std::string& host = at.host;
  const uint16_t port = at.port;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    tcp::resolver resolver(acceptor.get_executor());
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec || results.empty()) {
      return Status::invalid_argument(fmt::format("cannot resolve {} host '{}': {}", option_name,
                                                  host, ec ? ec.message() : "no address"));
    }
    addr = results.begin()->endpoint().address();
  }
  const tcp::endpoint ep(addr, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    return Status::unavailable(fmt::format(
        "cannot listen on {} ({}): {}{}", at.to_string(), option_name, ec.message(),
        ec == asio::error::address_in_use
            ? fmt::format(" (another process uses it; pick another {} port)", option_name)
            : ""));
  }
  return Status::ok();
}

namespace {

// The kernel's ephemeral port range, or Linux's default if it cannot be read.
std::pair<uint32_t, uint32_t> ephemeral_ports() {
  std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
  uint32_t low = 0, high = 0;
  if (f >> low >> high && low >= 1 && low <= high && high <= 65535) return {low, high};
  return {32768, 60999};
}

// Tries to bind 127.0.0.1:port (0: any); the port bound, or 0.
uint16_t try_bind(uint16_t port) {
  asio::io_context io;
  tcp::acceptor a(io);
  boost::system::error_code ec;
  a.open(tcp::v4(), ec);
  if (!ec) a.bind(tcp::endpoint(asio::ip::address_v4::loopback(), port), ec);
  return ec ? 0 : a.local_endpoint().port();
}

}  // namespace

Result<uint16_t> free_loopback_port() {
  // Tries a few random ports of the 10,000 below the ephemeral range; those
  // in use by another listener fail to bind and are skipped.
  constexpr uint32_t kSpan = 10000;
  constexpr int kTries = 64;
  const auto [low, high] = ephemeral_ports();
  const uint32_t first = low > kSpan + 1024 ? low - kSpan : high < 65535 - kSpan ? high + 1 : 0;
  if (first != 0) {
    std::minstd_rand rng(std::random_device{}());
    std::uniform_int_distribution<uint32_t> pick(first, first + kSpan - 1);
    for (int i = 0; i < kTries; ++i) {
      if (uint16_t p = try_bind(static_cast<uint16_t>(pick(rng)))) return p;
    }
  }
  if (uint16_t p = try_bind(0)) return p;
  return Status::io_error("cannot find a free loopback port (every port tried is in use)");
}

}  // namespace romulus::common
