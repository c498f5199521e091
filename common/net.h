// TCP listening, once for every listener of a node (replication port, service
// proxy): resolve a host given as an address or a name, open, bind with
// SO_REUSEADDR, listen. The caller names the option the address came from
// (e.g. "--listen"), so the one-line error says which setting to change.
//
// Call on the thread that owns the acceptor's io_context (or before it runs).
#pragma once

#include <cstdint>
#include <string>

#include "common/asio.h"
#include "common/endpoint.h"
#include "common/status.h"

namespace romulus::common {

Status listen_tcp(boost::asio::ip::tcp::acceptor& acceptor, const Endpoint& at,
                  const std::string& option_name);

}  // namespace romulus::common
