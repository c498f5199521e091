#include "common/status.h"

#include <cstring>

namespace romulus {

std::string_view status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kCorrupt:
      return "corrupt";
    case StatusCode::kTruncated:
      return "truncated";
    case StatusCode::kInvalidArgument:
      return "invalid argument";
    case StatusCode::kRefused:
      return "refused";
    case StatusCode::kIoError:
      return "I/O error";
    case StatusCode::kUnavailable:
      return "unavailable";
    case StatusCode::kUnsupported:
      return "unsupported";
    case StatusCode::kTimeout:
      return "timeout";
    case StatusCode::kAborted:
      return "aborted";
  }
  return "unknown";
}

Status Status::from_errno(std::string what, int err) {
  char buf[256];
  // GNU strerror_r returns the message pointer (which may or may not be buf).
  const char* msg = strerror_r(err, buf, sizeof buf);
  return io_error(std::move(what) + ": " + msg);
}

Status Status::context(std::string_view what) const {
  if (is_ok()) return *this;
  return Status(code_, std::string(what) + ": " + message_);
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

}  // namespace romulus
