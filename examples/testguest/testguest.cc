// romulus-testguest: a guest for tests. It attaches, then executes one command per
// line read from fd $ROMULUS_TEST_CMD_FD (default stdin) and answers one line per
// command on fd $ROMULUS_TEST_ACK_FD (default stdout):
//
//   info                 -> "ok base=<hex> size=<n> resumed=<0|1> tracker=<name>"
//   w OFF LEN VAL        memset(arena+OFF, VAL, LEN)            -> "ok"
//   r OFF                -> "ok <byte value at arena+OFF>"
//   zap OFF LEN          madvise(arena+OFF, LEN, MADV_DONTNEED): drops this process's
//                        page-table entries of those pages, as reclaim would (the
//                        memfd keeps the bytes)            -> "ok" or "err <errno>"
//   ub / ue              update_begin() / update_end()          -> "ok"
//   nested               three nested Updates, written in, closed -> "ok"
//   threads N            N threads loop { Update { ++a[i]; ++b[i]; } } where a[i] is
//                        the u64 at page 1+2i and b[i] at page 2+2i -> "ok"
//   scribble N FIRST SEED  N threads loop, outside any Update, adding 1 to a random
//                        8-byte word of a random page in [FIRST, end) (xorshift,
//                        seeded by SEED and the thread), so every write changes
//                        bytes and a pause may stop them at any instruction -> "ok"
//   stopthreads          stop and join them                      -> "ok"
//   spawn                run a second romulus-testguest as a child (same environment,
//                        so the same arena fds, stdin /dev/null) and wait for it
//                        -> "ok <its exit status>" (3: its attach was refused)
//   exit N               exit(N) at once (no answer)
//   crash                raise SIGSEGV (no answer)
// Attach failure: message on stderr, exit status 3.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "guest/guest.h"

namespace {

int env_fd(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

}  // namespace

int main() {
  auto arena = romulus::guest::attach();
  if (!arena.is_ok()) {
    std::fprintf(stderr, "testguest: %s\n", arena.status().to_string().c_str());
    return 3;
  }
  uint8_t* base = arena->base();
  const size_t size = arena->size();
  FILE* in = fdopen(env_fd("ROMULUS_TEST_CMD_FD", 0), "r");
  FILE* out = fdopen(env_fd("ROMULUS_TEST_ACK_FD", 1), "w");
  if (in == nullptr || out == nullptr) return 4;
  setvbuf(out, nullptr, _IOLBF, 0);

  std::atomic<bool> stop_threads{false};
  std::vector<std::thread> threads;
  char line[256];
  while (std::fgets(line, sizeof(line), in) != nullptr) {
    char cmd[32] = {0};
    unsigned long long a = 0, b = 0, c = 0;
    int n = std::sscanf(line, "%31s %llu %llu %llu", cmd, &a, &b, &c);
    if (n < 1) continue;
    std::string op = cmd;
    if (op == "info") {
      std::fprintf(out, "ok base=%p size=%zu resumed=%d tracker=%s\n", static_cast<void*>(base),
                   size, arena->resumed() ? 1 : 0, std::string(arena->tracker()).c_str());
    } else if (op == "w" && n == 4 && a + b <= size) {
      std::memset(base + a, static_cast<int>(c), b);
      std::fprintf(out, "ok\n");
    } else if (op == "zap" && n == 3 && a + b <= size && a % 4096 == 0) {
      if (madvise(base + a, b, MADV_DONTNEED) == 0) {
        std::fprintf(out, "ok\n");
      } else {
        std::fprintf(out, "err %d\n", errno);
      }
    } else if (op == "r" && n == 2 && a < size) {
      std::fprintf(out, "ok %u\n", static_cast<unsigned>(base[a]));
    } else if (op == "ub") {
      romulus::guest::update_begin();
      std::fprintf(out, "ok\n");
    } else if (op == "ue") {
      romulus::guest::update_end();
      std::fprintf(out, "ok\n");
    } else if (op == "nested") {
      {
        romulus::guest::Update u1;
        base[0] = 1;
        {
          romulus::guest::Update u2;
          romulus::guest::Update u3;
          base[1] = 2;
        }
      }
      std::fprintf(out, "ok\n");
    } else if (op == "threads" && n == 2 && (2 * a + 3) * 4096 <= size) {
      stop_threads = false;
      for (unsigned long long i = 0; i < a; ++i) {
        threads.emplace_back([&stop_threads, base, i] {
          auto* x = reinterpret_cast<volatile uint64_t*>(base + (1 + 2 * i) * 4096);
          auto* y = reinterpret_cast<volatile uint64_t*>(base + (2 + 2 * i) * 4096);
          while (!stop_threads.load(std::memory_order_relaxed)) {
            romulus::guest::Update u;
            *x = *x + 1;
            for (int k = 0; k < 50; ++k) __asm__ volatile("" ::: "memory");
            *y = *y + 1;
          }
        });
      }
      std::fprintf(out, "ok\n");
    } else if (op == "scribble" && n == 4 && b < size / 4096) {
      stop_threads = false;
      const uint64_t pages = size / 4096 - b;
      for (unsigned long long i = 0; i < a; ++i) {
        threads.emplace_back([&stop_threads, base, pages, first = b, seed = c, i] {
          uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xD1B54A32D192ED03ull + 1;
          while (!stop_threads.load(std::memory_order_relaxed)) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            const uint64_t page = first + x % pages;
            auto* word =
                reinterpret_cast<volatile uint64_t*>(base + page * 4096 + ((x >> 40) % 512) * 8);
            *word = *word + 1;
          }
        });
      }
      std::fprintf(out, "ok\n");
    } else if (op == "stopthreads") {
      stop_threads = true;
      for (auto& t : threads) t.join();
      threads.clear();
      std::fprintf(out, "ok\n");
    } else if (op == "spawn") {
      fflush(nullptr);
      pid_t child = fork();
      if (child == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0) _exit(126);
        unsetenv("ROMULUS_TEST_CMD_FD");
        unsetenv("ROMULUS_TEST_ACK_FD");
        execl("/proc/self/exe", "romulus-testguest", static_cast<char*>(nullptr));
        _exit(127);
      }
      int status = 0;
      if (child < 0 || waitpid(child, &status, 0) != child) {
        std::fprintf(out, "err spawn failed\n");
      } else {
        std::fprintf(out, "ok %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128);
      }
    } else if (op == "exit" && n == 2) {
      std::_Exit(static_cast<int>(a));
    } else if (op == "crash") {
      signal(SIGSEGV, SIG_DFL);  // not a sanitizer's handler: really die by the signal
      raise(SIGSEGV);
    } else {
      std::fprintf(out, "err bad command: %s", line);
    }
  }
  stop_threads = true;
  for (auto& t : threads) t.join();
  return 0;
}
