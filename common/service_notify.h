// ServiceNotifier: tells the service manager that started this process how
// the node is doing, over the sd_notify protocol (systemd's Type=notify,
// through libsystemd; dist/systemd/ holds the units that use it).
//
// What it sends, each as one datagram to $NOTIFY_SOCKET:
//   STATUS=<role>: <state>   on every change of role or state (the names
//                            `romulus status` reports);
//   READY=1                  once, the first time the node becomes what its
//                            unit waits for (the caller decides: a primary
//                            that is protected, a backup that holds a
//                            consistent image);
//   STOPPING=1               once, when the node begins to shut down.
// Inactive (every call a no-op) when NOTIFY_SOCKET is unset. Built without
// libsystemd (ROMULUS_SYSTEMD=OFF, or libsystemd-dev missing), it says so
// once in the log if NOTIFY_SOCKET is set, and sends nothing.
//
// Thread-safe: state changes arrive from the engine, io and witness threads;
// one mutex keeps the datagrams in the order the changes were made.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace romulus::common {

enum class ServicePhase {
  kStarting,  // not yet what the unit waits for
  kReady,     // what the unit waits for: send READY=1 (once)
  kStopping,  // shutting down: send STOPPING=1 (once)
};

class ServiceNotifier {
 public:
  using LogFn = std::function<void(const std::string&)>;
  explicit ServiceNotifier(LogFn log);

  // Whether a service manager listens (NOTIFY_SOCKET set and libsystemd built in).
  bool active() const { return active_; }

  // The node's role or state changed.
  void state_changed(std::string_view role, std::string_view state, ServicePhase phase);

 private:
  void send(const std::string& message);

  LogFn log_;
  bool active_ = false;
  std::mutex mu_;  // guards the fields below and orders the datagrams
  bool ready_sent_ = false, stopping_sent_ = false, error_logged_ = false;
};

}  // namespace romulus::common
