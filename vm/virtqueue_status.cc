#include "vm/virtqueue_status.h"

#include <fmt/format.h>

#include <limits>
#include <optional>

namespace romulus::vm {

namespace json = boost::json;

namespace {

// QEMU allows at most 1024 virtqueues per device (VIRTIO_QUEUE_MAX).
constexpr int64_t kMaxQueues = 1024;

std::optional<int64_t> int_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    return static_cast<int64_t>(v->get_uint64());
  }
  return std::nullopt;
}

std::optional<std::string> string_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->get_string());
}

Status bad(std::string_view command, std::string_view what) {
  return Status::corrupt(fmt::format("QMP {}: {}", command, what));
}

}  // namespace

Result<VirtqueueStatus> parse_virtqueue_status(const json::value& reply) {
  constexpr std::string_view kCommand = "x-query-virtio-queue-status";
  const json::object* o = reply.if_object();
  if (o == nullptr) return bad(kCommand, "the reply is not an object");
  VirtqueueStatus s;
  auto name = string_member(*o, "name");
  if (!name) return bad(kCommand, "no name");
  s.device = std::move(*name);
  auto index16 = [&](std::string_view key) -> Result<uint16_t> {
    auto v = int_member(*o, key);
    if (!v || *v < 0 || *v > std::numeric_limits<uint16_t>::max()) {
      return bad(kCommand, fmt::format("{} is not an index from 0 to 65535", key));
    }
    return static_cast<uint16_t>(*v);
  };
  auto queue = int_member(*o, "queue-index");
  if (!queue || *queue < 0 || *queue >= kMaxQueues)
    return bad(kCommand, "queue-index out of range");
  s.queue = static_cast<uint32_t>(*queue);
  auto inuse = int_member(*o, "inuse");
  if (!inuse || *inuse < 0 || *inuse > std::numeric_limits<uint16_t>::max()) {
    return bad(kCommand, "inuse out of range");
  }
  s.inuse = static_cast<uint32_t>(*inuse);
  ROMULUS_ASSIGN_OR_RETURN(s.last_avail_idx, index16("last-avail-idx"));
  ROMULUS_ASSIGN_OR_RETURN(s.shadow_avail_idx, index16("shadow-avail-idx"));
  ROMULUS_ASSIGN_OR_RETURN(s.used_idx, index16("used-idx"));
  return s;
}

Result<std::vector<VirtqueueStatus>> query_virtqueues(QmpClient& qmp, Deadline deadline) {
  ROMULUS_ASSIGN_OR_RETURN(json::value devices, qmp.execute("x-query-virtio", {}, deadline));
  const json::array* list = devices.if_array();
  if (list == nullptr) return bad("x-query-virtio", "the reply is not a list");
  std::vector<VirtqueueStatus> out;
  for (const json::value& d : *list) {
    const json::object* dev = d.if_object();
    auto path = dev ? string_member(*dev, "path") : std::nullopt;
    if (!path) return bad("x-query-virtio", "a device without a path");
    ROMULUS_ASSIGN_OR_RETURN(
        json::value status,
        qmp.execute("x-query-virtio-status", json::object{{"path", *path}}, deadline));
    const json::object* so = status.if_object();
    auto num = so ? int_member(*so, "num-vqs") : std::nullopt;
    if (!num || *num < 0 || *num > kMaxQueues) {
      return bad("x-query-virtio-status", "num-vqs out of range");
    }
    const json::value* broken = so->if_contains("broken");
    const bool is_broken = broken != nullptr && broken->is_bool() && broken->get_bool();
    // "status": {"statuses": ["VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready", ...]}
    bool driver_ok = false;
    if (const json::value* st = so->if_contains("status"); st != nullptr && st->is_object()) {
      if (const json::value* list = st->get_object().if_contains("statuses");
          list != nullptr && list->is_array()) {
        for (const json::value& e : list->get_array()) {
          if (e.is_string() && e.get_string().starts_with("VIRTIO_CONFIG_S_DRIVER_OK")) {
            driver_ok = true;
          }
        }
      }
    }
    for (int64_t q = 0; q < *num; ++q) {
      ROMULUS_ASSIGN_OR_RETURN(json::value reply,
                               qmp.execute("x-query-virtio-queue-status",
                                           json::object{{"path", *path}, {"queue", q}}, deadline));
      ROMULUS_ASSIGN_OR_RETURN(VirtqueueStatus s, parse_virtqueue_status(reply));
      s.path = *path;
      s.driver_ok = driver_ok;
      s.broken = is_broken;
      out.push_back(std::move(s));
    }
  }
  return out;
}

std::string describe_virtqueues(std::span<const VirtqueueStatus> queues) {
  std::string line;
  std::string_view last_path;
  for (const VirtqueueStatus& q : queues) {
    if (!line.empty()) line += "; ";
    if (q.path != last_path) {
      line += q.device;
      if (q.broken) line += " (broken)";
      if (!q.driver_ok) line += " (driver not ready)";
      line += " ";
      last_path = q.path;
    }
    line += fmt::format("queue {}: guest queued {}, QEMU took {}, returned {}", q.queue,
                        q.shadow_avail_idx, q.last_avail_idx, q.used_idx);
    if (q.inuse != 0) line += fmt::format(" ({} taken, not returned)", q.inuse);
  }
  return line.empty() ? std::string("no virtio queues") : line;
}

}  // namespace romulus::vm
