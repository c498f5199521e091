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

// A loopback port that is free now, for a listener another process binds a
// moment later (the guest's service port). Picked at random below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range), from which
// outgoing connections take their local ports: a port from that range can
// become some connection's local port before the listener binds it. Falls
// back to one the kernel picks if none below is free. Thread-safe.
Result<uint16_t> free_loopback_port();

}  // namespace romulus::common
