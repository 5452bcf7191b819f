// A hypervisor-isolated pod's VM as its sandbox owns it: the VM, booted with
// a NIC per interface of the pod's network namespace, and made the pod's in
// the guest (CreatePod: pod namespaces held, network configured).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "base/status.h"
#include "net/pod_network.h"
#include "oci/spec.h"
#include "uvm/utility_vm.h"

namespace runhcs::vmtask {

// What the sandbox's spec asks of the pod, for the VM.
struct SandboxShape {
  std::string netns_path;  // "" when the pod has a network namespace of its own
  std::string hostname;
  std::map<std::string, std::string> sysctls;
};

// Reads the sandbox's spec (exposed for unit tests). A VM pod owns
// its pid, ipc and network namespaces: a spec without one of them (CRI's
// HostPID, HostIPC, HostNetwork) is InvalidArgument naming it, as is a pid
// or ipc namespace with a path (the host's).
StatusOr<SandboxShape> ReadSandboxShape(const oci::Spec& spec, const std::string& id);

struct PodVm {
  std::shared_ptr<uvm::UtilityVm> vm;
  // The taps and tc redirects; null without a network namespace to carry.
  // Goes after the VM is closed.
  std::unique_ptr<net::PodNetwork> network;
};

// Boots pod `id`'s VM (BootVm) from its sandbox spec. On failure nothing of
// it is left (VM closed, redirects undone).
StatusOr<PodVm> BootPodVm(const oci::Spec& spec, uvm::VmConfig base, const std::string& ns,
                          const std::string& id);

}  // namespace runhcs::vmtask
