#include "vm/device_state.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

namespace romulus::vm {

namespace json = boost::json;

namespace {

std::chrono::microseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Result<std::vector<uint8_t>> read_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::from_errno(fmt::format("open {}", path), errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::from_errno(fmt::format("stat {}", path), errno);
  if (st.st_size <= 0 || static_cast<uint64_t>(st.st_size) > kMaxDeviceStateBytes) {
    return Status::corrupt(fmt::format("device state {} has {} bytes (want 1..{})", path,
                                       st.st_size, kMaxDeviceStateBytes));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t have = 0;
  while (have < bytes.size()) {
    ssize_t n = ::read(fd.get(), bytes.data() + have, bytes.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::from_errno(fmt::format("read {}", path), errno);
    if (n == 0) return Status::truncated(fmt::format("device state {} shrank while read", path));
    have += static_cast<size_t>(n);
  }
  return bytes;
}

// A memfd holding `bytes`, its offset back at 0 (migrate-incoming reads it
// from there).
Result<int> memfd_with(std::span<const uint8_t> bytes) {
  int fd = ::memfd_create("romulus-device-state", MFD_CLOEXEC);
  if (fd < 0) return Status::from_errno("memfd_create for the device state", errno);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      return Status::from_errno("write the device state to a memfd", err);
    }
    done += static_cast<size_t>(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) {
    int err = errno;
    ::close(fd);
    return Status::from_errno("lseek the device state memfd", err);
  }
  return fd;
}

std::string string_member(const json::value& v, std::string_view key) {
  const json::object* o = v.if_object();
  if (o == nullptr) return {};
  const json::value* m = o->if_contains(key);
  return (m != nullptr && m->is_string()) ? std::string(m->get_string()) : std::string();
}

// Polls query-migrate until the incoming migration completes or fails.
Status wait_incoming_done(QmpClient& qmp, Deadline deadline) {
  constexpr auto kEventWait = std::chrono::milliseconds(2);
  for (;;) {
    auto info = qmp.execute("query-migrate", {}, deadline);
    if (!info.is_ok()) return info.status();
    std::string status = string_member(*info, "status");
    if (status == "completed") return Status::ok();
    if (status == "failed" || status == "cancelled") {
      std::string why = string_member(*info, "error-desc");
      return Status::refused(fmt::format("QEMU could not load the device state ({}{}{})", status,
                                         why.empty() ? "" : ": ", one_line(why)));
    }
    // A MIGRATION event says when the status changes; query again then, or
    // after a short wait at most.
    auto wait_until = std::min(deadline, Clock::now() + kEventWait);
    auto event = qmp.wait_event("MIGRATION", wait_until);
    if (!event.is_ok() && event.status().code() != StatusCode::kTimeout) return event.status();
    if (Clock::now() >= deadline) {
      return Status::timeout(
          fmt::format("the device state did not load before the deadline "
                      "(migration status '{}')",
                      status));
    }
  }
}

}  // namespace

Status stop_vm(QmpClient& qmp, Deadline deadline) {
  return qmp.execute("stop", {}, deadline).status();
}

Status resume_vm(QmpClient& qmp, Deadline deadline) {
  return qmp.execute("cont", {}, deadline).status();
}

Result<DeviceState> save_device_state(QmpClient& qmp, const std::string& path, Deadline deadline) {
  DeviceState out;
  auto start = Clock::now();
  auto saved = qmp.execute("xen-save-devices-state",
                           json::object{{"filename", path}, {"live", false}}, deadline);
  if (!saved.is_ok()) return saved.status().context("saving the device state");
  out.times.save = since(start);
  start = Clock::now();
  auto bytes = read_file(path);
  if (!bytes.is_ok()) return bytes.status().context("saving the device state");
  out.bytes = std::move(*bytes);
  out.times.read = since(start);
  return out;
}

Result<DeviceState> capture_device_state(QmpClient& qmp, const std::string& path, Deadline deadline,
                                         bool resume) {
  auto start = Clock::now();
  Status stopped = stop_vm(qmp, deadline);
  if (!stopped.is_ok()) return stopped.context("stopping the VM");
  auto stop_time = since(start);
  auto state = save_device_state(qmp, path, deadline);
  if (resume) {
    start = Clock::now();
    Status resumed = resume_vm(qmp, deadline);
    if (!resumed.is_ok()) return resumed.context("resuming the VM");
    if (state.is_ok()) state->times.cont = since(start);
  }
  if (!state.is_ok()) return state.status();
  state->times.stop = stop_time;
  return state;
}

Result<LoadTimes> load_device_state(QmpClient& qmp, std::span<const uint8_t> state,
                                    Deadline deadline, bool resume) {
  if (state.empty() || state.size() > kMaxDeviceStateBytes) {
    return Status::invalid_argument(
        fmt::format("a device state of {} bytes (want 1..{})", state.size(), kMaxDeviceStateBytes));
  }
  LoadTimes times;
  auto start = Clock::now();
  auto what = [](const Status& s) { return s.context("loading the device state"); };
  json::array caps{json::object{{"capability", "x-ignore-shared"}, {"state", true}},
                   json::object{{"capability", "events"}, {"state", true}}};
  auto set =
      qmp.execute("migrate-set-capabilities", json::object{{"capabilities", caps}}, deadline);
  if (!set.is_ok()) return what(set.status());
  ROMULUS_ASSIGN_OR_RETURN(int raw_fd, memfd_with(state));
  Fd fd(raw_fd);
  auto passed = qmp.execute_with_fd("getfd", json::object{{"fdname", kDeviceStateFdName}}, fd.get(),
                                    deadline);
  if (!passed.is_ok()) return what(passed.status());
  times.prepare = since(start);

  start = Clock::now();
  auto incoming =
      qmp.execute("migrate-incoming",
                  json::object{{"uri", fmt::format("fd:{}", kDeviceStateFdName)}}, deadline);
  if (!incoming.is_ok()) return what(incoming.status());
  Status done = wait_incoming_done(qmp, deadline);
  if (!done.is_ok()) {
    if (done.code() == StatusCode::kUnavailable) {
      return Status::unavailable(
          fmt::format("loading the device state: QEMU exited (QEMU 7.2 exits when a state "
                      "does not load; its stderr says why): {}",
                      done.message()));
    }
    return what(done);
  }
  times.load = since(start);
  if (resume) {
    start = Clock::now();
    Status resumed = resume_vm(qmp, deadline);
    if (!resumed.is_ok()) return resumed.context("resuming the VM after loading its devices");
    times.cont = since(start);
  }
  return times;
}

}  // namespace romulus::vm
