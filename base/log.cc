#include "base/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace runhcs {

void InitLogging(std::string_view level) {
  auto logger = spdlog::stderr_logger_mt("runhcs");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l runhcs[%P]: %v", spdlog::pattern_time_type::utc);
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") lvl = spdlog::level::info;
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace runhcs
