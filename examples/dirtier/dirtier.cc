// romulus-dirtier: a guest that dirties a chosen number of arena pages per second.
//
//   romulus-dirtier [--pages-per-sec N] [--pattern sparse|clustered|dense]
//                   [--span PAGES] [--seconds S] [--update] [--fill]
//
// Pages are picked at random in a region of --span pages allocated in the arena
// (default: 3/4 of it). What one "page write" touches:
//   sparse     one byte in every 1 KiB of the page (4 bytes; the classic load)
//   clustered  256 contiguous bytes, and pages taken in runs of 16 neighbours
//   dense      the whole page
// --pages-per-sec 0 (the default) writes as fast as it can. --update wraps each
// page write in a romulus::guest::Update. Runs --seconds (default: until SIGTERM or
// SIGINT), then prints the achieved rate on stdout. --fill first writes every page
// of the region whole (a populated arena, for initial-sync benchmarks) and prints
// "romulus-dirtier: filled N pages".
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/offset_ptr.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "guest/guest.h"

namespace {

volatile sig_atomic_t g_stop = 0;  // set by the signal handler only
void on_signal(int) { g_stop = 1; }

enum class Pattern { kSparse, kClustered, kDense };

struct Options {
  uint64_t pages_per_sec = 0;
  Pattern pattern = Pattern::kSparse;
  uint64_t span = 0;
  double seconds = 0;
  bool update = false;
  bool fill = false;
};

// Lives in the arena so a resumed dirtier keeps using the same region.
struct DirtierState {
  boost::interprocess::offset_ptr<uint8_t> region;
  uint64_t span;
  uint64_t writes;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "romulus-dirtier: %s\nusage: romulus-dirtier [--pages-per-sec N] "
               "[--pattern sparse|clustered|dense] [--span PAGES] [--seconds S] [--update] "
               "[--fill]\n",
               msg);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--pages-per-sec") {
      o.pages_per_sec = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--pattern") {
      std::string p = value();
      if (p == "sparse") {
        o.pattern = Pattern::kSparse;
      } else if (p == "clustered") {
        o.pattern = Pattern::kClustered;
      } else if (p == "dense") {
        o.pattern = Pattern::kDense;
      } else {
        usage(("unknown pattern " + p).c_str());
      }
    } else if (a == "--span") {
      o.span = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--seconds") {
      o.seconds = std::strtod(value().c_str(), nullptr);
    } else if (a == "--update") {
      o.update = true;
    } else if (a == "--fill") {
      o.fill = true;
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  return o;
}

void write_page(uint8_t* page, Pattern pattern, uint8_t v, uint32_t r) {
  switch (pattern) {
    case Pattern::kSparse:
      for (size_t off = r % 1024; off < 4096; off += 1024) page[off] = v;
      break;
    case Pattern::kClustered:
      std::memset(page + (r % 15) * 256, v, 256);
      break;
    case Pattern::kDense:
      std::memset(page, v, 4096);
      break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  auto arena = romulus::guest::attach();
  if (!arena.is_ok()) {
    std::fprintf(stderr, "romulus-dirtier: %s\n", arena.status().to_string().c_str());
    return 1;
  }
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  auto& segment = arena->segment();
  DirtierState* state = nullptr;
  try {
    state = segment.find_or_construct<DirtierState>("romulus-dirtier")();
    if (state->region == nullptr) {
      uint64_t span = opt.span ? opt.span : arena->size() / 4096 * 3 / 4;
      state->region = static_cast<uint8_t*>(segment.allocate_aligned(span * 4096, 4096));
      state->span = span;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-dirtier: cannot place a %llu-page region in the arena: %s\n",
                 static_cast<unsigned long long>(opt.span), e.what());
    return 1;
  }
  uint8_t* region = state->region.get();
  const uint64_t span = state->span;
  if (arena->resumed()) {
    std::printf("romulus-dirtier: resumed at epoch %llu after %llu page writes\n",
                static_cast<unsigned long long>(arena->resumed_epoch().value_or(0)),
                static_cast<unsigned long long>(state->writes));
    std::fflush(stdout);
  }

  if (opt.fill && !arena->resumed()) {
    for (uint64_t pfn = 0; pfn < span && !g_stop; ++pfn) {
      std::memset(region + pfn * 4096, static_cast<int>(pfn % 251 + 1), 4096);
    }
    std::printf("romulus-dirtier: filled %llu pages\n", static_cast<unsigned long long>(span));
    std::fflush(stdout);
  }

  std::mt19937_64 rng(std::random_device{}());
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  uint64_t written = 0;
  uint64_t cluster_next = 0, cluster_left = 0;
  uint8_t value = 1;
  while (!g_stop) {
    auto now = Clock::now();
    double elapsed = std::chrono::duration<double>(now - start).count();
    if (opt.seconds > 0 && elapsed >= opt.seconds) break;
    uint64_t batch = 1024;
    if (opt.pages_per_sec > 0) {
      auto due = static_cast<uint64_t>(elapsed * static_cast<double>(opt.pages_per_sec));
      if (due <= written) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        continue;
      }
      batch = std::min<uint64_t>(due - written, 4096);
    }
    for (uint64_t i = 0; i < batch; ++i) {
      uint64_t r = rng();
      uint64_t pfn;
      if (opt.pattern == Pattern::kClustered) {
        if (cluster_left == 0) {
          cluster_next = r % span;
          cluster_left = 16;
        }
        pfn = cluster_next++ % span;
        --cluster_left;
      } else {
        pfn = r % span;
      }
      if (opt.update) {
        romulus::guest::Update u;
        write_page(region + pfn * 4096, opt.pattern, value, static_cast<uint32_t>(r >> 32));
        ++state->writes;
      } else {
        write_page(region + pfn * 4096, opt.pattern, value, static_cast<uint32_t>(r >> 32));
        ++state->writes;
      }
      if (++value == 0) value = 1;
    }
    written += batch;
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("romulus-dirtier: %llu page writes in %.2f s (%.0f pages/s)\n",
              static_cast<unsigned long long>(written), secs,
              secs > 0 ? static_cast<double>(written) / secs : 0.0);
  return 0;
}
