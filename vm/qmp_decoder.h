// QmpDecoder: the receiving half of QEMU's machine protocol (QMP), bytes in,
// messages out. Pure: no sockets, no clock.
//
// QMP framing, as QEMU writes it: one JSON object per line, each line ended by
// "\r\n" (a bare "\n" is accepted too; blank lines are skipped). Each object is
// exactly one of
//
//   greeting  {"QMP": {"version": {...}, "capabilities": [...]}}
//   return    {"return": VALUE [, "id": ID]}
//   error     {"error": {"class": "GenericError", "desc": "TEXT"} [, "id": ID]}
//   event     {"event": "NAME", "data": {...}, "timestamp": {...}}
//
// Input is hostile (a QEMU that is not QEMU, a socket of someone else's): a
// line longer than the limit, bytes that are not JSON, JSON that is not an
// object, an object that is none of the four, or an error without a string
// desc is kCorrupt. The first error sticks: the stream cannot be resynchronised
// (a line is only known to end at its '\n'). Memory held is bounded by the
// line limit plus the messages not yet taken.
//
// Any split of the same bytes into feed() calls gives the same messages and the
// same error (the model contract of protocol/checkpoint_reader.h).
//
// Threading: one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "common/status.h"

namespace romulus::vm {

enum class QmpMessageKind { kGreeting, kReturn, kError, kEvent };

struct QmpMessage {
  QmpMessageKind kind = QmpMessageKind::kReturn;
  // greeting: the "QMP" object; return: the "return" value; error: the
  // "error" object; event: the "data" value (null when absent).
  boost::json::value value;
  // The "id" the command carried, echoed by QEMU in its return or error.
  std::optional<uint64_t> id;
  std::string event;        // event: its name
  std::string error_class;  // error: "GenericError", "CommandNotFound", ...
  std::string error_desc;   // error: QEMU's text, made one printable line
};

class QmpDecoder {
 public:
  // QEMU's longest line in practice is a query reply of some KiB; a megabyte
  // leaves room for large query-* replies and bounds a hostile peer.
  static constexpr size_t kDefaultMaxLineBytes = size_t{1} << 20;

  explicit QmpDecoder(size_t max_line_bytes = kDefaultMaxLineBytes)
      : max_line_bytes_(max_line_bytes) {}

  // Consumes all of `data`; every complete line becomes a message queued for
  // next(). Returns the first error of the stream; once failed, every later
  // call returns that same error and consumes nothing.
  Status feed(std::string_view data);

  // The oldest decoded message not yet taken.
  std::optional<QmpMessage> next();
  size_t pending() const { return messages_.size(); }

  // OK, or the sticky error.
  const Status& status() const { return error_; }
  // Bytes of an incomplete line held.
  size_t buffered() const { return line_.size(); }

 private:
  Status decode_line(std::string_view line);

  size_t max_line_bytes_;
  std::string line_;  // the incomplete line so far (without '\n')
  std::deque<QmpMessage> messages_;
  Status error_;
  uint64_t lines_ = 0;  // complete lines seen, for error messages
};

// QEMU's text made one printable line: control characters (newlines included)
// become spaces, and it is cut to max_bytes with "...". For error descs,
// which become Status messages.
std::string one_line(std::string_view text, size_t max_bytes = 512);

}  // namespace romulus::vm
