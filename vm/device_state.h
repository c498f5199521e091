// Device state: a VM's devices (CPUs, interrupt controllers, timers, virtio
// queues, ...) without its RAM, saved on the primary at every checkpoint and
// loaded on the backup at takeover, the Remus way.
//
// Save (the primary's pause): with the VM stopped, QMP
// `xen-save-devices-state {filename, live: false}` writes every device's
// state (QEMU's migration stream minus RAM: some 80 KB for the example VM,
// 2-6 ms) to a file, which is read back. Despite its name the command is not
// Xen-only. It carries no machine description when QEMU runs with
// suppress-vmdesc=on and migration.send-configuration=off (qemu_command.h).
//
// Load (the takeover): on a QEMU started with the same arguments, -incoming
// defer and -S, over a copy of the RAM (the committed image):
// `migrate-set-capabilities` x-ignore-shared (RAM is the shared arena,
// already in place), `getfd` of a memfd holding the saved bytes, and
// `migrate-incoming fd:NAME`; then query-migrate until it completes, then
// `cont`. (`xen-load-devices-state` asserts in Debian's QEMU 7.2: not used.
// fd: loads in ~18 ms where exec:cat took ~46 ms, and needs no shell.) A
// state that fails to load makes QEMU 7.2 exit: the error then says so.
//
// Every step has a deadline and is timed; the durations come back so callers
// can report what a pause and a takeover cost. Threading: the QmpClient's.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "vm/qmp_client.h"

namespace romulus::vm {

// A saved device state bigger than this is refused (QEMU's for the example
// VM is ~80 KB; RAM is never in it).
inline constexpr size_t kMaxDeviceStateBytes = size_t{64} << 20;
// The getfd name the load passes the saved state under.
inline constexpr std::string_view kDeviceStateFdName = "romulus-device-state";

struct SaveTimes {
  std::chrono::microseconds stop{};  // QMP stop (capture_device_state() only)
  std::chrono::microseconds save{};  // xen-save-devices-state
  std::chrono::microseconds read{};  // reading the file back
  std::chrono::microseconds cont{};  // QMP cont (capture_device_state() with resume only)
};

struct DeviceState {
  std::vector<uint8_t> bytes;
  SaveTimes times;
};

struct LoadTimes {
  std::chrono::microseconds prepare{};  // capabilities, the memfd and getfd
  std::chrono::microseconds load{};     // migrate-incoming until query-migrate says completed
  std::chrono::microseconds cont{};     // QMP cont (zero when not resumed)
};

// QMP stop: the VM's CPUs stop (the STOP event follows). Idempotent.
Status stop_vm(QmpClient& qmp, Deadline deadline);
// QMP cont: the VM runs again.
Status resume_vm(QmpClient& qmp, Deadline deadline);

// Saves the device state of a VM that is stopped (the caller stopped it) into
// `path` (QEMU creates or truncates it; best on a tmpfs), and returns the
// bytes. Only times.save and times.read are set.
Result<DeviceState> save_device_state(QmpClient& qmp, const std::string& path, Deadline deadline);

// The whole pause of a VM in one call: stop, save into `path`, and cont
// unless `resume` is false (then the caller resumes with resume_vm()).
Result<DeviceState> capture_device_state(QmpClient& qmp, const std::string& path, Deadline deadline,
                                         bool resume = true);

// Loads `state` into a QEMU started with -incoming defer -S and, if `resume`,
// continues the VM. Errors: a QMP refusal, a load that failed (QEMU's reason
// from query-migrate, or that QEMU exited), the deadline.
Result<LoadTimes> load_device_state(QmpClient& qmp, std::span<const uint8_t> state,
                                    Deadline deadline, bool resume = true);

}  // namespace romulus::vm
