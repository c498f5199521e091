// Logger: the one log line format of a `romulus` process.
//
//   14:03:07.412 romulus backup: TAKING OVER (...)
//
// Local wall-clock time to the millisecond, the process's current role, the
// message. Lines go to stderr (systemd's journal, or the operator's
// terminal), one write each. Thread-safe; the role may change at takeover.
#pragma once

#include <mutex>
#include <string>

namespace romulus::common {

class Logger {
 public:
  explicit Logger(std::string role) : role_(std::move(role)) {}
  void set_role(std::string role);
  void operator()(const std::string& message) const;

 private:
  mutable std::mutex mu_;
  std::string role_;
};

}  // namespace romulus::common
