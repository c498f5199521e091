// romulus-counter: N counters, each in its own arena page, all incremented by one
// inside a single romulus::guest::Update. Every checkpoint must therefore hold N
// equal counters. On a resume it continues from (and prints) the resumed value.
//
//   romulus-counter [--counters N] [--max V] [--print-every SECONDS] [--sleep-us U]
//
// Stops after reaching V (--max), or on SIGTERM/SIGINT; prints the value on exit.
// The counters are found in the segment under the name "romulus-counter"
// (CounterState below), which tests open to read them.
#include <signal.h>
#include <unistd.h>

#include <boost/interprocess/offset_ptr.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "guest/guest.h"

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// Counter i is the uint64_t at pages + i * 4096.
struct CounterState {
  boost::interprocess::offset_ptr<uint8_t> pages;
  uint64_t counters;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "romulus-counter: %s\nusage: romulus-counter [--counters N] [--max V] "
               "[--print-every SECONDS] [--sleep-us U]\n",
               msg);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t n = 64, max = 0, sleep_us = 0;
  double print_every = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--counters") {
      n = std::strtoull(v, nullptr, 10);
    } else if (a == "--max") {
      max = std::strtoull(v, nullptr, 10);
    } else if (a == "--print-every") {
      print_every = std::strtod(v, nullptr);
    } else if (a == "--sleep-us") {
      sleep_us = std::strtoull(v, nullptr, 10);
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (n == 0) usage("--counters must be positive");
  auto arena = romulus::guest::attach();
  if (!arena.is_ok()) {
    std::fprintf(stderr, "romulus-counter: %s\n", arena.status().to_string().c_str());
    return 1;
  }
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  auto& segment = arena->segment();
  CounterState* state = nullptr;
  try {
    romulus::guest::Update u;  // the state and its pages appear together
    state = segment.find_or_construct<CounterState>("romulus-counter")();
    if (state->pages == nullptr) {
      auto* pages = static_cast<uint8_t*>(segment.allocate_aligned(n * 4096, 4096));
      std::memset(pages, 0, n * 4096);
      state->counters = n;
      state->pages = pages;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-counter: cannot place %llu counter pages in the arena: %s\n",
                 static_cast<unsigned long long>(n), e.what());
    return 1;
  }
  n = state->counters;
  uint8_t* pages = state->pages.get();
  auto counter = [pages](uint64_t i) {
    return reinterpret_cast<volatile uint64_t*>(pages + i * 4096);
  };
  if (arena->resumed()) {
    // Every checkpoint holds all counters equal (one Update increments them
    // all); an image that mixed two checkpoints would not.
    for (uint64_t i = 1; i < n; ++i) {
      if (*counter(i) != *counter(0)) {
        std::printf(
            "romulus-counter: INCONSISTENT resume at epoch %llu: counter %llu = %llu, "
            "counter 0 = %llu\n",
            static_cast<unsigned long long>(arena->resumed_epoch().value_or(0)),
            static_cast<unsigned long long>(i), static_cast<unsigned long long>(*counter(i)),
            static_cast<unsigned long long>(*counter(0)));
        std::fflush(stdout);
        return 4;
      }
    }
    std::printf(
        "romulus-counter: resumed at epoch %llu with value %llu (all %llu counters equal)\n",
        static_cast<unsigned long long>(arena->resumed_epoch().value_or(0)),
        static_cast<unsigned long long>(*counter(0)), static_cast<unsigned long long>(n));
    std::fflush(stdout);
  }

  using Clock = std::chrono::steady_clock;
  auto last_print = Clock::now();
  uint64_t value = *counter(0);
  while (!g_stop && (max == 0 || value < max)) {
    {
      romulus::guest::Update u;
      for (uint64_t i = 0; i < n; ++i) *counter(i) = *counter(i) + 1;
      value = *counter(0);
    }
    if (sleep_us) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    if (print_every > 0 &&
        std::chrono::duration<double>(Clock::now() - last_print).count() >= print_every) {
      std::printf("romulus-counter: value %llu\n", static_cast<unsigned long long>(value));
      std::fflush(stdout);
      last_print = Clock::now();
    }
  }
  std::printf("romulus-counter: value %llu\n", static_cast<unsigned long long>(value));
  return 0;
}
