// Messages from the backup to the primary (docs/protocol.md, "Backup
// messages"), framed like the chunk stream: a little-endian int32 type, then
// a fixed body.
//
//   ACK        kChunkAck       u64 epoch        checkpoint `epoch` is committed
//   HEARTBEAT  kChunkHeartbeat u64 ns           the backup's clock, for liveness
//   ERROR      kChunkError     u32 StatusCode, u16 length, text (<= kMaxRefusalReason)
//
// An ERROR is the last message of a stream: the backup sends it before it
// closes a connection whose checkpoint it discarded, so the primary can log
// why and start a full sync on a new connection.
//
// BackupMessageReader parses incrementally (any split of the input gives the
// same messages) and treats its input as hostile: it holds at most one
// incomplete message (<= 4 + 4 + 2 + kMaxRefusalReason bytes) between calls.
//
// Pure; a reader is used by one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "protocol/coding.h"
#include "common/status.h"

namespace romulus::protocol {

struct BackupMessage {
  enum class Kind { kAck, kHeartbeat, kError };
  Kind kind = Kind::kAck;
  uint64_t value = 0;  // kAck: epoch; kHeartbeat: ns
  Status error;        // kError: the backup's code and text (never OK)

  friend bool operator==(const BackupMessage&, const BackupMessage&) = default;
};

Bytes encode_ack(uint64_t epoch);
Bytes encode_backup_heartbeat(uint64_t ns);  // same bytes as encode_heartbeat()
// `error` must not be OK (an OK status is sent as kAborted); its text is cut to
// kMaxRefusalReason bytes at a UTF-8 character boundary.
Bytes encode_error(const Status& error);

class BackupMessageReader {
 public:
  // Parses every complete message in `data` (after what earlier calls left
  // over) and appends it to `out`. Errors (kCorrupt) stick: later calls return
  // the same error. Messages before the error in the same call are appended.
  Status feed(ByteSpan data, std::vector<BackupMessage>* out);

  // True if bytes of an incomplete message are held.
  bool has_partial() const { return !pending_.empty(); }
  uint64_t bytes_consumed() const { return bytes_consumed_; }

 private:
  // Parses one message at the front of `in`: bytes used, 0 if incomplete.
  Result<size_t> parse_one(ByteSpan in, std::vector<BackupMessage>* out);

  Bytes pending_;
  Status error_;
  uint64_t bytes_consumed_ = 0;
};

}  // namespace romulus::protocol
