// pause_bench: how long the primary stops its guest, against what a pause cannot avoid.
//
//   pause_bench [--trackers uffd,compare] [--counts 10,100,1000,10000,50000]
//               [--rounds R] [--arena-mib 256] [--csv FILE]
//
// For each tracker and each dirty-set size N (spread over the arena, or clustered
// = N contiguous pages) the guest writes exactly N pages, then the real
// EpochEngine takes one checkpoint into a NullTransport; its EpochRecord.pause_us
// (pause requested -> guest running again) is the pause. In the same round, with
// the same guest and tracker, the parts no implementation can avoid are timed
// alone:
//   stop/cont  GuestProcess::pause() + resume() with no Update open (gate check,
//              SIGSTOP, wait until stopped, SIGCONT)
//   scan       uffd: one collect() (PAGEMAP_SCAN) with exactly those N pages dirty;
//              compare: one collect() with 0 pages dirty, i.e. one full compare of
//              the arena against the shadow (what every compare pause must read)
//   memcpy     copying the N collected pages into a pre-faulted buffer
// and the table gives pause / (stop/cont + scan + memcpy). The scan floor (a uffd
// collect() with 0 pages dirty) and the guest's own time to write the N pages
// (which, under uffd, includes one write-protect fault per page) are shown too.
// --csv FILE writes the same rows as CSV (bench/plot_pause_vs_dirty.py plots it).
//
// The guest is this binary run again with --guest: it attaches to the arena and,
// on a command over a pipe, writes one 8-byte word into each of N pages and
// answers with the time that took. Writing from the guest matters: the uffd
// tracker only sees writes made through the guest's own page tables. Every
// number is the median of R rounds (after one warm-up round), all measured in
// the same run, so a noisy neighbour affects the pause and its parts alike.
// A plain main, not Google Benchmark: one row needs several related timings
// taken around the same guest state.
//
//   pause_bench --sweep [--trackers uffd,uffd-sync,uffd-hybrid,uffd-sync-copy-in-pause]
//               [--arenas-mib 64,256,...,16384]
//               [--counts 0,100,1000,10000] [--patterns alternate,same,clustered] [--rounds R]
//               [--csv FILE]
//
// Pause against arena size (issue 14). For each tracker and each arena size (a
// sparse memfd: only the pages written are ever allocated) a fresh guest takes
// R checkpoints per dirty-set size N (spread over the arena; "alternate": two
// sets in turn, so no page is written in two consecutive epochs; "same": the
// same pages every epoch), each through the
// real EpochEngine: pause p50/p99, primary CPU per checkpoint (this process's
// CPU time, fault-handler thread included, over the guest's writes and the
// checkpoint), the guest's time per first write, and, in the same round,
// stop/cont alone and the memcpy of the N pages alone: the unavoidable sum.
// uffd-sync copies the pages it re-protects after resume (copy-before-write);
// the tracker name uffd-sync-copy-in-pause is uffd-sync copying them all in
// the pause, as before copy-before-write. ROMULUS_BENCH_DEBUG=1 in the
// environment prints every measured checkpoint's parts on stderr.
//
//   pause_bench --rate [--trackers uffd-sync] [--arena-mib 16384] [--seconds 5]
//               [--interval-ms 10] [--idle-pages 10]
//
// Checkpoints every interval (as EpochEngine::run() does) for the given time,
// while the guest writes --idle-pages pages every millisecond on its own:
// achieved checkpoints per second, pause p50/p99/max, primary CPU per checkpoint.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/stats.h"
#include "checkpoint/tracker_choice.h"
#include "checkpoint/transport.h"
#include "common/shared_memory.h"
#include "guest/guest.h"
#include "protocol/page.h"

namespace romulus::bench {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using protocol::kPageSize;

// The guest leaves the first pages alone: the SDK keeps its segment header there.
constexpr uint64_t kFirstPage = 16;

constexpr const char* kCmdFdEnv = "ROMULUS_BENCH_CMD_FD";
constexpr const char* kAckFdEnv = "ROMULUS_BENCH_ACK_FD";

enum class Pattern { kSpread, kClustered };

const char* pattern_name(Pattern p) { return p == Pattern::kSpread ? "spread" : "clustered"; }

// Page i (0 <= i < n) of a dirty set of n pages in an arena of `pages` pages,
// the whole set shifted (cyclically) by `offset` pages.
uint64_t dirty_pfn(Pattern p, uint64_t i, uint64_t n, uint64_t pages, uint64_t offset = 0) {
  const uint64_t usable = pages - kFirstPage;
  if (p == Pattern::kClustered) return kFirstPage + (i + offset) % usable;
  return kFirstPage + (i * usable / n + offset) % usable;
}

double us_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

// ---- The guest side ------------------------------------------------------------

// Commands: "w spread|clustered N VALUE [OFFSET]" -> "ok NANOSECONDS" (N may be 0;
// the set shifted by OFFSET pages);
// "bg K" -> "ok": a thread writes K spread pages every millisecond from now on.
int guest_main() {
  auto arena = guest::attach();
  if (!arena.is_ok()) {
    std::fprintf(stderr, "pause_bench guest: %s\n", arena.status().to_string().c_str());
    return 3;
  }
  const char* cmd_fd = std::getenv(kCmdFdEnv);
  const char* ack_fd = std::getenv(kAckFdEnv);
  if (cmd_fd == nullptr || ack_fd == nullptr) return 4;
  FILE* in = fdopen(std::atoi(cmd_fd), "r");
  FILE* out = fdopen(std::atoi(ack_fd), "w");
  if (in == nullptr || out == nullptr) return 4;
  setvbuf(out, nullptr, _IOLBF, 0);
  uint8_t* base = arena->base();
  const uint64_t pages = arena->size() / kPageSize;
  char line[128];
  std::atomic<bool> stop{false};
  std::vector<std::thread> background;
  while (std::fgets(line, sizeof(line), in) != nullptr) {
    char pattern[32] = {0};
    unsigned long long n = 0, value = 0;
    if (std::sscanf(line, "bg %llu", &n) == 1 && n > 0 && n <= pages - kFirstPage) {
      background.emplace_back([&stop, base, pages, n] {
        for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
          for (uint64_t i = 0; i < n; ++i) {
            auto* word = reinterpret_cast<volatile uint64_t*>(
                base + dirty_pfn(Pattern::kSpread, (i + v) % n, n, pages) * kPageSize + 1024);
            *word = v;
          }
          std::this_thread::sleep_for(1ms);
        }
      });
      std::fprintf(out, "ok\n");
      continue;
    }
    unsigned long long offset = 0;
    const int fields = std::sscanf(line, "w %31s %llu %llu %llu", pattern, &n, &value, &offset);
    if (fields < 3 || n > pages - kFirstPage) {
      std::fprintf(out, "err bad command\n");
      continue;
    }
    const Pattern p =
        std::strcmp(pattern, "clustered") == 0 ? Pattern::kClustered : Pattern::kSpread;
    const auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; ++i) {
      auto* word = reinterpret_cast<volatile uint64_t*>(
          base + dirty_pfn(p, i, n, pages, offset) * kPageSize + 2048);
      *word = value;
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0);
    std::fprintf(out, "ok %lld\n", static_cast<long long>(ns.count()));
  }
  stop = true;
  for (auto& t : background) t.join();
  return 0;
}

// ---- The supervisor side -------------------------------------------------------

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("/proc/self/exe");
}

class GuestPause final : public checkpoint::PauseControl {
 public:
  explicit GuestPause(checkpoint::GuestProcess& g) : g_(g) {}
  Status pause(std::chrono::milliseconds t) override { return g_.pause(t); }
  Status resume() override { return g_.resume(); }
  std::optional<std::string> exited() override { return g_.poll_exit(); }

 private:
  checkpoint::GuestProcess& g_;
};

// One guest on its own arena, with its tracker.
struct BenchGuest {
  common::SharedMemory arena, control;
  std::optional<checkpoint::GuestProcess> proc;
  std::unique_ptr<checkpoint::DirtyTracker> tracker;
  FILE* cmd = nullptr;
  FILE* ack = nullptr;

  BenchGuest() = default;
  BenchGuest(const BenchGuest&) = delete;
  BenchGuest& operator=(const BenchGuest&) = delete;
  ~BenchGuest() {
    tracker.reset();
    proc.reset();
    if (cmd != nullptr) std::fclose(cmd);
    if (ack != nullptr) std::fclose(ack);
  }

  Status start(const std::string& tracker_name, size_t arena_bytes) {
    ROMULUS_ASSIGN_OR_RETURN(arena, common::SharedMemory::create("bench-arena", arena_bytes));
    ROMULUS_ASSIGN_OR_RETURN(control, common::SharedMemory::create("bench-control", 4096));
    int cmd_pipe[2], ack_pipe[2];
    if (pipe2(cmd_pipe, O_CLOEXEC) != 0 || pipe2(ack_pipe, O_CLOEXEC) != 0) {
      return Status::from_errno("pipe2", errno);
    }
    checkpoint::GuestSpec spec;
    spec.argv = {self_path(), "--guest"};
    spec.arena_fd = arena.fd();
    spec.arena_size = arena.size();
    spec.control_fd = control.fd();
    checkpoint::TrackerDecision d;
    // One tracker each: every name but auto (the table's first), which is refused
    // with the list of the others like any unknown name.
    static_assert(checkpoint::kTrackerKindNames[0].value == checkpoint::TrackerKind::kAuto);
    const std::span<const EnumName<checkpoint::TrackerKind>> measurable =
        std::span(checkpoint::kTrackerKindNames).subspan(1);
    ROMULUS_ASSIGN_OR_RETURN(d.kind, parse_enum(measurable, tracker_name));
    spec.tracker = d.guest_tracker();
    spec.inherit_fds = {cmd_pipe[0], ack_pipe[1]};
    spec.extra_env = {{kCmdFdEnv, std::to_string(cmd_pipe[0])},
                      {kAckFdEnv, std::to_string(ack_pipe[1])}};
    auto started = checkpoint::GuestProcess::start(spec);
    close(cmd_pipe[0]);
    close(ack_pipe[1]);
    cmd = fdopen(cmd_pipe[1], "w");
    ack = fdopen(ack_pipe[0], "r");
    if (!started.is_ok()) return started.status();
    proc.emplace(std::move(started).value());
    ROMULUS_RETURN_IF_ERROR(proc->wait_attached(120s));
    ROMULUS_ASSIGN_OR_RETURN(tracker,
                             checkpoint::make_tracker(d, *proc, arena.data(), arena.size()));
    return Status::ok();
  }

  Status command(const std::string& line) {
    std::fprintf(cmd, "%s\n", line.c_str());
    std::fflush(cmd);
    char buf[128];
    if (std::fgets(buf, sizeof(buf), ack) == nullptr || std::strncmp(buf, "ok", 2) != 0) {
      return Status::io_error("guest did not answer '" + line + "'");
    }
    return Status::ok();
  }

  // Has the guest write n pages; returns its own time for the writes, in µs.
  Result<double> write(Pattern p, uint64_t n, uint64_t value, uint64_t offset = 0) {
    std::fprintf(cmd, "w %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", pattern_name(p), n, value,
                 offset);
    std::fflush(cmd);
    char buf[128];
    long long ns = 0;
    if (std::fgets(buf, sizeof(buf), ack) == nullptr || std::sscanf(buf, "ok %lld", &ns) != 1) {
      return Status::io_error("guest did not answer the write command");
    }
    return static_cast<double>(ns) / 1000.0;
  }
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  std::vector<std::string> trackers = {"uffd", "compare"};
  std::vector<uint64_t> counts = {10, 100, 1000, 10000, 50000};
  int rounds = 0;  // 0: 9 for small sets, 5 for sets of 10,000 pages and more
  size_t arena_bytes = size_t{256} << 20;
  std::string csv;  // also write the rows here (empty: no CSV)
};

struct Row {
  std::string tracker;
  Pattern pattern;
  uint64_t n = 0;
  int rounds = 0;
  uint64_t dirty_mismatches = 0;  // rounds where the engine saw != n dirty pages
  double pause = 0, engine_collect = 0, engine_copy = 0;
  double stop_cont = 0, scan_n = 0, scan_floor = 0, memcpy_n = 0;
  double guest_write = 0;
  double unavoidable() const {
    return stop_cont + (tracker == "uffd" ? scan_n : scan_floor) + memcpy_n;
  }
};

Result<std::vector<Row>> measure_tracker(const std::string& tracker_name, const Options& opt) {
  BenchGuest g;
  ROMULUS_RETURN_IF_ERROR(g.start(tracker_name, opt.arena_bytes).context("starting the guest"));
  const uint64_t pages = opt.arena_bytes / kPageSize;
  checkpoint::NullTransport transport;
  checkpoint::StatsRecorder stats;
  GuestPause pause(*g.proc);
  checkpoint::EngineOptions eo;
  eo.staging_bytes = opt.arena_bytes;  // every measured set fits: no sends while paused
  eo.arena_fd = g.arena.fd();
  checkpoint::EpochEngine engine(pause, *g.tracker, pages, &transport, stats, eo);
  ROMULUS_RETURN_IF_ERROR(engine.initial_sync().context("initial sync"));

  // Where the parts-alone memcpy goes: pre-faulted like the staging buffer.
  const size_t buf_bytes = opt.arena_bytes;
  void* mem = mmap(nullptr, buf_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return Status::from_errno("mmap copy buffer", errno);
  std::unique_ptr<uint8_t, std::function<void(uint8_t*)>> buf(
      static_cast<uint8_t*>(mem), [buf_bytes](uint8_t* p) { munmap(p, buf_bytes); });
  std::memset(buf.get(), 1, buf_bytes);

  std::vector<Row> rows;
  std::vector<uint64_t> pfns;
  pfns.reserve(pages);
  uint64_t value = 1;
  for (Pattern pattern : {Pattern::kSpread, Pattern::kClustered}) {
    for (uint64_t n : opt.counts) {
      if (n > pages - kFirstPage) continue;
      Row row;
      row.tracker = tracker_name;
      row.pattern = pattern;
      row.n = n;
      row.rounds = opt.rounds > 0 ? opt.rounds : (n >= 10000 ? 5 : 9);
      std::vector<double> v_pause, v_ecollect, v_ecopy, v_stopcont, v_scan, v_floor, v_memcpy,
          v_write;
      for (int r = -1; r < row.rounds; ++r) {  // round -1: warm-up, not recorded
        // 1. The engine's pause with exactly n pages dirty.
        ROMULUS_ASSIGN_OR_RETURN(double write_us, g.write(pattern, n, value++));
        ROMULUS_RETURN_IF_ERROR(engine.checkpoint());
        const checkpoint::EpochRecord rec = stats.snapshot().last;
        // 2. The same dirty set again: stop/cont, scan and memcpy, each timed alone.
        ROMULUS_RETURN_IF_ERROR(g.write(pattern, n, value++).status());
        pfns.clear();
        const auto t0 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.proc->pause(eo.gate_timeout));
        const auto t1 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.tracker->collect(pfns));
        const auto t2 = Clock::now();
        for (size_t i = 0; i < pfns.size(); ++i) {
          std::memcpy(buf.get() + i * kPageSize, g.tracker->page_source(pfns[i]), kPageSize);
        }
        const auto t3 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.proc->resume());
        const auto t4 = Clock::now();
        // 3. Nothing dirty: the scan floor (uffd) / the full compare (compare).
        std::vector<uint64_t> none;
        const auto f0 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.proc->pause(eo.gate_timeout));
        const auto f1 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.tracker->collect(none));
        const auto f2 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.proc->resume());
        const auto f3 = Clock::now();
        if (r < 0) continue;
        if (rec.dirty_pages != n || pfns.size() != n || !none.empty()) ++row.dirty_mismatches;
        v_pause.push_back(static_cast<double>(rec.pause_us));
        v_ecollect.push_back(static_cast<double>(rec.gate_wait_us + rec.collect_us));
        v_ecopy.push_back(static_cast<double>(rec.copy_us));
        v_stopcont.push_back(us_since(t0, t1) + us_since(t3, t4));
        v_stopcont.push_back(us_since(f0, f1) + us_since(f2, f3));
        v_scan.push_back(us_since(t1, t2));
        v_memcpy.push_back(us_since(t2, t3));
        v_floor.push_back(us_since(f1, f2));
        v_write.push_back(write_us);
      }
      row.pause = median(v_pause);
      row.engine_collect = median(v_ecollect);
      row.engine_copy = median(v_ecopy);
      row.stop_cont = median(v_stopcont);
      row.scan_n = median(v_scan);
      row.scan_floor = median(v_floor);
      row.memcpy_n = median(v_memcpy);
      row.guest_write = median(v_write);
      std::fprintf(stderr, "  %s %s %" PRIu64 ": pause %.0f us\n", tracker_name.c_str(),
                   pattern_name(pattern), n, row.pause);
      rows.push_back(row);
    }
  }
  return rows;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "pause_bench: %s\nusage: pause_bench [--trackers uffd,uffd-sync,compare] "
               "[--counts 10,100,...] [--rounds R] [--arena-mib MIB] [--csv FILE]\n"
               "       pause_bench --sweep [--trackers T,...] [--arenas-mib M,...] "
               "[--counts N,...] [--patterns alternate,same,clustered] [--rounds R] [--csv FILE]\n"
               "       pause_bench --rate [--trackers T,...] [--arena-mib M] [--seconds S] "
               "[--interval-ms I] [--idle-pages K]\n",
               msg);
  std::exit(2);
}

// ---- --sweep and --rate (issue 14: pause against arena size) -----------------

double process_cpu_us() {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

std::string loadavg() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  char buf[128] = {0};
  if (std::fgets(buf, sizeof(buf), f) == nullptr) buf[0] = '\0';
  std::fclose(f);
  std::string s(buf);
  const size_t third = s.find(' ', s.find(' ', s.find(' ') + 1) + 1);
  return third == std::string::npos ? s : s.substr(0, third);
}

struct SweepOptions {
  std::vector<std::string> trackers = {"uffd", "uffd-sync"};
  std::vector<uint64_t> arenas_mib = {64, 256, 1024, 2048, 4096, 8192, 16384};
  std::vector<uint64_t> counts = {0, 100, 1000, 10000};
  // alternate: two sets of pages written in turn, so no page is written in two
  // consecutive epochs (every first write faults: uffd-sync's worst case);
  // same: the same pages every epoch (a service's hot set: uffd-sync makes
  // them sticky); clustered: two runs of N contiguous pages in turn (one
  // re-protection ioctl covers a run, so the copy is most of the pause). Both
  // sets are written in the warm-up rounds, so the
  // measured rounds touch no never-touched page (whose first touch costs a
  // page allocation in the guest and a minor fault in the supervisor's copy).
  std::vector<std::string> patterns = {"alternate", "same"};
  int rounds = 0;  // 0: 40 below 10,000 pages, 15 from there
  std::string csv;
  // --rate
  uint64_t rate_arena_mib = 16384;
  double seconds = 5;
  int interval_ms = 10;
  uint64_t idle_pages = 10;
};

struct SweepRow {
  std::string tracker, pattern;
  uint64_t arena_mib = 0, n = 0;
  int rounds = 0;
  double pause_p50 = 0, pause_p99 = 0, cpu = 0, write_per_page = 0, stop_cont = 0, memcpy_n = 0,
         dirty_seen = 0;
  std::string load;
  double unavoidable() const { return stop_cont + memcpy_n; }
};

// A --trackers name: uffd-sync, but copying every page in the pause.
constexpr const char* kCopyInPause = "uffd-sync-copy-in-pause";

// The engine set-up both modes share: a guest on a sparse arena, its tracker,
// an engine whose staging holds max_pages, initial sync done.
struct EngineRig {
  BenchGuest g;
  checkpoint::NullTransport transport;
  checkpoint::StatsRecorder stats;
  std::optional<GuestPause> pause;
  std::optional<checkpoint::EpochEngine> engine;

  // tracker: a tracker's name, or kCopyInPause: uffd-sync with every page
  // copied in the pause (no copy-before-write), to compare in the same run.
  Status start(const std::string& tracker, size_t arena_bytes, uint64_t max_pages) {
    const bool in_pause = tracker == kCopyInPause;
    ROMULUS_RETURN_IF_ERROR(
        g.start(in_pause ? "uffd-sync" : tracker, arena_bytes).context("starting the guest"));
    pause.emplace(*g.proc);
    checkpoint::EngineOptions eo;
    if (in_pause) eo.copy_after_resume_min_pages = SIZE_MAX;
    eo.staging_bytes = std::min<size_t>(arena_bytes, (max_pages + 256) * kPageSize);
    eo.arena_fd = g.arena.fd();
    engine.emplace(*pause, *g.tracker, arena_bytes / kPageSize, &transport, stats, eo);
    return engine->initial_sync().context("initial sync");
  }
};

Result<std::vector<SweepRow>> sweep_one(const std::string& tracker, uint64_t arena_mib,
                                        const SweepOptions& opt) {
  const size_t arena_bytes = static_cast<size_t>(arena_mib) << 20;
  const uint64_t pages = arena_bytes / kPageSize;
  const uint64_t max_n = *std::max_element(opt.counts.begin(), opt.counts.end());
  EngineRig rig;
  ROMULUS_RETURN_IF_ERROR(rig.start(tracker, arena_bytes, max_n));
  BenchGuest& g = rig.g;
  std::vector<uint8_t> buf(std::max<uint64_t>(1, max_n) * kPageSize, 1);
  std::vector<uint64_t> pfns;
  std::vector<SweepRow> rows;
  uint64_t value = 1;
  for (const std::string& pattern : opt.patterns)
    for (uint64_t n : opt.counts) {
      if (n > pages - kFirstPage) continue;
      // alternate: two sets written in turn, the second shifted by half the
      // spacing of the first, so no page is written in two consecutive epochs.
      // clustered: two runs of n contiguous pages written in turn.
      const bool clustered = pattern == "clustered";
      const bool alternate = pattern == "alternate" || clustered;
      const Pattern where = clustered ? Pattern::kClustered : Pattern::kSpread;
      const uint64_t half_gap =
          clustered ? std::max<uint64_t>(n, 1)
                    : std::max<uint64_t>(1, (pages - kFirstPage) / std::max<uint64_t>(n, 1) / 2);
      auto offset = [&](uint64_t v) { return alternate && v % 2 == 1 ? half_gap : 0; };
      SweepRow row;
      row.tracker = tracker;
      row.pattern = pattern;
      row.arena_mib = arena_mib;
      row.n = n;
      row.rounds = opt.rounds > 0 ? opt.rounds : (n >= 10000 ? 15 : 40);
      std::vector<double> v_pause, v_cpu, v_write, v_stop, v_copy, v_seen;
      // Ten warm-up rounds (20 epochs): the previous row's sticky pages expire.
      for (int r = -10; r < row.rounds; ++r) {
        const double cpu0 = process_cpu_us();
        ROMULUS_ASSIGN_OR_RETURN(double write_us, g.write(where, n, value, offset(value)));
        ++value;
        ROMULUS_RETURN_IF_ERROR(rig.engine->checkpoint());
        const double cpu1 = process_cpu_us();
        const checkpoint::EpochRecord rec = rig.stats.snapshot().last;
        // The unavoidable parts, alone, with the same dirty set: stop/cont and the copy.
        ROMULUS_RETURN_IF_ERROR(g.write(where, n, value, offset(value)).status());
        ++value;
        pfns.clear();
        const auto t0 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.proc->pause(2000ms));
        const auto t1 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.tracker->collect(pfns));
        const auto t2 = Clock::now();
        for (size_t i = 0; i < pfns.size() && i < max_n; ++i) {
          std::memcpy(buf.data() + i * kPageSize, g.tracker->page_source(pfns[i]), kPageSize);
        }
        const auto t3 = Clock::now();
        ROMULUS_RETURN_IF_ERROR(g.proc->resume());
        const auto t4 = Clock::now();
        if (r < 0) continue;
        if (std::getenv("ROMULUS_BENCH_DEBUG") != nullptr) {
          std::fprintf(stderr,
                       "    pause %lld us: gate %lld, collect %lld, copy %lld; after resume: "
                       "copy %lld us, %llu pages (%llu on a write)\n",
                       static_cast<long long>(rec.pause_us),
                       static_cast<long long>(rec.gate_wait_us),
                       static_cast<long long>(rec.collect_us), static_cast<long long>(rec.copy_us),
                       static_cast<long long>(rec.copy_after_resume_us),
                       static_cast<unsigned long long>(rec.copied_after_resume),
                       static_cast<unsigned long long>(rec.copied_on_write));
        }
        v_pause.push_back(static_cast<double>(rec.pause_us));
        v_cpu.push_back(cpu1 - cpu0);
        if (n > 0) v_write.push_back(write_us / static_cast<double>(n));
        v_stop.push_back(us_since(t0, t1) + us_since(t3, t4));
        v_copy.push_back(us_since(t2, t3));
        v_seen.push_back(static_cast<double>(rec.dirty_pages));
      }
      row.pause_p50 = percentile(v_pause, 0.5);
      row.pause_p99 = percentile(v_pause, 0.99);
      row.cpu = percentile(v_cpu, 0.5);
      row.write_per_page = percentile(v_write, 0.5);
      row.stop_cont = percentile(v_stop, 0.5);
      row.memcpy_n = percentile(v_copy, 0.5);
      row.dirty_seen = percentile(v_seen, 0.5);
      row.load = loadavg();
      std::fprintf(stderr,
                   "  %s %s %6" PRIu64 " MiB %5" PRIu64 " dirty: pause p50 %.0f us p99 %.0f us\n",
                   tracker.c_str(), pattern.c_str(), arena_mib, n, row.pause_p50, row.pause_p99);
      rows.push_back(row);
    }
  return rows;
}

int sweep_main(const SweepOptions& opt) {
  std::vector<SweepRow> rows;
  const std::string load_start = loadavg();
  for (const auto& t : opt.trackers) {
    for (uint64_t mib : opt.arenas_mib) {
      std::fprintf(stderr, "tracker %s, arena %" PRIu64 " MiB...\n", t.c_str(), mib);
      auto r = sweep_one(t, mib, opt);
      if (!r.is_ok()) {
        std::fprintf(stderr, "pause_bench: %s at %" PRIu64 " MiB: %s\n", t.c_str(), mib,
                     r.status().to_string().c_str());
        return 1;
      }
      rows.insert(rows.end(), r.value().begin(), r.value().end());
    }
  }
  std::printf("Pause against arena size; loadavg at start %s, at end %s.\n", load_start.c_str(),
              loadavg().c_str());
  std::printf(
      "pause = EpochRecord.pause_us; CPU = this process per checkpoint (guest's writes + "
      "checkpoint, fault handler included); write = the guest's time per first write; "
      "unavoidable = stop/cont + memcpy of the dirty pages (medians, same round).\n\n");
  std::printf(
      "| tracker | pattern | arena MiB | dirty | pause p50 us | pause p99 us | primary CPU us/ckpt "
      "| guest "
      "us/first write | stop/cont us | memcpy us | pause/unavoidable | rounds |\n");
  std::printf("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const SweepRow& r : rows) {
    std::printf("| %s | %s | %" PRIu64 " | %" PRIu64
                " | %.0f | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f | %d |\n",
                r.tracker.c_str(), r.pattern.c_str(), r.arena_mib, r.n, r.pause_p50, r.pause_p99,
                r.cpu, r.write_per_page, r.stop_cont, r.memcpy_n,
                r.unavoidable() > 0 ? r.pause_p50 / r.unavoidable() : 0.0, r.rounds);
  }
  if (!opt.csv.empty()) {
    FILE* f = std::fopen(opt.csv.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "pause_bench: cannot write %s: %s\n", opt.csv.c_str(),
                   std::strerror(errno));
      return 1;
    }
    std::fprintf(
        f,
        "tracker,pattern,arena_mib,dirty_pages,rounds,pause_p50_us,pause_p99_us,primary_cpu_us,"
        "guest_write_us_per_page,stop_cont_us,memcpy_us,unavoidable_us,dirty_seen,"
        "loadavg\n");
    for (const SweepRow& r : rows) {
      std::fprintf(f,
                   "%s,%s,%" PRIu64 ",%" PRIu64 ",%d,%.1f,%.1f,%.1f,%.3f,%.1f,%.1f,%.1f,%.0f,%s\n",
                   r.tracker.c_str(), r.pattern.c_str(), r.arena_mib, r.n, r.rounds, r.pause_p50,
                   r.pause_p99, r.cpu, r.write_per_page, r.stop_cont, r.memcpy_n, r.unavoidable(),
                   r.dirty_seen, r.load.c_str());
    }
    std::fclose(f);
  }
  return 0;
}

int rate_main(const SweepOptions& opt) {
  const std::string load_start = loadavg();
  std::printf(
      "| tracker | arena MiB | interval | guest writes | checkpoints/s | pause p50 us | p99 us | "
      "max us | primary CPU us/ckpt | dirty/ckpt p50 "
      "|\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const auto& t : opt.trackers) {
    const size_t arena_bytes = static_cast<size_t>(opt.rate_arena_mib) << 20;
    EngineRig rig;
    Status st = rig.start(t, arena_bytes, 100000);
    if (st.is_ok() && opt.idle_pages > 0)
      st = rig.g.command("bg " + std::to_string(opt.idle_pages));
    if (!st.is_ok()) {
      std::fprintf(stderr, "pause_bench: %s: %s\n", t.c_str(), st.to_string().c_str());
      return 1;
    }
    const auto interval = std::chrono::milliseconds(opt.interval_ms);
    std::vector<double> pauses, dirty;
    const double cpu0 = process_cpu_us();
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(opt.seconds));
    auto deadline = start + interval;
    while (deadline < end) {
      std::this_thread::sleep_until(deadline);
      st = rig.engine->checkpoint();
      if (!st.is_ok()) {
        std::fprintf(stderr, "pause_bench: %s: %s\n", t.c_str(), st.to_string().c_str());
        return 1;
      }
      const checkpoint::EpochRecord rec = rig.stats.snapshot().last;
      pauses.push_back(static_cast<double>(rec.pause_us));
      dirty.push_back(static_cast<double>(rec.dirty_pages));
      deadline += interval;
      if (Clock::now() > deadline) deadline = Clock::now() + interval;  // no catch-up burst
    }
    const double elapsed = us_since(start, Clock::now()) / 1e6;
    const double cpu = process_cpu_us() - cpu0;
    std::printf("| %s | %" PRIu64 " | %d ms | %" PRIu64
                " pages/ms | %.1f | %.0f | %.0f | %.0f | %.0f | %.0f |\n",
                t.c_str(), opt.rate_arena_mib, opt.interval_ms, opt.idle_pages,
                static_cast<double>(pauses.size()) / elapsed, percentile(pauses, 0.5),
                percentile(pauses, 0.99), percentile(pauses, 1.0),
                cpu / static_cast<double>(pauses.size()), percentile(dirty, 0.5));
  }
  std::printf("\nloadavg at start %s, at end %s\n", load_start.c_str(), loadavg().c_str());
  return 0;
}

std::vector<uint64_t> split_numbers(const std::string& s);

int sweep_or_rate_main(int argc, char** argv) {
  SweepOptions opt;
  const bool rate = std::strcmp(argv[1], "--rate") == 0;
  if (rate) opt.trackers = {"uffd", "uffd-sync"};
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    std::string v = argv[++i];
    if (a == "--trackers") {
      opt.trackers = split(v);
    } else if (a == "--arenas-mib") {
      opt.arenas_mib = split_numbers(v);
    } else if (a == "--counts") {
      opt.counts = split_numbers(v);
    } else if (a == "--patterns") {
      opt.patterns = split(v);
    } else if (a == "--rounds") {
      opt.rounds = std::atoi(v.c_str());
    } else if (a == "--csv") {
      opt.csv = v;
    } else if (a == "--arena-mib") {
      opt.rate_arena_mib = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--seconds") {
      opt.seconds = std::atof(v.c_str());
    } else if (a == "--interval-ms") {
      opt.interval_ms = std::atoi(v.c_str());
    } else if (a == "--idle-pages") {
      opt.idle_pages = std::strtoull(v.c_str(), nullptr, 10);
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (opt.counts.empty() || opt.arenas_mib.empty() || opt.interval_ms <= 0) usage("bad option");
  return rate ? rate_main(opt) : sweep_main(opt);
}

std::vector<uint64_t> split_numbers(const std::string& s) {
  std::vector<uint64_t> out;
  for (const auto& c : split(s)) out.push_back(std::strtoull(c.c_str(), nullptr, 10));
  return out;
}

// The rows of the default mode as CSV, one line per (tracker, pattern, N).
bool write_csv(const Options& opt, const std::vector<Row>& rows, const std::string& load_start) {
  FILE* f = std::fopen(opt.csv.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "pause_bench: cannot write %s: %s\n", opt.csv.c_str(),
                 std::strerror(errno));
    return false;
  }
  const std::string load_end = loadavg();
  std::fprintf(f,
               "tracker,pattern,arena_mib,dirty_pages,rounds,pause_us,engine_collect_us,"
               "engine_copy_us,stop_cont_us,scan_n_us,scan_0_us,memcpy_us,unavoidable_us,"
               "guest_write_us,dirty_mismatches,loadavg_start,loadavg_end\n");
  for (const Row& r : rows) {
    std::fprintf(
        f,
        "%s,%s,%zu,%" PRIu64 ",%d,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%" PRIu64 ",%s,%s\n",
        r.tracker.c_str(), pattern_name(r.pattern), opt.arena_bytes >> 20, r.n, r.rounds, r.pause,
        r.engine_collect, r.engine_copy, r.stop_cont, r.scan_n, r.scan_floor, r.memcpy_n,
        r.unavoidable(), r.guest_write, r.dirty_mismatches, load_start.c_str(), load_end.c_str());
  }
  std::fclose(f);
  return true;
}

int bench_main(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--sweep") == 0 || std::strcmp(argv[1], "--rate") == 0)) {
    return sweep_or_rate_main(argc, argv);
  }
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    std::string v = argv[++i];
    if (a == "--trackers") {
      opt.trackers = split(v);
    } else if (a == "--counts") {
      opt.counts.clear();
      for (const auto& c : split(v)) opt.counts.push_back(std::strtoull(c.c_str(), nullptr, 10));
    } else if (a == "--rounds") {
      opt.rounds = std::atoi(v.c_str());
    } else if (a == "--arena-mib") {
      opt.arena_bytes = std::strtoull(v.c_str(), nullptr, 10) << 20;
    } else if (a == "--csv") {
      opt.csv = v;
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (opt.arena_bytes == 0 || opt.arena_bytes % kPageSize != 0) usage("bad --arena-mib");
  const std::string load_start = loadavg();

  std::vector<Row> rows;
  for (const auto& t : opt.trackers) {
    if (t == "uffd") {
      Status probe = checkpoint::probe_uffd_wp_async();
      if (!probe.is_ok()) {
        std::printf("uffd tracker skipped: %s\n", probe.to_string().c_str());
        continue;
      }
    }
    std::fprintf(stderr, "measuring tracker %s...\n", t.c_str());
    auto r = measure_tracker(t, opt);
    if (!r.is_ok()) {
      std::fprintf(stderr, "pause_bench: tracker %s: %s\n", t.c_str(),
                   r.status().to_string().c_str());
      return 1;
    }
    rows.insert(rows.end(), r.value().begin(), r.value().end());
  }

  std::printf(
      "Arena %zu MiB; medians in microseconds. unavoidable = stop/cont + scan + memcpy,\n"
      "scan = uffd: collect() with the N pages dirty; compare: full compare (0 dirty).\n\n",
      opt.arena_bytes >> 20);
  std::printf(
      "| tracker | pattern | N | pause | engine stop+collect | engine copy | stop/cont | scan(N) "
      "| scan(0) | memcpy(N) | unavoidable | pause/unavoidable | guest write N | rounds |\n");
  std::printf("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %" PRIu64
                " | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f | %.0f | %d%s |\n",
                r.tracker.c_str(), pattern_name(r.pattern), r.n, r.pause, r.engine_collect,
                r.engine_copy, r.stop_cont, r.scan_n, r.scan_floor, r.memcpy_n, r.unavoidable(),
                r.unavoidable() > 0 ? r.pause / r.unavoidable() : 0.0, r.guest_write, r.rounds,
                r.dirty_mismatches ? " (dirty count differed!)" : "");
  }
  if (!opt.csv.empty()) return write_csv(opt, rows, load_start) ? 0 : 1;
  return 0;
}

}  // namespace
}  // namespace romulus::bench

int main(int argc, char** argv) {
  romulus::checkpoint::keep_checkpoint_buffers_in_heap();  // as the romulus binary does
  if (argc >= 2 && std::strcmp(argv[1], "--guest") == 0) return romulus::bench::guest_main();
  return romulus::bench::bench_main(argc, argv);
}
