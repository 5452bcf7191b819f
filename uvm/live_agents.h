// The agents of this process's running VMs, for diagnostics that must reach
// a guest before any task holds its VM: a pod's Create that hangs inside
// the guest (after boot, before the task exists) is exactly when an
// operator asks `shimdiag stacks`.
//
// Entries are weak: a VM's agent is listed from the moment it answered
// until the VM lets it go (Close, a failed start), and a closed client is
// skipped. Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "uvm/agent_client.h"

namespace runhcs::uvm {

// Lists `agent` as VM `vm_id`'s. Idempotent per (vm_id, agent).
void ListLiveAgent(const std::string& vm_id, const std::shared_ptr<AgentClient>& agent);

// Each listed VM's guest stacks (the agent's DumpStacks, `timeout` each),
// under a "vm <id>:" line; a VM whose agent does not answer gets a line
// saying why. "" when no VM is listed.
std::string DumpLiveGuestStacks(std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace runhcs::uvm
