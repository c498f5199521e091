// libromulus_sqlite_preload.so: protects an unmodified program that uses the
// system's shared libsqlite3.
//
//   romulus primary ... -- env LD_PRELOAD=/path/libromulus_sqlite_preload.so python3 app.py
//
// The library attaches the arena (romulus::guest::attach(), which also tells the
// supervisor the guest is up) and registers the `romulus` VFS as SQLite's
// default in the process that uses SQLite, so every database the program opens
// by name lives in the arena. Its sqlite3_open, sqlite3_open_v2 and
// sqlite3_open16 stand in front of SQLite's and do that before the first
// database is opened, then call SQLite's. Not in a constructor: launchers in
// front of the program (env, sh, a pyenv shim and the helper processes it
// forks) inherit LD_PRELOAD too, and each would map the arena and build a
// segment in it (the process the supervisor watches must be the one that
// attaches).
//
// After attaching, the process removes the supervisor's variables (and this
// library from LD_PRELOAD) from its environment, so that a child it starts
// never attaches the same arena. If attaching fails, the open fails
// (SQLITE_CANTOPEN, one line on stderr): data that would not be replicated is
// never written. Without a supervisor the databases live in a private arena and
// vanish at exit; a warning says so.
//
// Limits (docs/operations.md, "Protecting a SQLite program"): state outside the
// databases is not replicated (the program restarts from main() on the backup);
// the program must open a database within the supervisor's attach wait (10 s);
// a database opened by another library's constructor before ours ran uses the
// previous default VFS; a statically linked SQLite is not reached.
#include <dlfcn.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "guest/guest.h"
#include "guest/sqlite/sqlite_vfs.h"

namespace {

// Removes this library from LD_PRELOAD, and the supervisor's variables.
void hide_from_children() {
  for (const char* name :
       {romulus::guest::kEnvArenaFd, romulus::guest::kEnvArenaSize, romulus::guest::kEnvControlFd,
        romulus::guest::kEnvTracker, romulus::guest::kEnvResumedEpoch}) {
    unsetenv(name);
  }
  const char* preload = std::getenv("LD_PRELOAD");
  if (preload == nullptr) return;
  std::string kept, list = preload;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find_first_of(": ", start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    if (!item.empty() && item.find("libromulus_sqlite_preload") == std::string::npos) {
      if (!kept.empty()) kept += ':';
      kept += item;
    }
    start = end + 1;
  }
  if (kept.empty()) {
    unsetenv("LD_PRELOAD");
  } else {
    setenv("LD_PRELOAD", kept.c_str(), 1);
  }
}

// Attaches and registers once per process; false (with the reason on stderr) on failure.
bool ensure_registered() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    const bool supervised = std::getenv(romulus::guest::kEnvArenaFd) != nullptr;
    romulus::Status st = romulus::guest::register_sqlite_vfs(/*make_default=*/true);
    if (!st.is_ok()) {
      std::fprintf(stderr,
                   "romulus sqlite preload: %s; SQLite opens fail rather than write data that "
                   "would not be replicated\n",
                   st.to_string().c_str());
      return;
    }
    hide_from_children();
    if (!supervised) {
      std::fprintf(stderr,
                   "romulus sqlite preload: not started by romulus (no ROMULUS_ARENA_FD): SQLite "
                   "databases live in a private arena and are lost at exit\n");
    }
    ok = true;
  });
  return ok;
}

template <typename F>
F next_symbol(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int sqlite3_open_v2(const char* name, sqlite3** db, int flags, const char* vfs) {
  static auto real =
      next_symbol<int (*)(const char*, sqlite3**, int, const char*)>("sqlite3_open_v2");
  if (!ensure_registered()) {
    if (db) *db = nullptr;
    return SQLITE_CANTOPEN;
  }
  return real(name, db, flags, vfs);
}

int sqlite3_open(const char* name, sqlite3** db) {
  static auto real = next_symbol<int (*)(const char*, sqlite3**)>("sqlite3_open");
  if (!ensure_registered()) {
    if (db) *db = nullptr;
    return SQLITE_CANTOPEN;
  }
  return real(name, db);
}

int sqlite3_open16(const void* name, sqlite3** db) {
  static auto real = next_symbol<int (*)(const void*, sqlite3**)>("sqlite3_open16");
  if (!ensure_registered()) {
    if (db) *db = nullptr;
    return SQLITE_CANTOPEN;
  }
  return real(name, db);
}

}  // extern "C"
