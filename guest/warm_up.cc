#include "guest/warm_up.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "base/io.h"
#include "base/latch.h"
#include "base/reaper.h"
#include "oci/runtime.h"

namespace runhcs::guest {

nlohmann::json WarmUpSpec(const std::string& rootfs, const std::string& system_dir) {
  using nlohmann::json;
  // The capabilities containerd gives a CRI container by default.
  const json caps = {"CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
                     "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
                     "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                     "CAP_KILL",    "CAP_AUDIT_WRITE"};
  auto mount = [](const char* dst, const char* type, const char* src, json options) {
    return json{{"destination", dst}, {"type", type}, {"source", src}, {"options", options}};
  };
  return json{
      {"ociVersion", "1.0.2"},
      {"process",
       {{"args", {"/bin/true"}},
        {"cwd", "/"},
        {"env", {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}},
        {"user", {{"uid", 0}, {"gid", 0}}},
        {"capabilities",
         {{"bounding", caps},
          {"effective", caps},
          {"permitted", caps},
          {"inheritable", json::array()}}},
        {"rlimits", {{{"type", "RLIMIT_NOFILE"}, {"hard", 1024}, {"soft", 1024}}}},
        {"oomScoreAdj", 1000}}},
      {"root", {{"path", rootfs}, {"readonly", true}}},
      {"hostname", "warm-up"},
      {"mounts",
       {mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
        mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
        mount("/dev/pts", "devpts", "devpts",
              {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}),
        mount("/dev/shm", "tmpfs", "shm",
              {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
        mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
        mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
        mount("/sys/fs/cgroup", "cgroup", "cgroup",
              {"nosuid", "noexec", "nodev", "relatime", "ro"}),
        mount("/usr", "bind", system_dir.c_str(), {"rbind", "ro"})}},
      {"linux",
       {{"namespaces",
         {{{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}}},
        {"cgroupsPath", kWarmUpCgroupPath},
        {"resources",
         {{"devices", {{{"allow", false}, {"access", "rwm"}}}},
          {"memory", {{"limit", 64 << 20}}},
          {"cpu", {{"shares", 2}}},
          {"pids", {{"limit", 16}}}}},
        // The agent runs the runtime unrandomized; this gives it back (as
        // CreateContainer does).
        {"personality", {{"domain", "LINUX"}}},
        {"maskedPaths",
         {"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"}},
        {"readonlyPaths",
         {"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
          "/proc/sysrq-trigger"}}}}};
}

Status WarmUpRuntime(const WarmUpConfig& cfg) {
  const std::string rootfs = cfg.dir + "/rootfs";
  RETURN_IF_ERROR(RemoveTree(cfg.dir));
  RETURN_IF_ERROR(MkdirAll(rootfs + "/usr", 0755));
  // The usual merged-/usr layout, for /bin/true and the container's paths.
  for (const char* dir : {"bin", "sbin", "lib", "lib64"}) {
    std::string target = std::string("usr/") + dir;
    if (::symlink(target.c_str(), (rootfs + "/" + dir).c_str()) != 0)
      return ErrnoError(errno, std::string("symlink ") + dir + " in the warm-up rootfs");
  }
  RETURN_IF_ERROR(
      WriteFileAtomic(cfg.dir + "/config.json", WarmUpSpec(rootfs, cfg.system_dir).dump(), 0600));
  oci::Runtime rt(oci::Runtime::Config{.binary = cfg.runtime,
                                       .root = cfg.dir + "/state",
                                       .no_pivot = true,
                                       .timeout = cfg.timeout,
                                       .fixed_address_layout = true,
                                       .in_process_start = true,
                                       .in_process_delete = true},
                  cfg.dir);
  auto expect = Reaper::Get().Expect();
  Status st = rt.Create(kWarmUpContainerId, cfg.dir + "/init.pid", "", {});
  bool exited = false;
  if (st.ok()) {
    auto read_pid = ReadPidFile(cfg.dir + "/init.pid", "the warm-up container");
    pid_t pid = read_pid.ok() ? *read_pid : 0;
    if (!read_pid.ok()) st = read_pid.status();
    auto done = std::make_shared<Latch>();
    if (st.ok()) Reaper::Get().Watch(pid, [done](int) { done->Open(); });
    expect.Release();
    if (st.ok()) st = rt.Start(kWarmUpContainerId);
    if (st.ok()) {
      exited = done->Wait(std::chrono::steady_clock::now() + cfg.exit_wait);
      if (!exited) st = DeadlineExceededError("the warm-up container did not exit");
    }
    if (pid > 0 && !exited) Reaper::Get().Unwatch(pid);
  }
  // A failed create may have left the runtime's state: delete regardless.
  Status del = exited ? rt.DeleteExited(kWarmUpContainerId, cfg.cgroup_root + kWarmUpCgroupPath)
                      : rt.Delete(kWarmUpContainerId, /*force=*/true);
  if (st.ok()) st = del;
  Status rm = RemoveTree(cfg.dir);
  if (st.ok()) st = rm;
  return st;
}

}  // namespace runhcs::guest
