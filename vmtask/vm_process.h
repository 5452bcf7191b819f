// VmProcess: the exec::Process of a process in a container inside a
// utility VM, driven through the guest agent.
//
//  - init: the container was created in the guest (CreateContainer) before
//    this exists; Start is StartContainer. exec: Start is ExecProcess.
//  - stdio: the host side is a stdio::ProcessIo (fifos, file://,
//    binary://). Pumps move ReadStream data into ProcessIo's stdout/stderr
//    pipes and ProcessIo's stdin pipe into WriteStdin; CloseStdin on EOF.
//  - The exit is reported after both output streams reached EOF, so
//    everything the process wrote is out before its TaskExit. If the agent
//    becomes unreachable (the VM is gone), the exit status is 1.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "base/fd.h"
#include "base/thread_annotations.h"
#include "exec/exec.h"
#include "exec/process.h"
#include "stdio/process_io.h"
#include "uvm/agent_client.h"

namespace runhcs::vmtask {

class VmProcess : public exec::Process {
 public:
  // The exit status reported when the VM went away under the process.
  static constexpr uint32_t kVmGoneStatus = 1;

  // `io` is already open for init (created with the container); an exec
  // opens it at Start from `stdio`/`ctx`.
  VmProcess(std::shared_ptr<uvm::AgentClient> agent, std::string container_id, std::string exec_id,
            std::string process_json, exec::Stdio stdio, stdio::IoContext ctx,
            std::unique_ptr<stdio::ProcessIo> io);
  ~VmProcess() override;

  StatusOr<uint32_t> Start(ExitCallback on_exit) override;
  Status Signal(uint32_t signal) override;
  Status ResizePty(uint32_t width, uint32_t height) override;
  void CloseStdin() override;
  void Terminate() override;
  void ReleaseIo(std::function<void()> done) override;

 private:
  struct Pumps;  // the relays, driven by the event loop

  const std::shared_ptr<uvm::AgentClient> agent_;
  const std::string container_id_, exec_id_, process_json_;
  const exec::Stdio stdio_;
  const stdio::IoContext ctx_;
  stdio::IoSlot io_;
  Mutex pumps_mu_;
  std::shared_ptr<Pumps> pumps_ GUARDED_BY(pumps_mu_);  // set by Start
};

}  // namespace runhcs::vmtask
