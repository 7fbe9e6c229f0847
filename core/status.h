// Status and Result<T>: errors as values across module boundaries.
//
// A Status is either OK or carries a code and a human-readable message saying *why*. Result<T>
// holds either a value or a non-OK Status. Neither throws. Both are cheap to move.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tributary {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // caller passed something malformed (bad config, wrong shape).
  kNotFound,           // a file, peer or job does not exist.
  kCorruption,         // bytes failed a hash / parse check.
  kIoError,            // the OS said no (disk, socket).
  kDeadlineExceeded,   // a wait ran out of time.
  kUnavailable,        // the other side went away (EOF, reset, refused).
  kProtocolError,      // the other side sent something the protocol forbids.
  kFailedPrecondition, // the system is not in a state where this works.
  kAborted,            // the operation was cancelled or aborted by a peer/coordinator.
  kInternal,           // a bug: an invariant broke.
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "DEADLINE_EXCEEDED: peer 2 did not answer within 5000 ms"
  std::string ToString() const;
  // Returns a copy with `context + ": "` prepended to the message (code unchanged).
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status ProtocolError(std::string m) { return {StatusCode::kProtocolError, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result constructed from an OK status without a value");
    if (status_.ok()) status_ = Internal("Result built from OK status without value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;  // OK iff value_ is set
};

#define TRIB_CONCAT_INNER(a, b) a##b
#define TRIB_CONCAT(a, b) TRIB_CONCAT_INNER(a, b)

#define TRIB_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::tributary::Status _trib_status = (expr);      \
    if (!_trib_status.ok()) return _trib_status;    \
  } while (0)

#define TRIB_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

// TRIB_ASSIGN_OR_RETURN(auto x, FunctionReturningResult());
#define TRIB_ASSIGN_OR_RETURN(lhs, expr) \
  TRIB_ASSIGN_OR_RETURN_IMPL(TRIB_CONCAT(_trib_result_, __LINE__), lhs, expr)

}  // namespace tributary
