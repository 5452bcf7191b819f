// UtilityVm: the host side of one utility VM, as the pod-sandbox task and
// hypervisor-isolated tasks see it. The QEMU implementation lives beside
// this header; unit tests use FakeUtilityVm.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "uvm/agent_client.h"
#include "runhcs/diag.pb.h"
#include "runhcs/stats.pb.h"

namespace runhcs::uvm {

class UtilityVm {
 public:
  virtual ~UtilityVm() = default;

  virtual const std::string& id() const = 0;
  // Boots the VM and returns once its agent answers. FailedPrecondition if
  // already started.
  virtual Status Start() = 0;
  // Blocks until the VM is gone, however it went (Close, crash, kill).
  // Returns the reason as an error if it did not stop through Close. Any
  // number of threads may wait.
  virtual Status Wait() = 0;
  // Stops the VM: graceful first, then forced; returns when it is gone and
  // every resource (process, sockets, shares) is released. Idempotent.
  virtual Status Close() = 0;
  // Runs a process in the VM itself (not in a container); returns its exit
  // code. Stdio fields name host-side pipes or sockets to relay.
  virtual StatusOr<int32_t> ExecInUvm(const containerd::runhcs::v1::diag::ExecProcessRequest& req) = 0;
  // Makes `host_path` visible at `vm_path` inside the VM.
  virtual Status Share(const std::string& host_path, const std::string& vm_path,
                       bool read_only) = 0;
  // Ends the Share at `vm_path` on the host side: its mount there goes (what
  // the guest still holds open stays readable until it lets go). NotFound if
  // nothing is shared there.
  virtual Status Unshare(const std::string& vm_path) {
    return NotImplementedError("unshare {} is not supported", vm_path);
  }
  // The guest's stacks, or "" where the guest cannot tell.
  virtual StatusOr<std::string> DumpStacks() = 0;
  virtual StatusOr<containerd::runhcs::stats::v1::VirtualMachineStatistics> Stats() = 0;
  // The guest agent of a running VM (nullptr otherwise, and in fakes). Shared:
  // a caller may keep it past Close; its calls then fail with Unavailable.
  virtual std::shared_ptr<AgentClient> agent() { return nullptr; }
};

}  // namespace runhcs::uvm
