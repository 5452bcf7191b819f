// ShimRegistry: how `shimdiag` finds running shims without containerd.
//
// containerd names a shim's socket by a hash (/run/containerd/s/<sha256>),
// from which `<namespace>-<id>` cannot be recovered, so every shim daemon
// also publishes a symlink <dir>/<namespace>-<id> -> its socket path:
//  - Register() is called once the socket accepts; it replaces an entry of
//    the same name (a shim that died without cleaning up).
//  - Unregister() removes the entry only while it still points at the given
//    socket, so a shim that exits never removes a successor's entry. The
//    `delete` action calls it for a shim that died.
//  - List() returns entries whose socket file still exists, sorted by name.
//  - Resolve(name): an exact name wins; otherwise the one entry that begins
//    with `name`. Errors (wording as hcsshim's shimdiag): InvalidArgument
//    "invalid shim name" (empty, '/', "." or ".."), NotFound "no such shim",
//    FailedPrecondition "multiple shims beginning with".
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace runhcs::service {

inline constexpr char kShimRegistryDir[] = "/run/runhcs/shims";

struct ShimEntry {
  std::string name;         // <namespace>-<id>
  std::string socket_path;  // the symlink's target
};

class ShimRegistry {
 public:
  explicit ShimRegistry(std::string dir = kShimRegistryDir) : dir_(std::move(dir)) {}

  static std::string NameOf(const std::string& ns, const std::string& id) { return ns + "-" + id; }

  Status Register(const std::string& name, const std::string& socket_path) const;
  void Unregister(const std::string& name, const std::string& socket_path) const;
  std::vector<ShimEntry> List() const;
  StatusOr<ShimEntry> Resolve(const std::string& name) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace runhcs::service
