// Logging: spdlog's default logger, writing to fd 2. The shim daemon points
// fd 2 at containerd's `log` fifo when the bundle has one, so these lines show
// up in containerd's own log, as runc-v2's do.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace runhcs {

// Installs the default logger on stderr. `level` is a spdlog level name
// ("trace", "debug", "info", "warn", "error"); unknown names mean "info".
void InitLogging(std::string_view level);

}  // namespace runhcs
