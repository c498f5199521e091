// Fuzz target for QmpDecoder (vm/qmp_decoder.h): whatever a QEMU (or anything
// on its socket) sends must decode or fail, never crash, and any split of the
// input must give the same messages and the same error.
//
// The first byte picks the split: the rest is fed whole, then in pieces of
// 1 + (byte % 64) bytes, and both runs are compared.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "vm/qmp_decoder.h"

using namespace romulus::vm;

namespace {

// A small line limit, so the fuzzer reaches it.
constexpr size_t kMaxLine = 4096;

std::string summary(const QmpMessage& m) {
  return std::to_string(static_cast<int>(m.kind)) + "|" +
         (m.id ? std::to_string(*m.id) : std::string("-")) + "|" + m.event + "|" + m.error_class +
         "|" + m.error_desc + "|" + boost::json::serialize(m.value);
}

std::vector<std::string> run(std::string_view input, size_t piece, romulus::Status& status) {
  QmpDecoder d(kMaxLine);
  std::vector<std::string> out;
  for (size_t at = 0; at < input.size(); at += piece) {
    status = d.feed(input.substr(at, piece));
    while (auto m = d.next()) {
      if (m->kind == QmpMessageKind::kError && m->error_desc.find('\n') != std::string::npos) {
        __builtin_trap();  // a desc is one line
      }
      out.push_back(summary(*m));
    }
    if (!status.is_ok()) break;
  }
  if (d.buffered() > kMaxLine) __builtin_trap();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  romulus::Status whole_status, split_status;
  auto whole = run(input, input.size() + 1, whole_status);
  auto split = run(input, piece, split_status);
  if (whole != split || !(whole_status == split_status)) __builtin_trap();
  return 0;
}
