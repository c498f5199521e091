#include "checkpoint/vm_guest.h"

#include <fmt/format.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "checkpoint/guest_process.h"
#include "guest/control_page.h"
#include "guest/environment.h"
#include "vm/device_state.h"
#include "vm/qemu_command.h"
#include "vm/virtqueue_status.h"

namespace romulus::checkpoint {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kServicePortVariable = "$ROMULUS_SERVICE_PORT";
constexpr std::string_view kPreloadName = "libromulus_qemu_preload.so";

std::chrono::microseconds since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t);
}

// A private directory for QEMU's QMP socket and the saved device state: on a
// tmpfs (/dev/shm) when there is one, so that saving the devices never waits
// for a disk.
Result<std::string> make_runtime_dir() {
  std::string base = "/dev/shm";
  if (::access(base.c_str(), W_OK) != 0) base = std::filesystem::temp_directory_path().string();
  std::string templ = base + "/romulus-vm-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    return Status::from_errno(fmt::format("creating a directory for QEMU's socket in {}", base),
                              errno);
  }
  return templ;
}

// The user's arguments with $ROMULUS_SERVICE_PORT replaced by the port.
std::vector<std::string> with_service_port(std::vector<std::string> argv,
                                           std::optional<uint16_t> port) {
  for (std::string& a : argv) {
    for (size_t at; (at = a.find(kServicePortVariable)) != std::string::npos;) {
      a.replace(at, kServicePortVariable.size(), port ? std::to_string(*port) : std::string("0"));
    }
  }
  return argv;
}

}  // namespace

Result<std::unique_ptr<VmGuest>> VmGuest::start(const VmSpec& spec) {
  if (spec.argv.empty()) return Status::invalid_argument("--vm needs a QEMU command after --");
  ROMULUS_ASSIGN_OR_RETURN(std::string dir, make_runtime_dir());
  auto cleanup = [&dir] {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  };
  vm::QemuLaunch launch;
  launch.arena_fd = spec.arena_fd;
  launch.arena_bytes = spec.arena_bytes;
  launch.qmp_socket = dir + "/qmp.sock";
  launch.incoming = spec.device_state.has_value();
  auto argv = vm::build_qemu_argv(with_service_port(spec.argv, spec.service_port), launch);
  if (!argv.is_ok()) {
    cleanup();
    return argv.status();
  }
  vm::QemuProcessSpec ps;
  ps.argv = std::move(argv).value();
  ps.inherit_fds = {spec.arena_fd};
  ps.qmp_socket = launch.qmp_socket;
  std::optional<common::SharedMemory> control;
  if (spec.preload) {
    // The preload's side of an SDK guest's attach (guest/guest.h): the arena,
    // a control page and the tracker, in QEMU's environment.
    auto page = common::SharedMemory::create("romulus-control", guest::kControlPageSize);
    if (!page.is_ok()) {
      cleanup();
      return page.status();
    }
    control.emplace(std::move(page).value());
    guest::init_control_page(reinterpret_cast<guest::ControlPage*>(control->data()));
    ps.inherit_fds.push_back(control->fd());
    const char* preloaded = std::getenv("LD_PRELOAD");
    ps.env = {{"LD_PRELOAD", *spec.preload + (preloaded && *preloaded ? std::string(":") + preloaded
                                                                      : std::string())},
              {guest::kEnvArenaFd, std::to_string(spec.arena_fd)},
              {guest::kEnvArenaSize, std::to_string(spec.arena_bytes)},
              {guest::kEnvControlFd, std::to_string(control->fd())},
              {guest::kEnvTracker, std::string(guest::kTrackerUffd)}};
  }
  const auto t0 = Clock::now();
  auto qemu = vm::QemuProcess::start(ps, vm::deadline_in(kStartWithin));
  if (!qemu.is_ok()) {
    cleanup();
    return qemu.status().context("starting the VM");
  }
  std::unique_ptr<VmGuest> g(
      new VmGuest(std::move(qemu).value(), std::move(dir), std::move(control)));
  if (g->control_) {
    // QEMU creates its RAM backend before its monitor answers (QmpClient has
    // negotiated capabilities by now): attached already, or failed, or the
    // library never ran (a wrapper that dropped LD_PRELOAD). A short wait.
    Status attached = wait_for_attach(
        *reinterpret_cast<guest::ControlPage*>(g->control_->data()), kQmpWithin,
        [&g] { return g->poll_exit(); },
        {.failed = "QEMU's guest RAM could not be tracked",
         .before = "before mapping the guest's RAM",
         .missing = "QEMU did not map the guest's RAM (through the preload library)"});
    if (!attached.is_ok()) {
      return attached.context(
          "starting the VM with the uffd tracker (--tracker compare runs QEMU without it)");
    }
  }
  g->start_times_.qemu = since(t0);
  const auto t1 = Clock::now();
  if (spec.device_state) {
    // A takeover: the committed devices over the committed RAM, then run.
    auto loaded = vm::load_device_state(g->qemu_.qmp(), *spec.device_state,
                                        vm::deadline_in(kStartWithin), /*resume=*/false);
    if (!loaded.is_ok()) {
      return loaded.status().context("loading the committed device state into the VM");
    }
    // The virtio queues as loaded, before the guest moves them: the device
    // state's indices against the committed RAM's (vm/virtqueue_status.h).
    auto queues = vm::query_virtqueues(g->qemu_.qmp(), vm::deadline_in(kQmpWithin));
    g->loaded_queues_ = queues.is_ok() ? vm::describe_virtqueues(*queues)
                                       : fmt::format("not read ({})", queues.status().message());
    Status resumed = vm::resume_vm(g->qemu_.qmp(), vm::deadline_in(kQmpWithin));
    if (!resumed.is_ok()) return resumed.context("resuming the VM after loading its devices");
    g->start_times_.load = since(t1);
  }
  return g;
}

uint64_t VmGuest::guest_arena_addr() const {
  if (!control_) return 0;
  return reinterpret_cast<const guest::ControlPage*>(control_->data())
      ->arena_addr.load(std::memory_order_acquire);
}

VmGuest::~VmGuest() {
  if (!exit_status_) qemu_.kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

Status VmGuest::pause() {
  if (poll_exit()) return Status::aborted(*poll_exit());
  vm::QmpClient& qmp = qemu_.qmp();
  const auto t0 = Clock::now();
  Status st = vm::stop_vm(qmp, vm::deadline_in(kQmpWithin));
  if (!st.is_ok()) {
    if (auto gone = exit_after_error()) return Status::aborted(*gone);
    return st.context("stopping the VM");
  }
  stopped_ = true;
  times_.stop = since(t0);
  const auto t1 = Clock::now();
  auto saved = vm::save_device_state(qmp, dir_ + "/devices", vm::deadline_in(kQmpWithin));
  if (!saved.is_ok()) {
    if (auto gone = exit_after_error()) return Status::aborted(*gone);
    return saved.status().context("saving the VM's device state");
  }
  device_state_ = std::move(saved->bytes);
  times_.save = since(t1);
  times_.device_state_bytes = device_state_.size();
  pauses_.fetch_add(1, std::memory_order_relaxed);
  stop_us_.fetch_add(times_.stop.count(), std::memory_order_relaxed);
  save_us_.fetch_add(times_.save.count(), std::memory_order_relaxed);
  state_bytes_.fetch_add(device_state_.size(), std::memory_order_relaxed);
  last_state_bytes_.store(device_state_.size(), std::memory_order_relaxed);
  return Status::ok();
}

Status VmGuest::resume() {
  if (!stopped_) return Status::ok();
  const auto t0 = Clock::now();
  Status st = vm::resume_vm(qemu_.qmp(), vm::deadline_in(kQmpWithin));
  if (!st.is_ok()) {
    if (auto gone = exit_after_error()) return Status::aborted(*gone);
    return st.context("continuing the VM");
  }
  stopped_ = false;
  times_.cont = since(t0);
  cont_us_.fetch_add(times_.cont.count(), std::memory_order_relaxed);
  return Status::ok();
}

VmPauseTotals VmGuest::totals() const {
  VmPauseTotals t;
  t.pauses = pauses_.load(std::memory_order_relaxed);
  t.stop = std::chrono::microseconds(stop_us_.load(std::memory_order_relaxed));
  t.save = std::chrono::microseconds(save_us_.load(std::memory_order_relaxed));
  t.cont = std::chrono::microseconds(cont_us_.load(std::memory_order_relaxed));
  t.device_state_bytes = state_bytes_.load(std::memory_order_relaxed);
  t.last_device_state_bytes = last_state_bytes_.load(std::memory_order_relaxed);
  return t;
}

std::optional<std::string> VmGuest::poll_exit() {
  if (!exit_status_) exit_status_ = qemu_.exited();
  if (!exit_status_) return std::nullopt;
  const int s = *exit_status_;
  if (s > 128) {
    return fmt::format("QEMU was killed by signal {} ({})", s - 128, strsignal(s - 128));
  }
  return fmt::format("QEMU exited with status {}{}", s, s == 0 ? " (the VM shut down)" : "");
}

std::optional<std::string> VmGuest::exit_after_error() {
  const auto until = Clock::now() + kExitAfterError;
  for (;;) {
    if (auto gone = poll_exit()) return gone;
    if (Clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status VmGuest::stop(std::chrono::milliseconds grace) {
  if (exit_status_) return Status::ok();
  Status st = qemu_.stop(grace);
  exit_status_ = qemu_.exited();
  return st;
}

std::optional<std::string> find_qemu_preload(std::string* looked_in) {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    if (looked_in) *looked_in = "nowhere (/proc/self/exe unreadable)";
    return std::nullopt;
  }
  std::string looked;
  for (const char* dir : {"../lib/romulus", "../guest/qemu"}) {
    const std::filesystem::path candidate =
        (exe.parent_path() / dir / kPreloadName).lexically_normal();
    if (::access(candidate.c_str(), R_OK) == 0) return candidate.string();
    looked += (looked.empty() ? "" : ", ") + candidate.string();
  }
  if (looked_in) *looked_in = looked;
  return std::nullopt;
}

Measurements vm_tracker_costs(Measurements m, const std::optional<std::string>& preload,
                              const std::string& looked_in) {
  if (m.uffd_ok && !preload) {
    m.uffd_ok = false;
    m.uffd_reason = fmt::format("{} is not installed (looked in {})", kPreloadName, looked_in);
  }
  m.uffd_sync_ok = false;
  m.uffd_sync_reason =
      "a VM's RAM is written by QEMU threads that a QMP stop leaves running, which uffd-sync's "
      "pause cannot allow";
  return m;
}

}  // namespace romulus::checkpoint
