// Fuzz target: the bank's request parser (examples/bank/bank_request.h) over
// arbitrary bytes: it returns a request or an error text, never crashes or reads
// out of bounds, and a TRANSFER's fields respect the grammar.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "examples/bank/bank_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto result = romulus::bank::parse_request(line);
  if (auto* r = std::get_if<romulus::bank::Request>(&result)) {
    if (r->command == romulus::bank::Command::kTransfer) {
      if (r->amount == 0 || r->from == r->to || r->id.empty() ||
          r->id.size() > romulus::bank::kMaxIdBytes) {
        std::abort();
      }
    }
  }
  return 0;
}
