// The guest side of a pod (CreatePod): the process that holds the pod's
// namespaces, the VM's network configured as the pod's, and the mapping of
// a container's pod namespaces onto the holder's.
#pragma once

#include <sys/types.h>

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
// its pid. The caller watches it (Reaper).
StatusOr<pid_t> StartNamespaceHolder(const std::string& hostname);

// The ip(8) command lines (busybox's applet understands them) that give the
// interfaces named by `names` (MAC -> interface name in this VM) what `req`
// asks: loopback up, then per interface MTU, addresses and up, then link
// routes before gateway routes (a gateway must be reachable when its route
// is added). NotFound naming the MAC when no interface has it.
StatusOr<std::vector<std::vector<std::string>>> NetworkCommands(
    const ::runhcs::agent::v1::CreatePodRequest& req,
    const std::map<std::string, std::string>& names);

// MAC (lower case) -> interface name, read from `sys_class_net`
// (/sys/class/net).
std::map<std::string, std::string> InterfacesByMac(const std::string& sys_class_net);

// Points the spec's namespaces of `types` at the holder's
// (/proc/<holder>/ns/<type>), adding an entry where there is none.
// InvalidArgument for a type that is not pid, ipc or uts.
Status JoinPodNamespaces(nlohmann::json* spec, const std::vector<std::string>& types, pid_t holder);

}  // namespace runhcs::guest
