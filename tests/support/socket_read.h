// read_for: what a client socket receives within a time bound, for tests that
// check what a proxy releases (and that it releases nothing before an ack).
#pragma once

#include <poll.h>

#include <chrono>
#include <cstddef>
#include <string>

#include <boost/asio/ip/tcp.hpp>

namespace romulus::testing {

// Reads what arrives within `wait` (until `want` bytes or EOF); "" if nothing.
// *eof (if given) is set when the connection ended or failed.
inline std::string read_for(boost::asio::ip::tcp::socket& s, std::chrono::milliseconds wait,
                            size_t want, bool* eof = nullptr) {
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (got.size() < want) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{s.native_handle(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[65536];
    boost::system::error_code ec;
    const size_t n = s.read_some(boost::asio::buffer(buf), ec);
    if (ec) {
      if (eof) *eof = true;
      break;
    }
    got.append(buf, n);
  }
  return got;
}

}  // namespace romulus::testing
