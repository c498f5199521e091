// Fuzz target for parse_virtqueue_status (vm/virtqueue_status.h): whatever JSON
// a QEMU (or anything on its QMP socket) answers x-query-virtio-queue-status
// with must parse into a queue's status or fail with an error, never crash;
// a status it accepts must describe itself in one line.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "vm/virtqueue_status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  boost::system::error_code ec;
  const boost::json::value reply =
      boost::json::parse(std::string_view(reinterpret_cast<const char*>(data), size), ec);
  if (ec) return 0;
  auto status = romulus::vm::parse_virtqueue_status(reply);
  if (!status.is_ok()) {
    if (status.status().message().empty()) __builtin_trap();  // an error says what
    return 0;
  }
  const std::vector<romulus::vm::VirtqueueStatus> queues{*status, *status};
  const std::string line = romulus::vm::describe_virtqueues(queues);
  if (line.empty() || line.find('\n') != std::string::npos) __builtin_trap();
  return 0;
}
