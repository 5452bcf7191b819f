// crun_state: steps of a crun container's life taken without running crun,
// by speaking its on-disk protocol (crun 1.x, as Debian ships it):
//
//   <root>/<id>/            crun's state directory for the container
//   <root>/<id>/exec.fifo   made by `crun create`; the container's init holds
//                           the read end and blocks until a byte arrives
//
// Why: in a utility VM under TCG a crun process costs ~25-30 ms before it
// does anything (loading and relocating it and its libraries), and `start`,
// `delete` and `kill --all KILL` do almost nothing beyond that. The agent
// takes these steps itself; create, exec, other kills, pause, update and ps
// stay crun's.
//
// Contract of both: `true` means the step is done exactly as crun would have
// done it; `false` means the container is not in the shape the shortcut
// handles (no fifo, a process left, a sub-cgroup, a mount in the state
// directory), nothing was changed that crun would not change, and the caller
// runs crun for the step instead. An error is a real failure of the step.
// Neither runs OCI hooks: the caller takes the shortcut only for a spec
// without poststart (start) or poststop (delete) hooks.
#pragma once

#include <string>

#include "base/status.h"

namespace runhcs::oci::crun {

// What `crun start` does: opens exec.fifo for writing, unlinks it (a second
// start finds none), writes one byte. Non-blocking: a fifo without a reader
// (the init died before its start) is FailedPrecondition, where crun would
// block or say "not running"; the fifo is then left for delete to remove.
StatusOr<bool> ReleaseCreated(const std::string& root, const std::string& id);

// What `crun delete --force` does for a container none of whose processes
// is left: removes its cgroup (`cgroup_dir`, absolute, cgroup v2) and then
// its state directory. `false` for an unknown cgroup (""), while
// cgroup.events says "populated 1", when the cgroup cannot simply be removed
// (EBUSY: a sub-cgroup) or the state directory holds a mount: crun kills and
// removes those. A missing cgroup or state directory is already removed.
StatusOr<bool> RemoveExited(const std::string& root, const std::string& id,
                            const std::string& cgroup_dir);

// What `crun kill --all <id> KILL` does first on cgroup v2: writes "1" to
// the container's cgroup.kill (`cgroup_dir`, absolute), which kills every
// process in the cgroup and below. `false` for another signal, an unknown
// cgroup ("") or a kernel without cgroup.kill (before 5.14): crun then
// signals the processes one by one.
StatusOr<bool> KillAll(const std::string& cgroup_dir, int signal);

}  // namespace runhcs::oci::crun
