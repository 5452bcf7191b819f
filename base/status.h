// Status and StatusOr<T>: the only way errors cross module boundaries.
//
// Codes mirror containerd's errdefs classes, which in turn use gRPC's numbering
// (containerd/errdefs ToGRPC). A Status carries a human message; Wrap() prefixes
// context while keeping the code, the way `errors.Wrapf(errdefs.ErrX, ...)` does.
//
// On the wire (ttrpc Response.status) a Status is sent as {code, WireMessage()},
// where WireMessage() appends the errdefs class text (": not found") exactly as a
// wrapped Go errdefs error prints. containerd's FromGRPC strips that suffix again.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace runhcs {

enum class Code : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kNotImplemented = 12,  // gRPC "Unimplemented"
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// The errdefs/context text for a code ("not found"), or "" for codes errdefs
// has no class for.
std::string_view CodeText(Code code);
// Maps a wire integer to a Code; unknown numbers become kUnknown.
Code CodeFromInt(int code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "<context>: <message>", same code. Wrapping OK yields OK.
  Status Wrap(std::string_view context) const;
  // The message as a Go errdefs error would print it: "<message>: <class>".
  std::string WireMessage() const;
  // Inverse of WireMessage(): strips a trailing ": <class>" for `code`.
  static Status FromWire(int code, std::string_view message);
  // "NotFound: <message>" for logs.
  std::string ToString() const;

  bool operator==(const Status& o) const = default;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }

#define RUNHCS_DEFINE_ERROR(Name, CodeValue)                                     \
  template <typename... Args>                                                    \
  Status Name(fmt::format_string<Args...> f, Args&&... args) {                   \
    return Status(Code::CodeValue, fmt::format(f, std::forward<Args>(args)...)); \
  }
RUNHCS_DEFINE_ERROR(CancelledError, kCancelled)
RUNHCS_DEFINE_ERROR(UnknownError, kUnknown)
RUNHCS_DEFINE_ERROR(InvalidArgumentError, kInvalidArgument)
RUNHCS_DEFINE_ERROR(DeadlineExceededError, kDeadlineExceeded)
RUNHCS_DEFINE_ERROR(NotFoundError, kNotFound)
RUNHCS_DEFINE_ERROR(AlreadyExistsError, kAlreadyExists)
RUNHCS_DEFINE_ERROR(PermissionDeniedError, kPermissionDenied)
RUNHCS_DEFINE_ERROR(ResourceExhaustedError, kResourceExhausted)
RUNHCS_DEFINE_ERROR(FailedPreconditionError, kFailedPrecondition)
RUNHCS_DEFINE_ERROR(NotImplementedError, kNotImplemented)
RUNHCS_DEFINE_ERROR(InternalError, kInternal)
RUNHCS_DEFINE_ERROR(UnavailableError, kUnavailable)
#undef RUNHCS_DEFINE_ERROR

// An errno-based failure: "<what>: <strerror>", classified (ENOENT -> NotFound,
// EEXIST -> AlreadyExists, EINVAL -> InvalidArgument, EACCES/EPERM ->
// PermissionDenied, anything else -> Unknown).
Status ErrnoError(int err, std::string_view what);

// Holds either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(v_).ok()) v_ = Status(Code::kInternal, "StatusOr built from OK status");
  }
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace runhcs

#define RUNHCS_CONCAT_INNER(a, b) a##b
#define RUNHCS_CONCAT(a, b) RUNHCS_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define RETURN_IF_ERROR(expr)      \
  do {                             \
    ::runhcs::Status _st = (expr); \
    if (!_st.ok()) return _st;     \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, StatusOrExpr());`
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(RUNHCS_CONCAT(_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
