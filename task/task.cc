#include "task/task.h"

#include <nlohmann/json.hpp>

namespace runhcs::task {

Status NotIsolatedError(std::string_view task_id) {
  return FailedPreconditionError("task '{}' is not isolated: it has no utility VM", task_id);
}

StatusOr<std::string> LinuxResourcesJson(std::string_view task_id,
                                         const runhcs::wkt::Any& resources) {
  constexpr std::string_view kUrl =
      "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
  if (resources.type_url() != kUrl) {
    return InvalidArgumentError("update of task '{}': resources of type {:?}; want {}", task_id,
                                resources.type_url(), kUrl);
  }
  if (!nlohmann::json::accept(resources.value())) {
    return InvalidArgumentError("update of task '{}': resources are not JSON", task_id);
  }
  return resources.value();
}

Status ValidateShareTarget(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return InvalidArgumentError("share: VM path {:?} is not absolute", path);
  }
  if (path == "/") return InvalidArgumentError("share: VM path {:?} is the VM's root", path);
  if (path.back() == '/')
    return InvalidArgumentError("share: VM path {:?} is not clean (trailing /)", path);
  std::string_view rest = path.substr(1);
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError("share: VM path {:?} is not clean", path);
    }
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  }
  static constexpr std::string_view kReserved[] = {"/proc", "/sys",  "/dev", "/run", "/init",
                                                   "/bin",  "/sbin", "/usr", "/lib", "/lib64"};
  for (std::string_view r : kReserved) {
    if (path == r || (path.starts_with(r) && path[r.size()] == '/')) {
      return InvalidArgumentError("share: VM path {:?} is under {}, which the VM itself uses", path,
                                  r);
    }
  }
  return OkStatus();
}

}  // namespace runhcs::task
