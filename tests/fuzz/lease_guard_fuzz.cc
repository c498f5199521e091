// Fuzz target for the lease guard's reader of its node's pipe
// (witness::GuardCommandReader): the input split at a point chosen by the
// first byte. It must return commands or an error, never crash or grow
// without bound; a split must not change the result; each command it returns
// must encode to text that decodes to the same command.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "witness/lease_guard.h"

using romulus::witness::GuardCommand;
using romulus::witness::GuardCommandReader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t cut = data[0] % size;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  GuardCommandReader whole_reader, split_reader;
  std::vector<GuardCommand> whole, split;
  const bool whole_ok = whole_reader.feed(text, &whole).is_ok();
  bool split_ok = split_reader.feed(text.substr(0, cut), &split).is_ok();
  if (split_ok)
    split_ok = split_reader.feed(text.substr(std::min(cut, text.size())), &split).is_ok();
  if (whole_ok != split_ok || whole != split) __builtin_trap();
  for (const GuardCommand& c : whole) {
    GuardCommandReader again;
    std::vector<GuardCommand> back;
    if (!again.feed(romulus::witness::encode_guard_command(c), &back).is_ok()) __builtin_trap();
    if (back.size() != 1 || !(back[0] == c)) __builtin_trap();
  }
  return 0;
}
