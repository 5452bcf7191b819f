// Logging: spdlog's default logger, writing to fd 2. The shim daemon points
// fd 2 at containerd's `log` fifo when the bundle has one, so these lines show
// up in containerd's own log, as runc-v2's do, and in the same text format
// as containerd's (logrus'):
//
//   time="2026-12-02T21:23:38.413521123Z" level=warning msg="..." id=<task> namespace=k8s.io
//   pid=1234 runtime=io.containerd.runhcs.v1
//
// so that `journalctl -u containerd | grep level=error` and operators' log
// parsers see the shim's lines as containerd's. Fields follow the message in
// key order; a value is quoted (Go's %q) when it holds anything but
// [A-Za-z0-9-._/@^+].
#pragma once

#include <spdlog/spdlog.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace runhcs {

// Installs the default logger on stderr. `level` is a spdlog level name
// ("trace", "debug", "info", "warn", "error"); unknown names mean "info".
// `fields` go on every line (besides pid, always there).
void InitLogging(std::string_view level, std::map<std::string, std::string> fields = {});

// The formatter InitLogging installs (exposed for tests).
std::unique_ptr<spdlog::formatter> MakeLogFormatter(std::map<std::string, std::string> fields);

// A logfmt value as logrus writes it: as is, or quoted the way Go's %q does
// when it holds anything outside [A-Za-z0-9-._/@^+] (or is empty).
std::string LogValue(std::string_view v);

}  // namespace runhcs
