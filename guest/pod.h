// The guest side of a pod (CreatePod): the process that holds the pod's
// namespaces, the VM's network configured as the pod's, and the mapping of
// a container's pod namespaces onto the holder's.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "runhcs/agent.pb.h"

namespace runhcs::guest {

// Starts the holder: a child in new pid, ipc and uts namespaces (it is pid 1
// of the pod's pid namespace, so the pod's shared-pid processes die with it)
// with `hostname` set, blocking every signal it can until SIGKILL. Returns
// its pid. The caller watches it (Reaper). It also has a mount namespace of
// its own with every mount but the root detached: a container sharing the
// pod's pid namespace sees it as /proc/1, and its mountinfo would otherwise
// list the guest's (shares, the system disk, other containers' roots); and
// a copy of the guest's mounts kept for the pod's life would hold each
// share's files after the agent unmounted it.
StatusOr<pid_t> StartNamespaceHolder(const std::string& hostname);

// One step of the pod network's setup in the guest.
struct NetworkStep {
  enum class Kind { kLinkUp, kMtu, kAddress, kRoute };
  Kind kind = Kind::kLinkUp;
  std::string dev;
  uint32_t mtu = 0;     // kMtu
  std::string cidr;     // kAddress: "10.88.0.2/24"; kRoute: "default" or a CIDR
  std::string gateway;  // kRoute: "" = a route on the link
  bool v6 = false;      // kRoute
  // The ip(8) command line that does the same (Rtnetlink words its errors
  // so too).
  std::string ToString() const;
};

// The steps that give the interfaces named by `names` (MAC -> interface
// name in this VM) what `req` asks: loopback up, then per interface MTU,
// addresses and up, then link routes before gateway routes (a gateway must
// be reachable when its route is added). NotFound naming the MAC when no
// interface has it.
StatusOr<std::vector<NetworkStep>> NetworkSteps(const ::runhcs::agent::v1::CreatePodRequest& req,
                                                const std::map<std::string, std::string>& names);

// Applies `steps` in order, in-process over rtnetlink (guest/netlink.h), in
// the calling thread's network namespace; stops at the first failure, which
// names its step.
Status ApplyNetworkSteps(const std::vector<NetworkStep>& steps);

// A MAC as InterfacesByMac keys it (lower case).
std::string MacKey(std::string mac);
// MAC (lower case) -> interface name, read from `sys_class_net`
// (/sys/class/net).
std::map<std::string, std::string> InterfacesByMac(const std::string& sys_class_net);

// The file under /proc/sys for a dotted sysctl key ("kernel.shm_rmid_forced"
// -> "kernel/shm_rmid_forced"). InvalidArgument for anything else: an empty
// part, or a character outside [A-Za-z0-9_-] (so no key leaves /proc/sys).
StatusOr<std::string> SysctlPath(const std::string& key);

// Writes the pod's sysctls under `proc_sys` (/proc/sys) from a thread that
// joined the holder's ipc and uts namespaces, so that namespaced keys land
// in the pod's namespaces; network keys land in the VM's network namespace
// (the pod's), and the rest in the guest kernel, which serves this pod only.
// Every key is checked before any is written; the first failure is returned
// naming its key.
Status ApplyPodSysctls(const std::map<std::string, std::string>& sysctls, pid_t holder,
                       const std::string& proc_sys);

// Points the spec's namespaces of `types` at the holder's
// (/proc/<holder>/ns/<type>), adding an entry where there is none.
// InvalidArgument for a type that is not pid, ipc or uts.
Status JoinPodNamespaces(nlohmann::json* spec, const std::vector<std::string>& types, pid_t holder);

// True when the spec's linux.namespaces creates a pid namespace (type "pid"
// without a path): then the container's processes end with its init.
bool HasOwnPidNamespace(const nlohmann::json& spec);

}  // namespace runhcs::guest
