#include "common/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace romulus::common {

void Logger::set_role(std::string role) {
  std::lock_guard lock(mu_);
  role_ = std::move(role);
}

void Logger::operator()(const std::string& message) const {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::lock_guard lock(mu_);
  std::fprintf(stderr, "%s.%03lld romulus %s: %s\n", stamp, static_cast<long long>(ms),
               role_.c_str(), message.c_str());
  std::fflush(stderr);
}

}  // namespace romulus::common
