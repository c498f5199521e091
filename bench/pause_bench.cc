// pause_bench: how long the primary stops its guest, against what a pause cannot avoid.
//
//   pause_bench [--trackers uffd,compare] [--counts 10,100,1000,10000,50000]
//               [--rounds R] [--arena-mib 256]
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
//
// The guest is this binary run again with --guest: it attaches to the arena and,
// on a command over a pipe, writes one 8-byte word into each of N pages and
// answers with the time that took. Writing from the guest matters: the uffd
// tracker only sees writes made through the guest's own page tables. Every
// number is the median of R rounds (after one warm-up round), all measured in
// the same run, so a noisy neighbour affects the pause and its parts alike.
// A plain main, not Google Benchmark: one row needs several related timings
// taken around the same guest state.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/dirty_tracker.h"
#include "checkpoint/epoch_engine.h"
#include "checkpoint/guest_process.h"
#include "checkpoint/stats.h"
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

// Page i (0 <= i < n) of a dirty set of n pages in an arena of `pages` pages.
uint64_t dirty_pfn(Pattern p, uint64_t i, uint64_t n, uint64_t pages) {
  if (p == Pattern::kClustered) return kFirstPage + i;
  return kFirstPage + i * (pages - kFirstPage) / n;
}

double us_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

// ---- The guest side ------------------------------------------------------------

// Commands: "w spread|clustered N VALUE" -> "ok NANOSECONDS".
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
  while (std::fgets(line, sizeof(line), in) != nullptr) {
    char pattern[32] = {0};
    unsigned long long n = 0, value = 0;
    if (std::sscanf(line, "w %31s %llu %llu", pattern, &n, &value) != 3 || n == 0 ||
        n > pages - kFirstPage) {
      std::fprintf(out, "err bad command\n");
      continue;
    }
    const Pattern p =
        std::strcmp(pattern, "clustered") == 0 ? Pattern::kClustered : Pattern::kSpread;
    const auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; ++i) {
      auto* word =
          reinterpret_cast<volatile uint64_t*>(base + dirty_pfn(p, i, n, pages) * kPageSize + 2048);
      *word = value;
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0);
    std::fprintf(out, "ok %lld\n", static_cast<long long>(ns.count()));
  }
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
    spec.tracker = tracker_name;
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
    ROMULUS_RETURN_IF_ERROR(proc->wait_attached(30s));
    if (tracker_name == "uffd") {
      ROMULUS_ASSIGN_OR_RETURN(tracker,
                               checkpoint::make_uffd_tracker(proc->pid(), proc->guest_arena_addr(),
                                                             arena.data(), arena.size()));
    } else {
      ROMULUS_ASSIGN_OR_RETURN(tracker,
                               checkpoint::make_compare_tracker(arena.data(), arena.size()));
    }
    return Status::ok();
  }

  // Has the guest write n pages; returns its own time for the writes, in µs.
  Result<double> write(Pattern p, uint64_t n, uint64_t value) {
    std::fprintf(cmd, "w %s %" PRIu64 " %" PRIu64 "\n", pattern_name(p), n, value);
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
               "pause_bench: %s\nusage: pause_bench [--trackers uffd,compare] "
               "[--counts 10,100,...] [--rounds R] [--arena-mib MIB]\n",
               msg);
  std::exit(2);
}

int bench_main(int argc, char** argv) {
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
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (opt.arena_bytes == 0 || opt.arena_bytes % kPageSize != 0) usage("bad --arena-mib");

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
  return 0;
}

}  // namespace
}  // namespace romulus::bench

int main(int argc, char** argv) {
  romulus::checkpoint::keep_checkpoint_buffers_in_heap();  // as the romulus binary does
  if (argc >= 2 && std::strcmp(argv[1], "--guest") == 0) return romulus::bench::guest_main();
  return romulus::bench::bench_main(argc, argv);
}
