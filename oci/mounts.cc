#include "oci/mounts.h"

#include <sys/mount.h>

#include <cerrno>
#include <map>

namespace runhcs::oci {

MountFlags ParseMountOptions(const std::vector<std::string>& options) {
  struct Flag {
    bool clear;
    unsigned long flag;
  };
  static const std::map<std::string, Flag> kFlags = {
      {"async", {true, MS_SYNCHRONOUS}},
      {"atime", {true, MS_NOATIME}},
      {"bind", {false, MS_BIND}},
      {"defaults", {false, 0}},
      {"dev", {true, MS_NODEV}},
      {"diratime", {true, MS_NODIRATIME}},
      {"dirsync", {false, MS_DIRSYNC}},
      {"exec", {true, MS_NOEXEC}},
      {"mand", {false, MS_MANDLOCK}},
      {"noatime", {false, MS_NOATIME}},
      {"nodev", {false, MS_NODEV}},
      {"nodiratime", {false, MS_NODIRATIME}},
      {"noexec", {false, MS_NOEXEC}},
      {"nomand", {true, MS_MANDLOCK}},
      {"norelatime", {true, MS_RELATIME}},
      {"nostrictatime", {true, MS_STRICTATIME}},
      {"nosuid", {false, MS_NOSUID}},
      {"rbind", {false, MS_BIND | MS_REC}},
      {"relatime", {false, MS_RELATIME}},
      {"remount", {false, MS_REMOUNT}},
      {"ro", {false, MS_RDONLY}},
      {"rw", {true, MS_RDONLY}},
      {"strictatime", {false, MS_STRICTATIME}},
      {"suid", {true, MS_NOSUID}},
      {"sync", {false, MS_SYNCHRONOUS}},
  };
  MountFlags out;
  for (const auto& o : options) {
    auto it = kFlags.find(o);
    if (it == kFlags.end()) {
      if (!out.data.empty()) out.data += ",";
      out.data += o;
    } else if (it->second.clear) {
      out.flags &= ~it->second.flag;
    } else {
      out.flags |= it->second.flag;
    }
  }
  return out;
}

Status MountAll(const std::vector<Mount>& mounts, const std::string& target) {
  for (size_t i = 0; i < mounts.size(); ++i) {
    const auto& m = mounts[i];
    MountFlags f = ParseMountOptions(m.options);
    std::string type = m.type == "bind" ? "none" : m.type;
    if (::mount(m.source.c_str(), target.c_str(), type.c_str(), f.flags,
                f.data.empty() ? nullptr : f.data.c_str()) != 0) {
      Status st = ErrnoError(errno, fmt::format("mount {} ({}) on {}", m.source, m.type, target));
      for (size_t j = 0; j < i; ++j) ::umount2(target.c_str(), MNT_DETACH);
      return st;
    }
    // A bind mount ignores MS_RDONLY on the first call; remount to apply it.
    if ((f.flags & MS_BIND) && (f.flags & MS_RDONLY)) {
      ::mount("", target.c_str(), "", f.flags | MS_REMOUNT, nullptr);
    }
  }
  return OkStatus();
}

Status UnmountAll(const std::string& target) {
  for (int i = 0; i < 64; ++i) {
    if (::umount2(target.c_str(), MNT_DETACH) != 0) {
      if (errno == EINVAL || errno == ENOENT) return OkStatus();  // nothing (more) mounted
      return ErrnoError(errno, fmt::format("unmount {}", target));
    }
  }
  return InternalError("unmount {}: still mounted after 64 attempts", target);
}

}  // namespace runhcs::oci
