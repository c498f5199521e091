// Where tests find the built example guests. ctest sets ROMULUS_BUILD_DIR; when a
// test binary is run by hand, the build directory is found from the binary's own
// path (<build>/tests/<binary>).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <string>

namespace romulus::testing {

inline std::string build_dir() {
  if (const char* dir = std::getenv("ROMULUS_BUILD_DIR")) return dir;
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string exe(buf, static_cast<size_t>(n));
  for (int i = 0; i < 2; ++i) exe = exe.substr(0, exe.rfind('/'));  // drop /tests/<binary>
  return exe;
}

// e.g. example_binary("dirtier") -> <build>/examples/dirtier/romulus-dirtier
inline std::string example_binary(const std::string& name) {
  return build_dir() + "/examples/" + name + "/romulus-" + name;
}

inline std::string dirtier_path() { return example_binary("dirtier"); }
inline std::string counter_path() { return example_binary("counter"); }
inline std::string testguest_path() { return example_binary("testguest"); }

}  // namespace romulus::testing
