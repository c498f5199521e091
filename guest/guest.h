// The guest SDK: what a program protected by Romulus links.
//
// attach() maps the replicated arena the supervisor passed in (ROMULUS_ARENA_FD,
// ROMULUS_ARENA_SIZE, ROMULUS_CONTROL_FD), arms dirty tracking if asked
// (ROMULUS_TRACKER=uffd: userfaultfd async write-protect over the arena), tells the
// supervisor it is ready through the control page, and hands back an Arena: its
// bytes, whether this start is a resume after failover, and a Boost.Interprocess
// segment living inside it. Without ROMULUS_ARENA_FD the program runs alone on a
// private anonymous arena (ROMULUS_ARENA_SIZE or 64 MiB), never resumed.
//
// Ownership and threads: the arena is process-wide and lives until exit. attach()
// is thread-safe and idempotent: the first call does the work, later calls return
// the same Arena (or the same error). Arena is a cheap copyable handle. The
// segment is Boost's: allocations and find_or_construct need the program's own
// locking if several threads use it (Boost's segment mutexes are process-local
// here as in any managed_external_buffer).
//
// Only state inside the arena survives a failover. Everything in it must be
// position-independent (boost::interprocess::offset_ptr, offsets): the arena is
// mapped at a different address after a resume.
//
// Update: a change made inside an Update is in a checkpoint entirely or not at all.
//
//   auto arena = romulus::guest::attach();
//   if (!arena.is_ok()) { fprintf(stderr, "%s\n", arena.status().to_string().c_str()); return 1; }
//   auto* counters = arena->segment().find_or_construct<uint64_t>("counters")[64](0);
//   { romulus::guest::Update u; for (int i = 0; i < 64; ++i) ++counters[i]; }
//
// The supervisor's pause waits for open Updates to close and holds new ones back;
// outside an Update the program may be stopped at any instruction. Keep Updates
// short (a pause waits at most the supervisor's gate timeout, then postpones the
// checkpoint). Updates nest on one thread (only the outermost counts); an Update
// must be closed on the thread that opened it. Never block in an Update on
// something another thread does inside a *new* Update: that thread may be held
// back by a pending pause.
#pragma once

#include <boost/interprocess/managed_external_buffer.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"
#include "guest/environment.h"

namespace romulus::guest {

namespace detail {
struct ArenaState;
}

inline constexpr size_t kPrivateArenaDefaultSize = size_t{64} << 20;

class Arena {
 public:
  uint8_t* base() const;
  size_t size() const;

  // True when started by a supervisor (false: private fallback arena).
  bool supervised() const;
  // True when this start continues the state of a failed primary.
  bool resumed() const;
  // The epoch whose committed image the arena holds, on a resume.
  std::optional<uint64_t> resumed_epoch() const;
  // The port the program should serve on when the supervisor proxies a service.
  std::optional<uint16_t> service_port() const;
  // "uffd", "uffd-sync", "compare" (tracking done by the supervisor) or "none"
  // (private arena).
  std::string_view tracker() const;

  // The managed segment over the whole arena: created on a fresh start, opened on
  // a resume (attach() fails if the arena holds no segment of its size; it
  // creates one if the checkpoint resumed from predates the segment).
  boost::interprocess::managed_external_buffer& segment() const;

 private:
  friend Result<Arena> attach();
  explicit Arena(detail::ArenaState* state) : state_(state) {}
  detail::ArenaState* state_;
};

Result<Arena> attach();

// RAII all-or-nothing section. Not copyable or movable.
class Update {
 public:
  Update();
  ~Update();
  Update(const Update&) = delete;
  Update& operator=(const Update&) = delete;
};

// The same as Update, for code that cannot use RAII (the C ABI). Calls must pair
// on one thread.
void update_begin();
void update_end();

}  // namespace romulus::guest
