// A container's cgroup, read into containerd's Metrics messages.
//
// Contract:
//  - Everything takes the cgroup mount root (normally /sys/fs/cgroup) so unit
//    tests can point it at a fake tree.
//  - Files missing from a controller (swap accounting off, no kmem, ...) leave
//    their fields 0; a controller that is not there is skipped. Only a cgroup
//    with none of its files readable is an error (NotFound: the container is
//    gone).
//  - Values are the kernel's, converted to the units the messages document
//    (v1 CPU in ns; v2 CPU in us, as the v2 message is). "max" (no limit)
//    reads as 0 for pids and as the largest uint64 for memory, as
//    containerd's own cgroups library reports them.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <string_view>

#include "base/status.h"
#include "containerd/cgroups/v1/metrics.pb.h"
#include "containerd/cgroups/v2/metrics.pb.h"
#include "runhcs/wkt/any.pb.h"

namespace runhcs::stats {

inline constexpr char kCgroupRoot[] = "/sys/fs/cgroup";
inline constexpr char kV1MetricsType[] = "io.containerd.cgroups.v1.Metrics";
inline constexpr char kV2MetricsType[] = "io.containerd.cgroups.v2.Metrics";

// Where a process sits: v1 controller -> path, and the unified path.
struct ProcessCgroups {
  std::map<std::string, std::string> v1;
  std::string v2;
  bool has_v2 = false;
};
// Parses /proc/<pid>/cgroup text ("2:cpu,cpuacct:/a/b", "0::/a/b").
ProcessCgroups ParseProcCgroup(std::string_view text);
StatusOr<ProcessCgroups> CgroupsOf(pid_t pid);

// True when `root` is a unified (cgroup v2 only) mount.
bool IsUnified(const std::string& root = kCgroupRoot);

StatusOr<io::containerd::cgroups::v1::Metrics> ReadV1(const std::string& root,
                                                      const ProcessCgroups& cg);
// `dir` is the cgroup's own directory (root + path).
StatusOr<io::containerd::cgroups::v2::Metrics> ReadV2(const std::string& dir);

// The Stats answer for a process-isolated task: v2 Metrics on a unified
// host, v1 otherwise, packed with containerd's type URLs.
StatusOr<runhcs::wkt::Any> ReadMetricsAny(const std::string& root, const ProcessCgroups& cg);

// The memory cgroup directory the OOM watcher needs (v1: memory
// controller's; v2: the unified one).
std::string MemoryDir(const std::string& root, const ProcessCgroups& cg);

}  // namespace runhcs::stats
