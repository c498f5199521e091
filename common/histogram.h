// Histogram: cumulative bucket counts for a Prometheus histogram, recorded
// where each sample is taken (the epoch engine's pause, the proxy's added
// latency) and read by a scrape at any time.
//
// Bounds are fixed at construction (seconds, ascending, +Inf implied).
// observe() is lock-free and wait-free: one relaxed atomic add to the
// sample's bucket and one to the sum (in nanoseconds). A reader sums the
// buckets itself (Snapshot), so the count is the sum of the buckets and never
// disagrees with them; relaxed loads may miss a sample that is being added,
// which the next scrape sees. Thread-safe; no allocation after construction.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

namespace romulus::common {

class Histogram {
 public:
  // Pause and latency bounds, 100 µs to 10 s: short pauses and replies are
  // the rule; seconds mean a stall worth seeing.
  static std::vector<double> latency_bounds() {
    return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
            0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  }

  explicit Histogram(std::vector<double> bounds = latency_bounds())
      : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
    for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
  }
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double seconds) {
    // A sample equal to a bound belongs to that bound's bucket (le = "less or equal").
    const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), seconds) -
                                         bounds_.begin());
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    const double ns = seconds > 0 ? seconds * 1e9 : 0;
    sum_ns_.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<double> bounds;        // upper bounds, +Inf not included
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries, last = count
    double sum_seconds = 0;
    uint64_t count() const { return cumulative.empty() ? 0 : cumulative.back(); }
  };

  Snapshot snapshot() const {
    Snapshot s;
    s.bounds = bounds_;
    s.cumulative.resize(bounds_.size() + 1);
    uint64_t running = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      running += counts_[i].load(std::memory_order_relaxed);
      s.cumulative[i] = running;
    }
    s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace romulus::common
