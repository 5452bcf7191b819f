// The rootfs mounts of a CreateTaskRequest, mounted onto <bundle>/rootfs in
// order and unmounted (lazily, innermost first) on delete.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace runhcs::oci {

// One rootfs mount as containerd's CreateTaskRequest carries it.
struct Mount {
  std::string type, source, target;
  std::vector<std::string> options;
};

struct MountFlags {
  unsigned long flags = 0;
  std::string data;  // options that are not flags, comma-joined
};
// Splits mount(8)-style options into MS_* flags and filesystem data.
MountFlags ParseMountOptions(const std::vector<std::string>& options);

// Mounts each entry on `target`. On failure, undoes what it mounted.
Status MountAll(const std::vector<Mount>& mounts, const std::string& target);
// Unmounts everything mounted on `target` (repeatedly, MNT_DETACH). OK if
// nothing is mounted there.
Status UnmountAll(const std::string& target);

}  // namespace runhcs::oci
