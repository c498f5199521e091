#include "checkpoint/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace romulus::checkpoint {
namespace {

template <typename Get>
Distribution summarize(const std::deque<EpochRecord>& recent, Get get, int64_t all_time_max) {
  Distribution d;
  d.max = all_time_max;
  if (recent.empty()) return d;
  std::vector<int64_t> v;
  v.reserve(recent.size());
  for (const auto& r : recent) v.push_back(get(r));
  std::sort(v.begin(), v.end());
  d.p50 = v[(v.size() - 1) * 50 / 100];
  d.p99 = v[(v.size() - 1) * 99 / 100];
  return d;
}

Distribution summarize_values(const std::deque<int64_t>& values, int64_t all_time_max) {
  Distribution d;
  d.max = all_time_max;
  if (values.empty()) return d;
  std::vector<int64_t> v(values.begin(), values.end());
  std::sort(v.begin(), v.end());
  d.p50 = v[(v.size() - 1) * 50 / 100];
  d.p99 = v[(v.size() - 1) * 99 / 100];
  return d;
}

double ms(int64_t us) { return static_cast<double>(us) / 1000.0; }

int64_t micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace

int64_t pause_phase_us(const EpochRecord& r, PausePhase p) {
  switch (p) {
    case PausePhase::kStop:
      return r.gate_wait_us;
    case PausePhase::kCollect:
      return r.collect_us;
    case PausePhase::kCopy:
      return r.copy_us;
    case PausePhase::kResume:
      return std::max<int64_t>(0, r.pause_us - r.gate_wait_us - r.collect_us - r.copy_us);
  }
  return 0;
}

void StatsRecorder::record_epoch(const EpochRecord& r) {
  pause_seconds_.observe(static_cast<double>(r.pause_us) / 1e6);
  int64_t phase_us[std::size(kPausePhases)];
  for (const auto& [p, name] : kPausePhases) {
    const auto i = static_cast<size_t>(p);
    phase_us[i] = pause_phase_us(r, p);
    pause_phase_seconds_[i].observe(static_cast<double>(phase_us[i]) / 1e6);
  }
  std::lock_guard lock(mu_);
  totals_.epochs++;
  totals_.last = r;
  totals_.dirty_pages_total += r.dirty_pages;
  totals_.raw_bytes_total += r.raw_bytes;
  totals_.wire_bytes_total += r.wire_bytes;
  if (r.stretched) totals_.stretched_intervals++;
  if (r.sent_while_paused) totals_.overflowed_staging++;
  totals_.copied_after_resume_total += r.copied_after_resume;
  totals_.copied_on_write_total += r.copied_on_write;
  totals_.pause_us.max = std::max(totals_.pause_us.max, r.pause_us);
  for (size_t i = 0; i < std::size(kPausePhases); ++i) {
    totals_.pause_phase_us[i].max = std::max(totals_.pause_phase_us[i].max, phase_us[i]);
  }
  totals_.interval_us.max = std::max(totals_.interval_us.max, r.interval_us);
  totals_.encode_us.max = std::max(totals_.encode_us.max, r.encode_us);
  recent_.push_back(r);
  if (recent_.size() > window_) recent_.pop_front();
  switch (r.trigger) {
    case CheckpointTrigger::kSync:
      totals_.sync_checkpoints++;
      break;
    case CheckpointTrigger::kTimer:
      totals_.timer_checkpoints++;
      window_timer_++;
      break;
    case CheckpointTrigger::kOutput:
      totals_.output_checkpoints++;
      if (r.guest_waiting) totals_.guest_waiting_checkpoints++;
      window_output_++;
      break;
  }
  totals_.stopped_us_total += r.pause_us;
  totals_.fault_us_total += r.fault_us;
  const auto at = r.paused_at == std::chrono::steady_clock::time_point{}
                      ? std::chrono::steady_clock::now()
                      : r.paused_at;
  if (first_pause_ == std::chrono::steady_clock::time_point{}) first_pause_ = at;
  stops_.push_back(Stop{at, r.pause_us, r.trigger});
  window_stopped_us_ += r.pause_us;
  // Pruned here too, so the window stays bounded when nothing reads it.
  prune_stops(at);
  if (r.output_held_at != std::chrono::steady_clock::time_point{}) {
    // Output read while the pause was starting may be noted just after it began.
    record_hop(OutputHop::kWait, std::max<int64_t>(0, micros(r.paused_at - r.output_held_at)));
    record_hop(OutputHop::kPause, r.pause_us);
    record_hop(OutputHop::kSend, r.encode_us);
  }
}

void StatsRecorder::record_hop(OutputHop h, int64_t us) {
  const auto i = static_cast<size_t>(h);
  output_hop_seconds_[i].observe(static_cast<double>(us) / 1e6);
  output_hops_[i].push_back(us);
  if (output_hops_[i].size() > window_) output_hops_[i].pop_front();
  auto& max = totals_.output_hop_us[i].max;
  max = std::max(max, us);
}

void StatsRecorder::prune_stops(std::chrono::steady_clock::time_point now) const {
  while (!stops_.empty() && stops_.front().at < now - kRateWindow) {
    const Stop& old = stops_.front();
    window_stopped_us_ -= old.pause_us;
    if (old.trigger == CheckpointTrigger::kTimer) window_timer_--;
    if (old.trigger == CheckpointTrigger::kOutput) window_output_--;
    stops_.pop_front();
  }
}

void StatsRecorder::fill_window(StatsSnapshot& s, std::chrono::steady_clock::time_point now) const {
  prune_stops(now);
  if (first_pause_ == std::chrono::steady_clock::time_point{}) return;
  const double span_us = static_cast<double>(
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::min<std::chrono::steady_clock::duration>(now - first_pause_, kRateWindow))
          .count());
  if (span_us <= 0) return;
  s.stopped_fraction = std::min(1.0, static_cast<double>(window_stopped_us_) / span_us);
  s.timer_checkpoints_per_sec = static_cast<double>(window_timer_) * 1e6 / span_us;
  s.output_checkpoints_per_sec = static_cast<double>(window_output_) * 1e6 / span_us;
}

void StatsRecorder::record_sent(uint64_t epoch, std::chrono::steady_clock::time_point when,
                                bool output) {
  std::lock_guard lock(mu_);
  totals_.sent_epoch = std::max(totals_.sent_epoch, epoch);
  unacked_.push_back({epoch, when, output});
  if (unacked_.size() > window_) unacked_.pop_front();
}

void StatsRecorder::record_ack(uint64_t epoch, std::chrono::steady_clock::time_point when) {
  std::lock_guard lock(mu_);
  totals_.acked_epoch = std::max(totals_.acked_epoch, epoch);
  while (!unacked_.empty() && unacked_.front().epoch <= epoch) {
    const int64_t us = std::max<int64_t>(0, micros(when - unacked_.front().when));
    if (unacked_.front().output) {
      // Its output is released by this ack (an ack covers every epoch <= its own).
      totals_.output_paths++;
      record_hop(OutputHop::kAck, us);
    }
    if (unacked_.front().epoch == epoch) {
      ack_latencies_.push_back(us);
      if (ack_latencies_.size() > window_) ack_latencies_.pop_front();
      max_ack_latency_us_ = std::max(max_ack_latency_us_, us);
    }
    unacked_.pop_front();
  }
}

void StatsRecorder::record_postponed() {
  std::lock_guard lock(mu_);
  totals_.postponed_pauses++;
}

void StatsRecorder::record_sync_progress(uint64_t sent, uint64_t total, uint64_t rounds,
                                         int64_t duration_us) {
  std::lock_guard lock(mu_);
  totals_.sync_pages_sent = sent;
  totals_.sync_pages_total = total;
  totals_.sync_rounds = rounds;
  totals_.sync_duration_us = duration_us;
}

void StatsRecorder::record_cache(uint64_t lookups, uint64_t hits, uint64_t misses,
                                 uint64_t evictions, uint64_t overflows) {
  std::lock_guard lock(mu_);
  totals_.cache_lookups = lookups;
  totals_.cache_hits = hits;
  totals_.cache_misses = misses;
  totals_.cache_evictions = evictions;
  totals_.cache_overflows = overflows;
}

StatsSnapshot StatsRecorder::totals() const {
  std::lock_guard lock(mu_);
  StatsSnapshot s = totals_;
  fill_window(s, std::chrono::steady_clock::now());
  return s;
}

StatsSnapshot StatsRecorder::snapshot() const {
  std::lock_guard lock(mu_);
  StatsSnapshot s = totals_;
  fill_window(s, std::chrono::steady_clock::now());
  s.pause_us = summarize(
      recent_, [](const EpochRecord& r) { return r.pause_us; }, totals_.pause_us.max);
  for (const auto& [p, name] : kPausePhases) {
    const auto i = static_cast<size_t>(p);
    s.pause_phase_us[i] = summarize(
        recent_, [phase = p](const EpochRecord& r) { return pause_phase_us(r, phase); },
        totals_.pause_phase_us[i].max);
  }
  s.interval_us = summarize(
      recent_, [](const EpochRecord& r) { return r.interval_us; }, totals_.interval_us.max);
  s.encode_us = summarize(
      recent_, [](const EpochRecord& r) { return r.encode_us; }, totals_.encode_us.max);
  s.ack_latency_us = summarize_values(ack_latencies_, max_ack_latency_us_);
  for (size_t i = 0; i < std::size(kOutputHops); ++i) {
    s.output_hop_us[i] = summarize_values(output_hops_[i], totals_.output_hop_us[i].max);
  }
  s.compression_ratio = s.wire_bytes_total == 0 ? 0.0
                                                : static_cast<double>(s.raw_bytes_total) /
                                                      static_cast<double>(s.wire_bytes_total);
  int64_t window_us = 0;
  uint64_t window_bytes = 0;
  for (const auto& r : recent_) {
    window_us += r.interval_us;
    window_bytes += r.wire_bytes;
  }
  s.wire_bytes_per_sec =
      window_us > 0 ? static_cast<double>(window_bytes) * 1e6 / static_cast<double>(window_us)
                    : 0.0;
  return s;
}

std::string format_stats_line(const StatsSnapshot& s) {
  const double hit_rate = s.cache_lookups == 0 ? 0.0
                                               : 100.0 * static_cast<double>(s.cache_hits) /
                                                     static_cast<double>(s.cache_lookups);
  return fmt::format(
      "epoch {} (acked {}): interval p50 {:.1f} ms, pause p50 {:.2f} ms p99 {:.2f} ms max "
      "{:.2f} ms, {} dirty pages last, ratio {:.1f}x, {:.1f} MB/s on the wire, cache hits "
      "{:.0f}%, ack p99 {:.1f} ms{}",
      s.last.epoch, s.acked_epoch, ms(s.interval_us.p50), ms(s.pause_us.p50), ms(s.pause_us.p99),
      ms(s.pause_us.max), s.last.dirty_pages, s.compression_ratio, s.wire_bytes_per_sec / 1e6,
      hit_rate, ms(s.ack_latency_us.p99),
      s.stretched_intervals ? fmt::format(", {} intervals stretched", s.stretched_intervals)
                            : std::string());
}

boost::json::object stats_to_json(const StatsSnapshot& s) {
  namespace json = boost::json;
  auto dist = [](const Distribution& d) {
    return json::object{{"p50", ms(d.p50)}, {"p99", ms(d.p99)}, {"max", ms(d.max)}};
  };
  json::object o;
  o["epochs"] = s.epochs;
  o["sent_epoch"] = s.sent_epoch;
  o["acked_epoch"] = s.acked_epoch;
  o["stretched_intervals"] = s.stretched_intervals;
  o["postponed_pauses"] = s.postponed_pauses;
  o["overflowed_staging"] = s.overflowed_staging;
  o["copied_after_resume_total"] = s.copied_after_resume_total;
  o["copied_on_write_total"] = s.copied_on_write_total;
  o["pause_ms"] = dist(s.pause_us);
  json::object phases;
  for (const auto& [p, name] : kPausePhases) {
    phases[name] = dist(s.pause_phase_us[static_cast<size_t>(p)]);
  }
  o["pause_phases_ms"] = std::move(phases);
  o["interval_ms"] = dist(s.interval_us);
  o["encode_ms"] = dist(s.encode_us);
  o["ack_latency_ms"] = dist(s.ack_latency_us);
  json::object path{{"checkpoints", s.output_paths}};
  for (OutputHop h : kOutputHops) {
    path[output_hop_name(h)] = dist(s.output_hop_us[static_cast<size_t>(h)]);
  }
  o["output_path_ms"] = std::move(path);
  o["dirty_pages_total"] = s.dirty_pages_total;
  o["raw_bytes_total"] = s.raw_bytes_total;
  o["wire_bytes_total"] = s.wire_bytes_total;
  o["compression_ratio"] = s.compression_ratio;
  o["wire_bytes_per_sec"] = s.wire_bytes_per_sec;
  o["last"] = json::object{{"epoch", s.last.epoch},
                           {"dirty_pages", s.last.dirty_pages},
                           {"wire_bytes", s.last.wire_bytes},
                           {"copied_after_resume", s.last.copied_after_resume},
                           {"copied_on_write", s.last.copied_on_write},
                           {"pause_ms", ms(s.last.pause_us)}};
  o["checkpoints"] = json::object{{"sync", s.sync_checkpoints},
                                  {"timer", s.timer_checkpoints},
                                  {"output", s.output_checkpoints},
                                  {"output_guest_waiting", s.guest_waiting_checkpoints}};
  o["stopped_ms_total"] = ms(s.stopped_us_total);
  o["fault_ms_total"] = ms(s.fault_us_total);
  o["recent"] =
      json::object{{"window_s", static_cast<double>(StatsRecorder::kRateWindow.count())},
                   {"guest_stopped_fraction", s.stopped_fraction},
                   {"checkpoints_per_sec", json::object{{"timer", s.timer_checkpoints_per_sec},
                                                        {"output", s.output_checkpoints_per_sec}}}};
  o["initial_sync"] = json::object{{"pages_sent", s.sync_pages_sent},
                                   {"pages_total", s.sync_pages_total},
                                   {"rounds", s.sync_rounds},
                                   {"duration_ms", ms(s.sync_duration_us)}};
  o["cache"] = json::object{{"lookups", s.cache_lookups},
                            {"hits", s.cache_hits},
                            {"misses", s.cache_misses},
                            {"evictions", s.cache_evictions},
                            {"overflows", s.cache_overflows}};
  return o;
}

}  // namespace romulus::checkpoint
