// ReconnectPolicy: how long the primary waits before trying its backup again.
//
// Pure (no clock, no sleeping): the caller asks for the next delay after each
// failed attempt and waits it out on its StopSignal.
//   - after an unreachable backup (refused TCP connect, timeout, a handshake
//     cut off): kFirstRetry, doubling up to kMaxRetry. The first retry is
//     well inside the backup's failover timeout, so a hello lost or damaged
//     on the way is retried before the backup gives up on this primary;
//   - after the backup *refused* the handshake (wrong geometry, another
//     primary connected): kAfterRefusal, since that does not change by
//     retrying fast;
//   - a successful connection starts the sequence again.
#pragma once

#include <algorithm>
#include <chrono>

namespace romulus::checkpoint {

class ReconnectPolicy {
 public:
  static constexpr std::chrono::milliseconds kFirstRetry{100};
  static constexpr std::chrono::milliseconds kMaxRetry{1000};
  static constexpr std::chrono::milliseconds kAfterRefusal{1000};
  // With no backup configured: how often the loop looks again (a `set
  // backup` wakes it at once).
  static constexpr std::chrono::milliseconds kIdleRecheck{1000};

  std::chrono::milliseconds after_failure(bool refused) {
    if (refused) return kAfterRefusal;
    const auto d = next_;
    next_ = std::min(next_ * 2, kMaxRetry);
    return d;
  }
  void on_connected() { next_ = kFirstRetry; }

 private:
  std::chrono::milliseconds next_ = kFirstRetry;
};

}  // namespace romulus::checkpoint
