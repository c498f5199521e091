#include "common/service_notify.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#if ROMULUS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace romulus::common {

ServiceNotifier::ServiceNotifier(LogFn log) : log_(std::move(log)) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket == nullptr || *socket == '\0') return;
#if ROMULUS_HAVE_SYSTEMD
  active_ = true;
#else
  if (log_) {
    log_(
        "NOTIFY_SOCKET is set but this romulus was built without libsystemd: no readiness "
        "notifications (install libsystemd-dev and rebuild, or use Type=simple)");
  }
#endif
}

void ServiceNotifier::state_changed(std::string_view role, std::string_view state,
                                    ServicePhase phase) {
  if (!active_) return;
  std::lock_guard lock(mu_);
  std::string message = fmt::format("STATUS={}: {}", role, state);
  if (phase == ServicePhase::kReady && !ready_sent_) {
    message += "\nREADY=1";
    ready_sent_ = true;
  }
  if (phase == ServicePhase::kStopping && !stopping_sent_) {
    message += "\nSTOPPING=1";
    stopping_sent_ = true;
  }
  send(message);
}

void ServiceNotifier::send(const std::string& message) {
  int rc = -ENOSYS;
#if ROMULUS_HAVE_SYSTEMD
  // unset_environment = 0: a node that changes role keeps notifying.
  rc = sd_notify(0, message.c_str());
#else
  (void)message;
#endif
  if (rc < 0 && !error_logged_ && log_) {
    error_logged_ = true;
    log_(
        fmt::format("cannot notify the service manager at NOTIFY_SOCKET: {} (is it still "
                    "running?); carrying on without notifications",
                    std::strerror(-rc)));
  }
}

}  // namespace romulus::common
