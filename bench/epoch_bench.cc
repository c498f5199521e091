// epoch_bench: the epoch engine's own cost per epoch, without a guest process:
// pause (here only the staging copy), encode time after resume, and the page
// faults the primary takes per epoch, for 1 and 2 encoder threads.
//
//   epoch_bench [--pages 10000] [--arena-pages 16384] [--epochs 20]
//               [--threads 1,2] [--tracker live|stable]
//
// A fake tracker reports exactly `pages` dirty pages every epoch (spread evenly
// over the arena); between epochs the bench changes them as a guest would
// (tests/support/page_patterns.h, "sparse": one byte in every KiB). `live`
// behaves like the uffd tracker (pages copied to staging while paused),
// `stable` like the compare tracker (encoded from its own copy after resume).
// The engine sends into a NullTransport. minflt is the process's minor page
// faults (getrusage) across one checkpoint() call: every page of a freshly
// mapped buffer costs one; CPU is the process's CPU time (all threads) across
// the same call, split into the engine's thread (pause, its own slice) and
// the busiest encoder thread of the pool: on a machine whose cores are taken
// by other jobs the wall-clock encode time cannot show threads scaling (with
// sched_autogroup, a process gets its share of the CPU however many threads it
// runs), but how the work divides between threads can. Each figure is the median over the epochs
// after two warm-up epochs.
//
// A plain main, not Google Benchmark: one row needs several related numbers
// taken around the same epoch.
#include <dirent.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>
#include <map>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/epoch_engine.h"
#include "checkpoint/stats.h"
#include "checkpoint/transport.h"
#include "protocol/page_buffer.h"
#include "tests/support/page_patterns.h"

namespace romulus::bench {
namespace {

using protocol::kPageSize;

class NoPause final : public checkpoint::PauseControl {
 public:
  Status pause(std::chrono::milliseconds) override { return Status::ok(); }
  Status resume() override { return Status::ok(); }
  std::optional<std::string> exited() override { return std::nullopt; }
};

// Reports `dirty` as written since the previous collect(); pages live in `arena`.
class FakeTracker final : public checkpoint::DirtyTracker {
 public:
  FakeTracker(const uint8_t* arena, bool stable) : arena_(arena), stable_(stable) {}
  std::string_view name() const override { return stable_ ? "stable" : "live"; }
  Status collect(std::vector<uint64_t>& pfns) override {
    pfns.insert(pfns.end(), dirty.begin(), dirty.end());
    return Status::ok();
  }
  const uint8_t* page_source(uint64_t pfn) const override { return arena_ + pfn * kPageSize; }
  bool pages_stable_until_next_collect() const override { return stable_; }

  std::vector<uint64_t> dirty;

 private:
  const uint8_t* arena_;
  bool stable_;
};

long minflt() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

// CPU time of each thread of this process, ns, by thread id. The clock id of
// another thread is built as pthread_getcpuclockid() builds it (Linux ABI:
// ~tid << 3 | CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD).
std::map<long, double> thread_cpu_ns() {
  std::map<long, double> out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const long tid = std::strtol(e->d_name, nullptr, 10);
    timespec ts{};
    const clockid_t clock = static_cast<clockid_t>((~static_cast<unsigned long>(tid) << 3) | 6);
    if (clock_gettime(clock, &ts) == 0)
      out[tid] = static_cast<double>(ts.tv_sec) * 1e9 + ts.tv_nsec;
  }
  closedir(d);
  return out;
}

// CPU time of the whole process (every thread), µs.
double cpu_us() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Options {
  size_t pages = 10000;
  size_t arena_pages = 16384;
  int epochs = 20;
  std::vector<unsigned> threads = {1, 2};
  bool stable = false;
};

int run(const Options& opt) {
  protocol::PageBuffer arena = protocol::allocate_pages(opt.arena_pages);
  std::mt19937_64 rng(7);
  const std::vector<uint8_t> init = testing::make_working_set(opt.arena_pages, rng);
  std::memcpy(arena.get(), init.data(), init.size());
  std::printf(
      "| tracker | threads | dirty pages | pause µs | encode µs | CPU µs / epoch | engine thread "
      "CPU "
      "µs | busiest worker CPU µs | minflt / epoch | wire B / page "
      "|\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (unsigned threads : opt.threads) {
    FakeTracker tracker(arena.get(), opt.stable);
    NoPause guest;
    checkpoint::NullTransport transport;
    checkpoint::StatsRecorder stats;
    checkpoint::EngineOptions eo;
    eo.encoder_threads = threads;
    eo.precopy_stop_pages = opt.arena_pages;  // one pre-copy round
    checkpoint::EpochEngine engine(guest, tracker, opt.arena_pages, &transport, stats, eo);
    if (Status st = engine.initial_sync(); !st.is_ok()) {
      std::fprintf(stderr, "initial sync: %s\n", st.to_string().c_str());
      return 1;
    }
    tracker.dirty.clear();
    for (size_t i = 0; i < opt.pages; ++i) tracker.dirty.push_back(i * opt.arena_pages / opt.pages);
    std::vector<double> pause, encode, cpu, main_cpu, worker_cpu, faults, wire;
    const long self = static_cast<long>(syscall(SYS_gettid));
    for (int e = -2; e < opt.epochs; ++e) {
      for (uint64_t pfn : tracker.dirty) {
        testing::apply_change(arena.get() + pfn * kPageSize, testing::Change::kSparse, rng);
      }
      const long f0 = minflt();
      const double c0 = cpu_us();
      const std::map<long, double> t0 = thread_cpu_ns();
      if (Status st = engine.checkpoint(); !st.is_ok()) {
        std::fprintf(stderr, "checkpoint: %s\n", st.to_string().c_str());
        return 1;
      }
      const long f1 = minflt();
      const double c1 = cpu_us();
      const std::map<long, double> t1 = thread_cpu_ns();
      if (e < 0) continue;
      const checkpoint::EpochRecord rec = stats.snapshot().last;
      pause.push_back(static_cast<double>(rec.pause_us));
      encode.push_back(static_cast<double>(rec.encode_us));
      faults.push_back(static_cast<double>(f1 - f0));
      cpu.push_back(c1 - c0);
      double busiest = 0;
      for (const auto& [tid, ns] : t1) {
        const auto before = t0.find(tid);
        const double us = (ns - (before == t0.end() ? 0 : before->second)) / 1e3;
        if (tid == self) {
          main_cpu.push_back(us);
        } else {
          busiest = std::max(busiest, us);
        }
      }
      worker_cpu.push_back(busiest);
      wire.push_back(static_cast<double>(rec.wire_bytes) / static_cast<double>(opt.pages));
    }
    std::printf("| %s | %u | %zu | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f |\n",
                opt.stable ? "stable" : "live", threads, opt.pages, median(pause), median(encode),
                median(cpu), median(main_cpu), median(worker_cpu), median(faults), median(wire));
    std::fflush(stdout);
  }
  return 0;
}

std::vector<unsigned> parse_list(const std::string& s) {
  std::vector<unsigned> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoul(item));
  return out;
}

}  // namespace
}  // namespace romulus::bench

int main(int argc, char** argv) {
  romulus::checkpoint::keep_checkpoint_buffers_in_heap();  // as the romulus binary does
  romulus::bench::Options opt;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--pages") {
      opt.pages = std::stoul(v);
    } else if (a == "--arena-pages") {
      opt.arena_pages = std::stoul(v);
    } else if (a == "--epochs") {
      opt.epochs = std::stoi(v);
    } else if (a == "--threads") {
      opt.threads = romulus::bench::parse_list(v);
    } else if (a == "--tracker") {
      opt.stable = v == "stable";
    } else {
      std::fprintf(stderr,
                   "usage: epoch_bench [--pages N] [--arena-pages N] [--epochs N] "
                   "[--threads 1,2] [--tracker live|stable]\n");
      return 2;
    }
  }
  if (opt.pages == 0 || opt.pages > opt.arena_pages) return 2;
  return romulus::bench::run(opt);
}
