// QemuProcess: a QEMU child with inherited fds (the arena) and its QMP
// connection.
//
// start() forks and execs argv (built by build_qemu_argv()) with `env` added to
// its environment, the fds in `inherit_fds` kept at their numbers
// (close-on-exec cleared in the child), stdin from /dev/null, stdout and
// stderr to `log_path` (or the parent's when empty), in its own process
// group, with SIGKILL when the starting thread exits (PR_SET_PDEATHSIG). It
// then connects to the QMP socket, failing early with QEMU's last log lines
// when QEMU exits first ("Machine memory size does not match ..."). An exec
// failure is reported by start() itself.
//
// Threading: one owner thread; call start() from a thread that lives as long
// as the VM should (PR_SET_PDEATHSIG). Move-only; the destructor kills a
// running QEMU (SIGKILL) and reaps it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "vm/qmp_client.h"

namespace romulus::vm {

struct QemuProcessSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH unless it has a '/'
  std::vector<int> inherit_fds;   // kept open in QEMU at the same numbers
  std::string qmp_socket;         // the path of build_qemu_argv()'s -qmp
  std::string log_path;           // QEMU's stdout and stderr (appended); empty: ours
  // Set in QEMU's environment (over the supervisor's variables of the same
  // names): NAME, VALUE.
  std::vector<std::pair<std::string, std::string>> env;
};

class QemuProcess {
 public:
  // How long stop() waits for QEMU to quit before SIGKILL.
  static constexpr auto kQuitGrace = std::chrono::seconds(2);

  // Starts QEMU and connects to its QMP socket before `deadline`.
  static Result<QemuProcess> start(const QemuProcessSpec& spec, Deadline deadline);

  QemuProcess(QemuProcess&& other) noexcept;
  QemuProcess& operator=(QemuProcess&& other) noexcept;
  QemuProcess(const QemuProcess&) = delete;
  QemuProcess& operator=(const QemuProcess&) = delete;
  ~QemuProcess();

  pid_t pid() const { return pid_; }
  QmpClient& qmp() { return *qmp_; }

  // The exit status if QEMU has exited (reaping it), nullopt while it runs.
  // A death by signal N is 128 + N.
  std::optional<int> exited();
  // QMP quit, then SIGKILL after `grace`; reaps. OK when QEMU is gone.
  Status stop(std::chrono::milliseconds grace = kQuitGrace);
  // SIGKILL and reap (a crash, as a test makes one).
  void kill();

 private:
  QemuProcess() = default;
  // Waits for the child until deadline; true once reaped.
  bool reap_until(Deadline deadline);

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::optional<QmpClient> qmp_;
};

// The last `lines` non-empty lines of a log file (within its last 4 KiB),
// joined by " / " on one line, for error messages (QEMU's error and its hint:
// "qemu-system-x86_64: unsupported machine type / Use -machine help to list
// supported machines"); empty if unreadable.
std::string log_tail(const std::string& path, size_t lines = 2);

}  // namespace romulus::vm
