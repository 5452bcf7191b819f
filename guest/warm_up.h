// Runtime warm-up: one throwaway container run through the VM's OCI runtime
// once the VM is ready, so the first real container does not pay for it.
//
// Under TCG, QEMU translates guest code the first time it runs and keeps the
// translation while the code's pages stay: the first `crun create` in a VM
// costs ~3x a later one (crun, its libraries read from the system disk and
// translated, and the kernel's namespace, mount and cgroup paths translated).
// A restored VM starts with no translations at all. The warm-up runs that
// once, at idle priority, while the host is still setting up the pod.
//
// Contract:
//  - Best effort: the outcome is returned for the log, never for a caller
//    to act on; nothing real waits for it but PrepareTemplate (a template
//    must not capture a half-made container).
//  - Isolated from real containers: its own runtime root, bundle and rootfs
//    under `dir` and its own cgroup (kCgroupPath), so no id or state can
//    clash and `crun list` of the agent's root never shows it.
//  - Leaves nothing: the container is deleted and `dir` removed, whether it
//    got that far or not.
//  - The real containers' path: crun create, and for crun the agent's own
//    start and delete (oci/crun_state.h), so nothing is warmed that a real
//    container does not run.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"

namespace runhcs::guest {

struct WarmUpConfig {
  std::string runtime = "crun";
  // Holds the bundle, the rootfs and the runtime's root; removed after.
  std::string dir = "/run/runhcs-warm-up";
  // Bound read-only into the rootfs (the guest's binaries: /usr).
  std::string system_dir = "/usr";
  // Each runtime call is killed past this.
  std::chrono::milliseconds timeout{30000};
  // How long to wait for the container's process to exit before the
  // delete kills it.
  std::chrono::milliseconds exit_wait{10000};
  // Where kWarmUpCgroupPath is (the container's cgroup v2 directory is
  // cgroup_root + kWarmUpCgroupPath).
  std::string cgroup_root = "/sys/fs/cgroup";
};

inline constexpr char kWarmUpCgroupPath[] = "/runhcs-warm-up";
inline constexpr char kWarmUpContainerId[] = "runhcs-warm-up";

// A container spec like the ones CRI sends (its mounts, capabilities,
// masked and read-only paths, a cgroup with limits), running /bin/true from
// `system_dir` bound into `rootfs`.
nlohmann::json WarmUpSpec(const std::string& rootfs, const std::string& system_dir);

// Creates, starts, waits for and deletes the warm-up container. Call with
// the Reaper enabled (the container's process is reparented to the caller).
Status WarmUpRuntime(const WarmUpConfig& cfg);

}  // namespace runhcs::guest
