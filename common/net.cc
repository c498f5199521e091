#include "common/net.h"

#include <fmt/format.h>


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

}  // namespace romulus::common
