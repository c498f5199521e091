// Fuzz target for BackupMessageReader (protocol/backup_messages.h).
//
// Input: 2 bytes of piece-size seed, then the message bytes. They are fed
// whole and in pieces; both readers must produce the same messages and status.
// Every parsed message must re-encode to valid input that parses back to it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "protocol/backup_messages.h"

using namespace romulus;
using namespace romulus::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  uint32_t rng = data[0] | (data[1] << 8) | 1u;
  const ByteSpan input(data + 2, size - 2);

  BackupMessageReader whole;
  std::vector<BackupMessage> whole_msgs;
  const Status whole_status = whole.feed(input, &whole_msgs);

  BackupMessageReader pieces;
  std::vector<BackupMessage> piece_msgs;
  Status piece_status;
  ByteSpan rest = input;
  while (!rest.empty()) {
    rng = rng * 1103515245u + 12345u;
    const size_t n = std::min<size_t>(rest.size(), 1 + (rng >> 16) % 40);
    piece_status = pieces.feed(rest.first(n), &piece_msgs);
    if (!piece_status.is_ok()) break;
    rest = rest.subspan(n);
  }
  if (!(whole_status == piece_status) || whole_msgs != piece_msgs) __builtin_trap();

  for (const BackupMessage& m : whole_msgs) {
    Bytes b;
    switch (m.kind) {
      case BackupMessage::Kind::kAck:
        b = encode_ack(m.value);
        break;
      case BackupMessage::Kind::kHeartbeat:
        b = encode_backup_heartbeat(m.value);
        break;
      case BackupMessage::Kind::kError:
        if (m.error.is_ok()) __builtin_trap();
        b = encode_error(m.error);
        break;
    }
    BackupMessageReader again;
    std::vector<BackupMessage> out;
    if (!again.feed(b, &out).is_ok() || out.size() != 1 || !(out[0] == m)) __builtin_trap();
  }
  return 0;
}
