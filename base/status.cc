#include "base/status.h"

#include <cerrno>
#include <cstring>

namespace runhcs {

std::string_view CodeText(Code code) {
  switch (code) {
    case Code::kCancelled:
      return "context canceled";
    case Code::kUnknown:
      return "unknown";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kDeadlineExceeded:
      return "context deadline exceeded";
    case Code::kNotFound:
      return "not found";
    case Code::kAlreadyExists:
      return "already exists";
    case Code::kFailedPrecondition:
      return "failed precondition";
    case Code::kNotImplemented:
      return "not implemented";
    case Code::kUnavailable:
      return "unavailable";
    default:
      return "";
  }
}

Code CodeFromInt(int code) {
  if (code < 0 || code > static_cast<int>(Code::kUnauthenticated)) return Code::kUnknown;
  return static_cast<Code>(code);
}

Status Status::Wrap(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, fmt::format("{}: {}", context, message_));
}

std::string Status::WireMessage() const {
  std::string_view cls = CodeText(code_);
  // kUnknown carries plain errors; Go prints them without a class.
  if (cls.empty() || code_ == Code::kUnknown) return message_;
  if (message_.empty()) return std::string(cls);
  return fmt::format("{}: {}", message_, cls);
}

Status Status::FromWire(int code, std::string_view message) {
  Code c = CodeFromInt(code);
  if (c == Code::kOk) return Status();
  std::string_view cls = CodeText(c);
  if (!cls.empty() && message.size() > cls.size() + 2 && message.ends_with(cls) &&
      message.substr(message.size() - cls.size() - 2, 2) == ": ") {
    message.remove_suffix(cls.size() + 2);
  }
  return Status(c, std::string(message));
}

std::string Status::ToString() const {
  static constexpr std::string_view kNames[] = {
      "OK",       "Cancelled",      "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "NotImplemented",   "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  std::string_view name = kNames[static_cast<int>(code_)];
  if (ok()) return std::string(name);
  return fmt::format("{}: {}", name, message_);
}

Status ErrnoError(int err, std::string_view what) {
  Code code;
  switch (err) {
    case ENOENT:
    case ESRCH:
      code = Code::kNotFound;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    case EINVAL:
      code = Code::kInvalidArgument;
      break;
    case EACCES:
    case EPERM:
      code = Code::kPermissionDenied;
      break;
    case ETIMEDOUT:
      code = Code::kDeadlineExceeded;
      break;
    default:
      code = Code::kUnknown;
      break;
  }
  return Status(code, fmt::format("{}: {}", what, std::strerror(err)));
}

}  // namespace runhcs
