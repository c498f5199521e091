// Fuzz target for checkpoint::parse_stat_state, the reader of a guest thread's
// /proc/PID/task/TID/stat text, whose command name (between the parentheses)
// the guest chooses freely (prctl(PR_SET_NAME)): hostile input. It must return
// a state or nothing, never crash or read past the text; a state it returns is
// a letter, the field right after the last ')' and its space. The same bytes
// go to checkpoint::syscall_text_says_busy, the reader of .../syscall (written
// by the kernel, read here as hostile all the same): busy only for "running"
// or "-1" followed by the end, a space or a newline.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "checkpoint/scheduler_probe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (romulus::checkpoint::syscall_text_says_busy(text)) {
    const bool running = text.substr(0, 7) == "running";
    const bool outside = text.size() >= 2 && text.substr(0, 2) == "-1" &&
                         (text.size() == 2 || text[2] == ' ' || text[2] == '\n');
    if (!running && !outside) __builtin_trap();
  }
  const auto state = romulus::checkpoint::parse_stat_state(text);
  if (!state) return 0;
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos || close + 2 >= text.size()) __builtin_trap();
  if (text[close + 1] != ' ' || text[close + 2] != *state) __builtin_trap();
  if (!std::isalpha(static_cast<unsigned char>(*state))) __builtin_trap();
  return 0;
}
