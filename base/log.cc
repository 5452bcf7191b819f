#include "base/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

namespace runhcs {

namespace {

// logrus' level names.
std::string_view LevelName(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warning";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "fatal";
    default:
      return "info";
  }
}

class LogrusFormatter : public spdlog::formatter {
 public:
  // The fields never change: their text is made once.
  explicit LogrusFormatter(std::map<std::string, std::string> fields) {
    fields.emplace("pid", std::to_string(::getpid()));
    for (const auto& [k, v] : fields) suffix_ += " " + k + "=" + LogValue(v);
    suffix_ += "\n";
  }

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto since = msg.time.time_since_epoch();
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
    auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since - secs).count();
    std::time_t t = secs.count();
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char stamp[64];
    size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fmt::format_to(std::back_inserter(dest), "time=\"{}.{:09d}Z\" level={} msg={}",
                   std::string_view(stamp, n), nanos, LevelName(msg.level),
                   LogValue(std::string_view(msg.payload.data(), msg.payload.size())));
    dest.append(suffix_.data(), suffix_.data() + suffix_.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LogrusFormatter>(*this);
  }

 private:
  std::string suffix_;
};

}  // namespace

std::string LogValue(std::string_view v) {
  bool plain = !v.empty();
  for (char c : v) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '/' || c == '@' || c == '^' || c == '+';
    if (!ok) {
      plain = false;
      break;
    }
  }
  if (plain) return std::string(v);
  std::string q = "\"";
  for (unsigned char c : v) {
    switch (c) {
      case '"':
        q += "\\\"";
        break;
      case '\\':
        q += "\\\\";
        break;
      case '\n':
        q += "\\n";
        break;
      case '\r':
        q += "\\r";
        break;
      case '\t':
        q += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          q += fmt::format("\\x{:02x}", c);
        } else {
          q += static_cast<char>(c);  // UTF-8 passes as is, as %q keeps printable runes
        }
    }
  }
  q += "\"";
  return q;
}

std::unique_ptr<spdlog::formatter> MakeLogFormatter(std::map<std::string, std::string> fields) {
  return std::make_unique<LogrusFormatter>(std::move(fields));
}

void InitLogging(std::string_view level, std::map<std::string, std::string> fields) {
  auto logger = spdlog::stderr_logger_mt("runhcs");
  logger->set_formatter(MakeLogFormatter(std::move(fields)));
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") lvl = spdlog::level::info;
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace runhcs
