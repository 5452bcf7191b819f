// What the shim does when a guest stops answering a SIGKILL.
//
// Every call into a VM goes through its agent; a guest whose kernel or
// agent hangs answers nothing, so a container in it could never be killed,
// its task never deleted, and a pod never stopped (CRI stops every
// container before the sandbox). SIGKILL is the one request that must
// always work, so for it a silent guest is confirmed (a Ping) and the VM is
// killed: every process in it then exits as in a crash, and the kill is
// done.
#pragma once

#include <chrono>
#include <string>

#include "base/status.h"
#include "uvm/utility_vm.h"

namespace runhcs::uvm {

// `kill` is the result of delivering SIGKILL to `what` through `vm`'s agent.
// If it failed because the agent did not answer (DeadlineExceeded or
// Unavailable) and the agent does not answer a Ping within `probe` either,
// `vm` is terminated (UtilityVm::Terminate, with the reason) and OK is
// returned. Otherwise `kill` is returned unchanged: a kill that worked, a
// refusal (NotFound, ...), or an agent that is slow but alive.
Status TerminateIfGuestHung(UtilityVm* vm, Status kill, const std::string& what,
                            std::chrono::milliseconds probe = std::chrono::seconds(5));

}  // namespace runhcs::uvm
