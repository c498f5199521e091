// checkpoint_rate_bench: how many checkpoints a second the primary sustains, and
// what protection costs the guest.
//
//   checkpoint_rate_bench [--section rate|overhead|all] [--trackers uffd,compare]
//                         [--intervals 10,25,50] [--pages-per-epoch 1000[,...]]
//                         [--rate-span 8192] [--spans 1024,8192] [--seconds S]
//                         [--arena-mib 256] [--csv FILE]
//
// rate: romulus-dirtier (sparse pattern, random pages of an 8192-page = 32 MiB
// working set, warmed up like below) writes pages-per-epoch pages per interval
// (1,000 pages every 10 ms = 100,000 pages/s); the real EpochEngine checkpoints it
// with EpochEngine::run() into a NullTransport (what `romulus primary --backup
// null` does) for S seconds after the initial sync. Reported: checkpoints per
// second (epochs / wall time of run()); per epoch, timed by a PauseControl wrapper
// around the guest: the interval (pause start to pause start), the pause (pause()
// called -> resume() returned, the same span as EpochRecord.pause_us) and its stop
// (gate + SIGSTOP + wait until stopped); dirty pages per epoch; stretched
// intervals; the engine's own EpochRecord split (stop+collect, copy, encode);
// and the page writes per second the dirtier achieved during the run (under uffd
// every first write to a page in an epoch is a fault). ROMULUS_BENCH_DEBUG=1 in
// the environment prints every epoch's record on stderr. Several
// --pages-per-epoch values sweep the dirty rate (a row per tracker, interval
// and value); --csv FILE writes the rate rows as CSV as well
// (bench/plot_checkpoint_rate.py plots checkpoint rate against dirty rate).
//
// overhead: romulus-dirtier as fast as it can (--pages-per-sec 0) on a working set
// of --spans pages: page writes per second over S seconds, unprotected (started
// the same way, on the same kind of arena, but no tracker and no engine) and
// protected by each tracker at a 50 ms interval. The rate is read from the
// dirtier's own counter in its arena (DirtierState::writes, what it prints at
// exit divided by its lifetime), over the measured window only. Every mode
// starts the same way: the arena memfd is fallocated, the dirtier warms up
// until it made 5 x span writes (so it has touched ~99% of its pages), then
// (protected) the tracker is created and the initial sync runs, then the window
// starts.
//
// All rows come from the same run, one after another, on whatever the machine is
// doing at the time: compare rows of one run, not numbers across runs. A plain
// main, not Google Benchmark: each row is a multi-second run of a real guest.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/offset_ptr.hpp>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/stats.h"
#include "checkpoint/transport.h"
#include "common/shared_memory.h"
#include "protocol/page.h"
#include "tests/support/guest_paths.h"

namespace romulus::bench {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using protocol::kPageSize;

// Forwards to the guest and times each pause: stop = pause() call (gate + SIGSTOP +
// wait until stopped); pause = pause() called -> resume() returned, which is
// exactly the engine's EpochRecord.pause_us, but per epoch.
//
// It also keeps the engine's EpochRecord of every epoch: on each pause() it
// takes the previous epoch's record from the StatsRecorder, which therefore
// should have a window of 1 (the snapshot is then cheap), before timing starts.
class TimedPause final : public checkpoint::PauseControl {
 public:
  TimedPause(checkpoint::GuestProcess& g, const checkpoint::StatsRecorder& stats)
      : g_(g), stats_(stats) {
    starts_.reserve(100000);
    stops_.reserve(100000);
    pauses_.reserve(100000);
    records_.reserve(100000);
  }
  Status pause(std::chrono::milliseconds t) override {
    take_record();
    start_ = Clock::now();
    Status st = g_.pause(t);
    if (st.is_ok() && starts_.size() < starts_.capacity()) {
      starts_.push_back(start_);
      stops_.push_back(ms(Clock::now() - start_));
    }
    return st;
  }
  Status resume() override {
    Status st = g_.resume();
    if (pauses_.size() < stops_.size()) pauses_.push_back(ms(Clock::now() - start_));
    return st;
  }
  std::optional<std::string> exited() override { return g_.poll_exit(); }
  // Forgets everything so far (the initial sync).
  void clear() {
    take_record();
    starts_.clear();
    stops_.clear();
    pauses_.clear();
    records_.clear();
  }
  // Takes the last epoch's record if it is new; call once more after the run.
  void take_record() {
    const checkpoint::EpochRecord last = stats_.snapshot().last;
    if (last.epoch > last_epoch_ && records_.size() < records_.capacity()) {
      records_.push_back(last);
      last_epoch_ = last.epoch;
    }
  }
  // One field of every record, in ms.
  std::vector<double> field(int64_t checkpoint::EpochRecord::*member) const {
    std::vector<double> v;
    for (const auto& r : records_) v.push_back(static_cast<double>(r.*member) / 1000.0);
    return v;
  }
  // Stop (gate + SIGSTOP) plus collection, ms.
  std::vector<double> stop_and_collect() const {
    std::vector<double> v;
    for (const auto& r : records_)
      v.push_back(static_cast<double>(r.gate_wait_us + r.collect_us) / 1000.0);
    return v;
  }
  // Pause start to pause start, ms.
  std::vector<double> intervals() const {
    std::vector<double> v;
    for (size_t i = 1; i < starts_.size(); ++i) v.push_back(ms(starts_[i] - starts_[i - 1]));
    return v;
  }
  const std::vector<double>& stops() const { return stops_; }
  const std::vector<double>& pauses() const { return pauses_; }

 private:
  static double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  }
  checkpoint::GuestProcess& g_;
  const checkpoint::StatsRecorder& stats_;
  uint64_t last_epoch_ = 0;
  std::vector<checkpoint::EpochRecord> records_;
  Clock::time_point start_{};
  std::vector<Clock::time_point> starts_;
  std::vector<double> stops_, pauses_;
};

// The dirtier's state in its arena, as examples/dirtier/dirtier.cc lays it out.
struct DirtierState {
  boost::interprocess::offset_ptr<uint8_t> region;
  uint64_t span;
  uint64_t writes;  // page writes since the dirtier started
};

// romulus-dirtier on its own arena, its stdout captured in a temporary file.
struct Dirtier {
  common::SharedMemory arena, control;
  std::optional<checkpoint::GuestProcess> proc;
  std::unique_ptr<checkpoint::DirtyTracker> tracker;
  double tracker_setup_seconds = 0;  // creating the tracker (compare: copying the arena)
  FILE* out = nullptr;
  const volatile uint64_t* writes = nullptr;

  Dirtier() = default;
  Dirtier(const Dirtier&) = delete;
  Dirtier& operator=(const Dirtier&) = delete;
  ~Dirtier() {
    tracker.reset();
    proc.reset();
    if (out != nullptr) std::fclose(out);
  }

  // Starts the dirtier; tracker_name "uffd" makes it arm userfaultfd. The arena's
  // pages are allocated first (fallocate), so that no mode pays for the memfd's
  // first-touch allocation inside its measurement (it is very slow in this VM).
  Status start(const std::string& tracker_name, size_t arena_bytes, std::vector<std::string> args) {
    ROMULUS_ASSIGN_OR_RETURN(arena, common::SharedMemory::create("bench-arena", arena_bytes));
    if (fallocate(arena.fd(), 0, 0, static_cast<off_t>(arena_bytes)) != 0) {
      return Status::from_errno("fallocate arena", errno);
    }
    ROMULUS_ASSIGN_OR_RETURN(control, common::SharedMemory::create("bench-control", 4096));
    checkpoint::GuestSpec spec;
    spec.argv = {romulus::testing::dirtier_path()};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.arena_fd = arena.fd();
    spec.arena_size = arena.size();
    spec.control_fd = control.fd();
    spec.tracker = tracker_name == "uffd" ? "uffd" : "compare";
    // The guest shares our stdout: point it at a temporary file while it starts.
    out = std::tmpfile();
    if (out == nullptr) return Status::from_errno("tmpfile", errno);
    std::fflush(stdout);
    const int saved = dup(STDOUT_FILENO);
    dup2(fileno(out), STDOUT_FILENO);
    auto started = checkpoint::GuestProcess::start(spec);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    if (!started.is_ok()) return started.status();
    proc.emplace(std::move(started).value());
    ROMULUS_RETURN_IF_ERROR(proc->wait_attached(30s));
    return find_counter();
  }

  // Waits until the dirtier has made `writes` page writes (e.g. 5x its span: then
  // it has touched ~99% of its pages, so none of the modes measures first touches).
  Status warm_up(uint64_t target) {
    const auto deadline = Clock::now() + 30s;
    while (*this->writes < target) {
      if (Clock::now() > deadline) return Status::timeout("dirtier warm-up");
      std::this_thread::sleep_for(5ms);
    }
    return Status::ok();
  }

  // Creates the tracker ("uffd" or "compare"); "none" creates nothing.
  Status make_tracker(const std::string& tracker_name) {
    const auto t0 = Clock::now();
    if (tracker_name == "uffd") {
      ROMULUS_ASSIGN_OR_RETURN(tracker,
                               checkpoint::make_uffd_tracker(proc->pid(), proc->guest_arena_addr(),
                                                             arena.data(), arena.size()));
    } else if (tracker_name == "compare") {
      ROMULUS_ASSIGN_OR_RETURN(tracker,
                               checkpoint::make_compare_tracker(arena.data(), arena.size()));
    }
    tracker_setup_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return Status::ok();
  }

  // Finds DirtierState::writes through our own mapping of the arena, waiting
  // until the dirtier has set it up. Reading it while the guest runs is a
  // benign race (an aligned 8-byte load).
  Status find_counter() {
    namespace bip = boost::interprocess;
    const auto deadline = Clock::now() + 10s;
    while (Clock::now() < deadline) {
      bip::managed_external_buffer segment(bip::open_only, arena.data(), arena.size());
      auto [state, n] = segment.find<DirtierState>("romulus-dirtier");
      if (state != nullptr && n == 1 && state->region != nullptr) {
        writes = &state->writes;
        return Status::ok();
      }
      if (auto exit = proc->poll_exit()) return Status::aborted(*exit);
      std::this_thread::sleep_for(10ms);
    }
    return Status::timeout("romulus-dirtier never set up its state");
  }

  // Stops the guest (SIGTERM: it prints its rate and exits) unless it has exited
  // already; returns the page writes per second it printed (0 if none).
  double finish() {
    if (!proc->exit_status() && !proc->poll_exit()) (void)proc->stop(5s);
    std::fflush(out);
    std::rewind(out);
    char line[512];
    double rate = 0;
    while (std::fgets(line, sizeof(line), out) != nullptr) {
      const char* p = std::strstr(line, "s (");
      if (p != nullptr) rate = std::strtod(p + 3, nullptr);
    }
    return rate;
  }
};

double percentile(std::vector<double> v, int pct) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) * static_cast<size_t>(pct) / 100];
}

// One protected run, after the initial sync. Times in ms.
struct Protected {
  double run_seconds = 0;
  uint64_t epochs = 0;
  double interval_p50 = 0, interval_p99 = 0;
  double pause_p50 = 0, pause_p99 = 0;
  double stop_p50 = 0, stop_p99 = 0;
  double collect_p50 = 0, copy_p50 = 0, encode_p50 = 0;  // EpochRecord; collect includes stop
  double dirty_per_epoch = 0;
  uint64_t stretched = 0, overflowed = 0;
  double sync_seconds = 0, tracker_setup_seconds = 0;
  double guest_pages_per_sec = 0;  // page writes/s during the run (the dirtier's counter)
  double guest_lifetime_rate = 0;  // what the dirtier printed: over its whole life
  double rate() const { return run_seconds > 0 ? static_cast<double>(epochs) / run_seconds : 0; }
};

// Runs the dirtier under the engine at `interval`, for `seconds` after the
// initial sync; the tracker is created once the dirtier made warm_writes writes.
Result<Protected> run_protected(const std::string& tracker, size_t arena_bytes,
                                std::vector<std::string> args, std::chrono::microseconds interval,
                                double seconds, uint64_t warm_writes) {
  Dirtier d;
  ROMULUS_RETURN_IF_ERROR(d.start(tracker, arena_bytes, std::move(args)));
  ROMULUS_RETURN_IF_ERROR(d.warm_up(warm_writes));
  ROMULUS_RETURN_IF_ERROR(d.make_tracker(tracker));
  const uint64_t pages = arena_bytes / kPageSize;
  checkpoint::NullTransport transport;
  checkpoint::StatsRecorder stats(/*window=*/1);
  TimedPause pause(*d.proc, stats);
  checkpoint::EngineOptions eo;  // `romulus primary` defaults, but for the interval
  eo.interval = interval;
  eo.commit = checkpoint::CommitMode::kInterval;  // the rate the timer alone sets
  eo.arena_fd = d.arena.fd();
  eo.log = [](const std::string& line) { std::fprintf(stderr, "  engine: %s\n", line.c_str()); };
  checkpoint::EpochEngine engine(pause, *d.tracker, pages, &transport, stats, eo);
  ROMULUS_RETURN_IF_ERROR(engine.initial_sync().context("initial sync"));
  const auto synced = stats.snapshot();
  pause.clear();  // the sync's closing checkpoint is not a steady-state epoch

  std::atomic<bool> stop{false};
  Status run_status;
  const auto t0 = Clock::now();
  const uint64_t w0 = *d.writes;
  std::thread runner([&] { run_status = engine.run(stop); });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  runner.join();
  const uint64_t w1 = *d.writes;
  const auto t1 = Clock::now();
  pause.take_record();
  ROMULUS_RETURN_IF_ERROR(run_status.context("engine run"));
  const auto s = stats.snapshot();

  Protected p;
  p.run_seconds = std::chrono::duration<double>(t1 - t0).count();
  p.epochs = s.epochs - synced.epochs;
  const auto intervals = pause.intervals();
  p.interval_p50 = percentile(intervals, 50);
  p.interval_p99 = percentile(intervals, 99);
  p.pause_p50 = percentile(pause.pauses(), 50);
  p.pause_p99 = percentile(pause.pauses(), 99);
  p.stop_p50 = percentile(pause.stops(), 50);
  p.stop_p99 = percentile(pause.stops(), 99);
  p.collect_p50 = percentile(pause.stop_and_collect(), 50);
  p.copy_p50 = percentile(pause.field(&checkpoint::EpochRecord::copy_us), 50);
  p.encode_p50 = percentile(pause.field(&checkpoint::EpochRecord::encode_us), 50);
  p.dirty_per_epoch = p.epochs == 0
                          ? 0
                          : static_cast<double>(s.dirty_pages_total - synced.dirty_pages_total) /
                                static_cast<double>(p.epochs);
  p.stretched = s.stretched_intervals - synced.stretched_intervals;
  p.overflowed = s.overflowed_staging - synced.overflowed_staging;
  p.sync_seconds = static_cast<double>(synced.sync_duration_us) / 1e6;
  p.tracker_setup_seconds = d.tracker_setup_seconds;
  p.guest_pages_per_sec = static_cast<double>(w1 - w0) / p.run_seconds;
  p.guest_lifetime_rate = d.finish();
  if (std::getenv("ROMULUS_BENCH_DEBUG") != nullptr) {
    const auto col = pause.stop_and_collect();
    const auto cp = pause.field(&checkpoint::EpochRecord::copy_us);
    const auto en = pause.field(&checkpoint::EpochRecord::encode_us);
    const auto pa = pause.field(&checkpoint::EpochRecord::pause_us);
    const auto iv = pause.field(&checkpoint::EpochRecord::interval_us);
    for (size_t i = 0; i < col.size(); ++i) {
      std::fprintf(stderr,
                   "  rec %zu: interval %.2f pause %.2f collect %.2f copy %.2f encode %.2f\n", i,
                   iv[i], pa[i], col[i], cp[i], en[i]);
    }
  }
  return p;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct Options {
  std::string section = "all";
  std::vector<std::string> trackers = {"uffd", "compare"};
  std::vector<uint64_t> intervals_ms = {10, 25, 50};
  std::vector<uint64_t> pages_per_epoch = {1000};
  uint64_t rate_span = 8192;  // the rate section's working set (32 MiB)
  std::string csv;            // rate rows also go here (empty: none)
  std::vector<uint64_t> spans = {1024, 8192};
  double seconds = 3;
  size_t arena_bytes = size_t{256} << 20;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "checkpoint_rate_bench: %s\nusage: checkpoint_rate_bench [--section "
               "rate|overhead|all] [--trackers uffd,compare] [--intervals 10,25,50] "
               "[--pages-per-epoch N[,N...]] [--rate-span PAGES] [--spans 1024,8192] "
               "[--seconds S] [--arena-mib MIB] [--csv FILE]\n",
               msg);
  std::exit(2);
}

std::vector<uint64_t> numbers(const std::string& s) {
  std::vector<uint64_t> v;
  for (const auto& x : split(s)) v.push_back(std::strtoull(x.c_str(), nullptr, 10));
  return v;
}

std::string loadavg() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  double a = 0, b = 0, c = 0;
  const int n = std::fscanf(f, "%lf %lf %lf", &a, &b, &c);
  std::fclose(f);
  if (n != 3) return "?";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
  return buf;
}

int rate_section(const Options& opt) {
  FILE* csv = nullptr;
  if (!opt.csv.empty()) {
    csv = std::fopen(opt.csv.c_str(), "w");
    if (csv == nullptr) {
      std::fprintf(stderr, "checkpoint_rate_bench: cannot write %s: %s\n", opt.csv.c_str(),
                   std::strerror(errno));
      return 1;
    }
    std::fprintf(csv,
                 "tracker,interval_ms,pages_per_epoch,asked_pages_per_sec,achieved_pages_per_sec,"
                 "checkpoints_per_sec,target_per_sec,pause_p50_ms,pause_p99_ms,dirty_per_epoch,"
                 "stretched,epochs,span,seconds,loadavg\n");
  }
  std::unique_ptr<FILE, int (*)(FILE*)> csv_closer(csv,
                                                   [](FILE* f) { return f ? std::fclose(f) : 0; });
  std::printf("\nCheckpoint rate: dirtier --pattern sparse --span %" PRIu64
              ", NullTransport, %.1f s of EpochEngine::run() per row.\n\n",
              opt.rate_span, opt.seconds);
  std::printf(
      "| tracker | interval | dirtier asked | checkpoints/s | interval p50 | interval p99 | "
      "pause p50 | pause p99 | stop p50 | stop p99 | stop+collect p50 | copy p50 | encode p50 | "
      "dirty pages/epoch | stretched | dirtier achieved |\n");
  std::printf("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const auto& t : opt.trackers) {
    for (uint64_t ms : opt.intervals_ms) {
      for (uint64_t per_epoch : opt.pages_per_epoch) {
        const uint64_t pps = per_epoch * 1000 / ms;
        std::fprintf(stderr, "rate: %s %" PRIu64 " ms, %" PRIu64 " pages/epoch...\n", t.c_str(), ms,
                     per_epoch);
        auto r = run_protected(t, opt.arena_bytes,
                               {"--pages-per-sec", std::to_string(pps), "--pattern", "sparse",
                                "--span", std::to_string(opt.rate_span)},
                               std::chrono::milliseconds(ms), opt.seconds, 5 * opt.rate_span);
        if (!r.is_ok()) {
          std::fprintf(stderr, "rate %s %" PRIu64 " ms: %s\n", t.c_str(), ms,
                       r.status().to_string().c_str());
          return 1;
        }
        const Protected& p = r.value();
        std::printf(
            "| %s | %" PRIu64 " ms | %" PRIu64
            "/s | %.1f | %.1f ms | %.1f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms "
            "| %.2f ms | %.2f ms | %.0f | %" PRIu64 "/%" PRIu64 " | %.0f/s |\n",
            t.c_str(), ms, pps, p.rate(), p.interval_p50, p.interval_p99, p.pause_p50, p.pause_p99,
            p.stop_p50, p.stop_p99, p.collect_p50, p.copy_p50, p.encode_p50, p.dirty_per_epoch,
            p.stretched, p.epochs, p.guest_pages_per_sec);
        std::fflush(stdout);
        if (csv) {
          std::fprintf(
              csv,
              "%s,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.0f,%.2f,%.2f,%.3f,%.3f,%.0f,%" PRIu64
              ",%" PRIu64 ",%" PRIu64 ",%.1f,%s\n",
              t.c_str(), ms, per_epoch, pps, p.guest_pages_per_sec, p.rate(),
              1000.0 / static_cast<double>(ms), p.pause_p50, p.pause_p99, p.dirty_per_epoch,
              p.stretched, p.epochs, opt.rate_span, opt.seconds, loadavg().c_str());
          std::fflush(csv);
        }
      }
    }
  }
  return 0;
}

int overhead_section(const Options& opt) {
  std::printf(
      "\nGuest overhead: dirtier --pages-per-sec 0 --pattern sparse, page writes/s over %.1f s "
      "(its own counter; protected: after the initial sync, EpochEngine::run() at 50 ms, "
      "NullTransport).\n\n",
      opt.seconds);
  std::printf(
      "| span (pages) | mode | dirtier page writes/s | vs unprotected | checkpoints/s | "
      "dirty pages/epoch | pause p50 | pause p99 | stop p50 | sent while paused | tracker "
      "setup | initial sync |\n");
  std::printf("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (uint64_t span : opt.spans) {
    const std::vector<std::string> args = {"--pages-per-sec", "0",      "--pattern",
                                           "sparse",          "--span", std::to_string(span)};
    std::fprintf(stderr, "overhead: span %" PRIu64 " unprotected...\n", span);
    Dirtier d;
    Status st = d.start("none", opt.arena_bytes, args);
    if (st.is_ok()) st = d.warm_up(5 * span);
    if (!st.is_ok()) {
      std::fprintf(stderr, "unprotected dirtier: %s\n", st.to_string().c_str());
      return 1;
    }
    const auto t0 = Clock::now();
    const uint64_t w0 = *d.writes;
    std::this_thread::sleep_for(std::chrono::duration<double>(opt.seconds));
    const uint64_t w1 = *d.writes;
    const double base =
        static_cast<double>(w1 - w0) / std::chrono::duration<double>(Clock::now() - t0).count();
    d.finish();
    std::printf("| %" PRIu64 " | unprotected | %.0f | 1.00 | | | | | | | | |\n", span, base);
    std::fflush(stdout);
    for (const auto& t : opt.trackers) {
      std::fprintf(stderr, "overhead: span %" PRIu64 " %s...\n", span, t.c_str());
      auto r = run_protected(t, opt.arena_bytes, args, 50ms, opt.seconds, 5 * span);
      if (!r.is_ok()) {
        std::fprintf(stderr, "overhead %s: %s\n", t.c_str(), r.status().to_string().c_str());
        return 1;
      }
      const Protected& p = r.value();
      std::printf(
          "| %" PRIu64
          " | %s, 50 ms | %.0f | %.2f | %.1f | %.0f | %.2f ms | %.2f ms | %.2f ms | %" PRIu64
          "/%" PRIu64 " | %.2f s | %.2f s |\n",
          span, t.c_str(), p.guest_pages_per_sec, base > 0 ? p.guest_pages_per_sec / base : 0.0,
          p.rate(), p.dirty_per_epoch, p.pause_p50, p.pause_p99, p.stop_p50, p.overflowed, p.epochs,
          p.tracker_setup_seconds, p.sync_seconds);
      std::fflush(stdout);
    }
  }
  return 0;
}

int bench_main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    std::string v = argv[++i];
    if (a == "--section") {
      opt.section = v;
    } else if (a == "--trackers") {
      opt.trackers = split(v);
    } else if (a == "--intervals") {
      opt.intervals_ms = numbers(v);
    } else if (a == "--pages-per-epoch") {
      opt.pages_per_epoch = numbers(v);
    } else if (a == "--rate-span") {
      opt.rate_span = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--csv") {
      opt.csv = v;
    } else if (a == "--spans") {
      opt.spans = numbers(v);
    } else if (a == "--seconds") {
      opt.seconds = std::strtod(v.c_str(), nullptr);
    } else if (a == "--arena-mib") {
      opt.arena_bytes = std::strtoull(v.c_str(), nullptr, 10) << 20;
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (opt.seconds <= 0 || opt.arena_bytes == 0) usage("bad --seconds or --arena-mib");
  for (uint64_t ms : opt.intervals_ms) {
    if (ms == 0) usage("intervals must be positive");
  }
  if (opt.pages_per_epoch.empty() || opt.rate_span == 0)
    usage("bad --pages-per-epoch or --rate-span");
  std::vector<std::string> usable;
  for (const auto& t : opt.trackers) {
    if (t == "uffd") {
      Status probe = checkpoint::probe_uffd_wp_async();
      if (!probe.is_ok()) {
        std::printf("uffd tracker skipped: %s\n", probe.to_string().c_str());
        continue;
      }
    } else if (t != "compare") {
      usage(("unknown tracker " + t).c_str());
    }
    usable.push_back(t);
  }
  opt.trackers = usable;
  signal(SIGPIPE, SIG_IGN);
  if (opt.section == "rate" || opt.section == "all") {
    if (int rc = rate_section(opt); rc != 0) return rc;
  }
  if (opt.section == "overhead" || opt.section == "all") {
    if (int rc = overhead_section(opt); rc != 0) return rc;
  }
  return 0;
}

}  // namespace
}  // namespace romulus::bench

int main(int argc, char** argv) {
  romulus::checkpoint::keep_checkpoint_buffers_in_heap();  // as the romulus binary does
  return romulus::bench::bench_main(argc, argv);
}
