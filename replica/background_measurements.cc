#include "replica/background_measurements.h"

namespace romulus::replica {

BackgroundMeasurements::~BackgroundMeasurements() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BackgroundMeasurements::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

std::shared_ptr<const checkpoint::Measurements> BackgroundMeasurements::latest() const {
  std::lock_guard lock(mu_);
  return latest_;
}

std::chrono::seconds BackgroundMeasurements::age() const {
  std::lock_guard lock(mu_);
  return std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - measured_at_);
}

void BackgroundMeasurements::loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    auto m = std::make_shared<const checkpoint::Measurements>(checkpoint::measure_tracker_costs());
    lock.lock();
    latest_ = std::move(m);
    measured_at_ = Clock::now();
    cv_.wait_for(lock, kRefresh, [&] { return stop_; });
  }
}

}  // namespace romulus::replica
