// VmGuest: an unmodified QEMU virtual machine as the primary's guest
// (`romulus primary|backup --vm -- qemu-system-x86_64 ARGS...`; docs/design.md,
// "A virtual machine as the guest").
//
// start() checks the user's QEMU arguments and runs QEMU with the guest's RAM
// in the arena (vm/qemu_command.h: a memory-backend-file over the arena's
// memfd, inherited at its fd number) and Romulus's own QMP socket; on a
// takeover QEMU starts with -incoming defer -S over the committed image, the
// committed device state is loaded into it, its virtio queues are read (for
// the log: loaded_queues()), and the VM continues where the last acknowledged
// checkpoint left it. `$ROMULUS_SERVICE_PORT` in the
// arguments becomes the loopback port the output proxy forwards clients to
// (e.g. hostfwd=tcp:127.0.0.1:$ROMULUS_SERVICE_PORT-:6379), as a shell would
// expand it for a process guest.
//
// A pause is QMP `stop` then `xen-save-devices-state` (the VM's devices,
// without RAM) into a file on a tmpfs; resume is `cont`. The engine takes the
// saved bytes with device_state() and sends them inside the checkpoint (the
// DEVICE_STATE chunk, docs/protocol.md), so RAM and devices commit together.
//
// Dirty RAM is found by one of two trackers (vm_tracker_costs() and
// choose_tracker() pick, as for a program):
//  - uffd: QEMU runs with libromulus_qemu_preload.so (guest/qemu/preload.cc)
//    in LD_PRELOAD, which arms async userfaultfd write-protect over the
//    guest's RAM as QEMU maps it and reports it on a control page; the
//    supervisor scans QEMU's pagemap (make_uffd_tracker with pid() and
//    guest_arena_addr()). A pause then costs the dirty pages, not the arena.
//  - compare: the supervisor compares the arena (its own mapping of the same
//    memfd) with a shadow; QEMU runs as it is.
// uffd-sync is not offered: a QMP stop leaves QEMU's own threads running,
// and they may write guest RAM during the pause, which uffd-sync's pause
// (it lifts the protection of pages it has not copied yet) cannot allow.
//
// Threading: one owner (the primary's start-up, then its engine thread for
// pause/resume/device_state). Move-only; the destructor kills a QEMU that still
// runs.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/tracker_choice.h"
#include "common/shared_memory.h"
#include "common/status.h"
#include "vm/qemu_process.h"

namespace romulus::checkpoint {

struct VmSpec {
  std::vector<std::string> argv;  // the user's QEMU command (after --)
  int arena_fd = -1;              // the arena's memfd (QEMU inherits it at this number)
  uint64_t arena_bytes = 0;
  std::optional<uint16_t> service_port;  // replaces $ROMULUS_SERVICE_PORT in argv
  // Set on a takeover: the committed device state, loaded into a QEMU waiting
  // on -incoming before the VM continues.
  std::optional<std::vector<uint8_t>> device_state;
  // The QEMU preload library (find_qemu_preload()): set, QEMU's writes to
  // guest RAM are tracked with async userfaultfd (guest_arena_addr()).
  std::optional<std::string> preload;
};

// What one pause of the VM cost, for the statistics line and status.
struct VmPauseTimes {
  std::chrono::microseconds stop{}, save{}, cont{};
  size_t device_state_bytes = 0;
};

// Every pause so far, summed (status --json "vm"): read from any thread.
struct VmPauseTotals {
  uint64_t pauses = 0;
  std::chrono::microseconds stop{}, save{}, cont{};
  uint64_t device_state_bytes = 0;
  size_t last_device_state_bytes = 0;
};

// What starting the VM cost (a takeover's share of the failover time).
struct VmStartTimes {
  std::chrono::microseconds qemu{};  // QEMU started and its QMP socket answering
  std::chrono::microseconds load{};  // the committed device state loaded, and cont (takeover)
};

class VmGuest {
 public:
  // How long one QMP step may take before the VM is judged unresponsive.
  static constexpr std::chrono::seconds kQmpWithin{5};
  // How long QEMU may take to start and open its QMP socket (TCG, a busy host).
  static constexpr std::chrono::seconds kStartWithin{30};
  // How long a failed step waits for QEMU's exit before it is an error.
  static constexpr std::chrono::seconds kExitAfterError{3};

  static Result<std::unique_ptr<VmGuest>> start(const VmSpec& spec);
  ~VmGuest();
  VmGuest(const VmGuest&) = delete;
  VmGuest& operator=(const VmGuest&) = delete;

  pid_t pid() const { return qemu_.pid(); }
  // With VmSpec::preload: where QEMU mapped the guest's RAM in its address
  // space, under async write-protect (for make_uffd_tracker); else 0.
  uint64_t guest_arena_addr() const;
  // stop + save the device state; kAborted once QEMU is gone.
  Status pause();
  Status resume();
  bool paused() const { return stopped_; }
  // The device state the last pause() saved (valid until the next one).
  std::span<const uint8_t> device_state() const { return device_state_; }
  const VmPauseTimes& last_pause() const { return times_; }
  const VmStartTimes& start_times() const { return start_times_; }
  // On a takeover: the virtio queues as loaded, before the VM continued
  // ("virtio-net queue 0: guest queued N, QEMU took N, returned N; ...",
  // vm/virtqueue_status.h), for the log; empty on a fresh start.
  const std::string& loaded_queues() const { return loaded_queues_; }
  // Thread-safe.
  VmPauseTotals totals() const;
  // "QEMU exited with status N" once it has (the VM shut down, or failed).
  std::optional<std::string> poll_exit();
  std::optional<int> exit_status() const { return exit_status_; }
  // QMP quit, then SIGKILL after `grace`.
  Status stop(std::chrono::milliseconds grace);
  // After a failed step (a QMP command, the tracker's scan of QEMU's
  // pagemap): QEMU's exit if it comes within kExitAfterError, else nullopt.
  // QEMU is not stopped by a signal, so it may be exiting (the VM shut down)
  // while a pause runs: its monitor closes and its pagemap goes before the
  // kernel reports the exit, and that must read as the VM's end, not as a
  // failed checkpoint.
  std::optional<std::string> exit_after_error();

 private:
  VmGuest(vm::QemuProcess qemu, std::string dir, std::optional<common::SharedMemory> control)
      : qemu_(std::move(qemu)), dir_(std::move(dir)), control_(std::move(control)) {}

  vm::QemuProcess qemu_;
  std::string dir_;  // the QMP socket and the device-state file (removed at the end)
  std::optional<common::SharedMemory> control_;  // the preload's control page
  bool stopped_ = false;
  std::vector<uint8_t> device_state_;
  VmPauseTimes times_;
  VmStartTimes start_times_;
  std::string loaded_queues_;
  // Sums of every pause, for totals() (any thread).
  std::atomic<uint64_t> pauses_{0}, stop_us_{0}, save_us_{0}, cont_us_{0}, state_bytes_{0},
      last_state_bytes_{0};
  std::optional<int> exit_status_;
};

// The preload library, found next to the romulus executable: installed,
// ../lib/romulus/ from its directory; in a build tree, ../guest/qemu/. Its
// path, or nullopt with where it was looked for in `looked_in`.
std::optional<std::string> find_qemu_preload(std::string* looked_in = nullptr);

// The tracker costs measured for a program, as they stand for a VM:
// uffd-sync unavailable (above), and uffd unavailable without the preload
// (`preload` nullopt; `looked_in` says where it was looked for).
Measurements vm_tracker_costs(Measurements m, const std::optional<std::string>& preload,
                              const std::string& looked_in);

// The engine's PauseControl over a VmGuest: a pause stops the VM and saves its
// devices, which device_state() hands to the engine for the checkpoint.
class VmPause final : public PauseControl {
 public:
  explicit VmPause(VmGuest& vm) : vm_(vm) {}
  Status pause(std::chrono::milliseconds) override { return vm_.pause(); }
  Status resume() override { return vm_.resume(); }
  // Asked after a failed step: a QEMU that is exiting is given time to.
  std::optional<std::string> exited() override { return vm_.exit_after_error(); }
  std::optional<protocol::ByteSpan> device_state() override { return vm_.device_state(); }

 private:
  VmGuest& vm_;
};

}  // namespace romulus::checkpoint
