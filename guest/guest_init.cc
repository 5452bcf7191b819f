#include "guest/guest_init.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>
#include <thread>

#include "base/fd.h"
#include "base/io.h"
#include "base/log.h"
#include "proto/agent_channel.h"

namespace runhcs::guest {

Status MountBasics() {
  struct M {
    const char* source;
    const char* target;
    const char* type;
    unsigned long flags;
    const char* data;
  };
  const M mounts[] = {
      {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
      {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
      {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
      {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
      {"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
      {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
      {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
      {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
  };
  Status first = OkStatus();
  for (const auto& m : mounts) {
    ::mkdir(m.target, 0755);
    if (::mount(m.source, m.target, m.type, m.flags, m.data) != 0 && errno != EBUSY) {
      Status st = ErrnoError(errno, fmt::format("mount {} on {}", m.type, m.target));
      if (first.ok()) first = st;
    }
  }
  (void)!::symlink("/proc/self/fd", "/dev/fd");
  (void)!::symlink("/proc/self/fd/0", "/dev/stdin");
  (void)!::symlink("/proc/self/fd/1", "/dev/stdout");
  (void)!::symlink("/proc/self/fd/2", "/dev/stderr");
  (void)!::symlink("pts/ptmx", "/dev/ptmx");
  return first;
}

Status LoadModules(const std::string& list) {
  auto text = ReadFile(list);
  if (!text.ok()) return text.status();
  std::stringstream ss(*text);
  std::string path;
  Status first = OkStatus();
  while (std::getline(ss, path)) {
    if (path.empty() || path[0] == '#') continue;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      if (first.ok()) first = ErrnoError(errno, fmt::format("open {}", path));
      continue;
    }
    if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) {
      Status st = ErrnoError(errno, fmt::format("load {}", path));
      spdlog::warn("{}", st.ToString());
      if (first.ok()) first = st;
    }
  }
  return first;
}

Status TuneMemoryReturn(const std::string& proc_sys, const std::string& sys_module) {
  Status pcp = WriteExistingFile(proc_sys + "/vm/percpu_pagelist_high_fraction",
                                 std::to_string(kPcpFraction));
  Status order =
      WriteExistingFile(sys_module + "/page_reporting/parameters/page_reporting_order", "0");
  return pcp.ok() ? order : pcp;
}

namespace {

// The entry of sysfs directory `dir` whose attribute file `attr` holds
// `value` (a trailing newline aside) and whose `dev`/<entry> node exists,
// waiting up to `timeout_ms`; "" if none did.
std::string WaitForSysfsEntry(const std::string& dir, const char* attr, const std::string& value,
                              const std::string& dev, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  do {
    if (DIR* d = ::opendir(dir.c_str())) {
      std::string found;
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        auto v = ReadFile(dir + "/" + e->d_name + "/" + attr);
        if (v.ok() && (*v == value || *v == value + "\n")) found = e->d_name;
      }
      ::closedir(d);
      if (!found.empty() && ::access((dev + "/" + found).c_str(), F_OK) == 0) return found;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (std::chrono::steady_clock::now() < deadline);
  return "";
}

}  // namespace

StatusOr<std::string> FindVirtioPort(const std::string& name, int timeout_ms) {
  std::string port = WaitForSysfsEntry("/sys/class/virtio-ports", "name", name, "/dev", timeout_ms);
  if (port.empty()) return NotFoundError("virtio-serial port {:?} did not appear", name);
  return "/dev/" + port;
}

StatusOr<std::string> FindBlockDevice(const std::string& serial, int timeout_ms,
                                      const std::string& sys_block, const std::string& dev) {
  std::string disk = WaitForSysfsEntry(sys_block, "serial", serial, dev, timeout_ms);
  if (disk.empty())
    return NotFoundError("no disk with serial {:?} appeared in {}", serial, sys_block);
  return disk;
}

Status MountSystemDisk(const std::string& where, int timeout_ms) {
  ASSIGN_OR_RETURN(std::string name, FindBlockDevice(agent::kSystemDiskSerial, timeout_ms));
  std::string node = "/dev/" + name;
  if (::mount(node.c_str(), where.c_str(), "ext4", MS_RDONLY | MS_NODEV, nullptr) != 0) {
    return ErrnoError(errno, fmt::format("mount the system disk {} on {}", node, where));
  }
  return OkStatus();
}

}  // namespace runhcs::guest
