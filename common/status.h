// Status and Result<T>: errors as values.
//
// Every fallible function in Romulus returns a Status (no value) or a
// Result<T> (a value or an error). Exceptions are not used below main() and
// option parsing. A Status carries a code and a human-readable message; layers
// add context on the way up with Status::context("what we were doing").
//
// Both types are plain values: copyable, movable, no shared state, safe to use
// from any thread.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace romulus {

enum class StatusCode {
  kOk = 0,
  kCorrupt,          // input bytes violate the format (hostile or damaged stream)
  kTruncated,        // input ended before a complete item
  kInvalidArgument,  // caller passed something unusable (bad option, bad size)
  kRefused,          // peer refused (handshake mismatch, activation refused)
  kIoError,          // a system call failed
  kUnavailable,      // peer unreachable, connection lost
  kUnsupported,      // kernel or platform lacks a feature
  kTimeout,          // a deadline passed
  kAborted,          // operation cancelled (shutdown, guest exit)
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  static Status corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
  static Status truncated(std::string m) { return {StatusCode::kTruncated, std::move(m)}; }
  static Status invalid_argument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status refused(std::string m) { return {StatusCode::kRefused, std::move(m)}; }
  static Status io_error(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  // io_error with strerror(err) appended: "open /dev/userfaultfd: Permission denied".
  static Status from_errno(std::string what, int err);
  static Status unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
  static Status aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "what: <old message>"; OK stays OK.
  Status context(std::string_view what) const;

  // "corrupt: PFN 7 out of range" (or "ok").
  std::string to_string() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value of T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).is_ok() && "Result built from an OK Status has no value");
  }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error; Status::ok() when a value is held.
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace romulus

// Propagates a non-OK Status from an expression returning Status.
#define ROMULUS_RETURN_IF_ERROR(expr)                     \
  do {                                                    \
    ::romulus::Status romulus_status_ = (expr);           \
    if (!romulus_status_.is_ok()) return romulus_status_; \
  } while (0)

#define ROMULUS_CONCAT_INNER_(a, b) a##b
#define ROMULUS_CONCAT_(a, b) ROMULUS_CONCAT_INNER_(a, b)

// ROMULUS_ASSIGN_OR_RETURN(auto x, f()); declares x from a Result or returns its Status.
#define ROMULUS_ASSIGN_OR_RETURN(lhs, expr) \
  ROMULUS_ASSIGN_OR_RETURN_IMPL_(ROMULUS_CONCAT_(romulus_result_, __LINE__), lhs, expr)
#define ROMULUS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.is_ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
