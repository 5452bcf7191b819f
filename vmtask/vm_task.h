// VmTask: a hypervisor-isolated container. It owns a utility VM of its own;
// the container runs inside it under the guest agent (crun in the VM), its
// rootfs reaching the guest through a virtiofs share.
//
//  - Create: mount the rootfs on the host, boot the VM, share the rootfs,
//    CreateContainer in the guest, publish TaskCreate (pid 0: the process
//    exists from Start on, as in hcsshim's HCS tasks).
//  - stdio: containerd's fifos/files/loggers are served by stdio::ProcessIo
//    on the host exactly as for process isolation; VmProcess pumps the
//    agent's streams into and out of ProcessIo's pipes.
//  - Init exits: running execs are killed and reported first, the container
//    is removed, the VM closed, the rootfs unmounted; then init's TaskExit.
//  - The VM dies on its own (its hypervisor killed): every process reports exit status
//    1 (hcsshim's ForceExit(1) on host exit), execs before init, and the
//    same teardown runs.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "exec/process_exec.h"
#include "stdio/process_io.h"
#include "task/task_base.h"
#include "uvm/utility_vm.h"
#include "vmtask/oom_relay.h"

namespace runhcs::vmtask {

// The spec's namespaces as the guest sees them (exposed for unit tests). A
// namespace with a path names the host's: in a pod (`in_pod`) the network
// one is dropped (the VM's network is the pod's), pid, ipc and uts lose the
// path and go to `pod_namespaces` (the agent joins the pod's holder), others
// are InvalidArgument; outside a pod every path is InvalidArgument.
StatusOr<std::string> MapNamespaces(const std::string& spec_json, const std::string& id,
                                    bool in_pod, std::vector<std::string>* pod_namespaces);

class VmTask : public task::TaskBase {
 public:
  struct Config {
    std::string ns;
    uvm::VmConfig vm;  // state_dir and console are filled in per task
  };
  // A container with a VM of its own, booted here and closed with it.
  static StatusOr<std::shared_ptr<VmTask>> Create(const task::CreateRequest& req, const Config& cfg,
                                                  events::Publisher* publisher);
  // A pod workload in the pod's running VM, which it does not own: its init
  // exiting removes the container from the guest and leaves the VM alone.
  static StatusOr<std::shared_ptr<VmTask>> CreateIn(const task::CreateRequest& req,
                                                    const std::string& ns,
                                                    std::shared_ptr<uvm::UtilityVm> vm,
                                                    events::Publisher* publisher);
  ~VmTask() override;

  Status KillExec(std::string_view exec_id, uint32_t signal, bool all) override;
  StatusOr<std::vector<task::ProcessDetails>> Pids() override;
  Status Pause() override;
  Status Resume() override;
  bool Paused() override;
  Status Update(const runhcs::wkt::Any& resources) override;
  StatusOr<runhcs::wkt::Any> Stats() override;
  StatusOr<int32_t> ExecInHost(
      const containerd::runhcs::v1::diag::ExecProcessRequest& req) override;
  std::string DumpGuestStacks() override;
  Status Share(const std::string& host_path, const std::string& vm_path, bool read_only) override;

  // The short per-task directory that holds the VM's sockets (unix socket
  // paths are limited to 108 bytes, bundles can be long).
  static std::string VmStateDir(const std::string& ns, const std::string& id);
  // Where every shim on the host remembers a failed KVM probe
  // (VmConfig::kvm_verdict_file).
  static constexpr char kKvmVerdictFile[] = "/run/runhcs/kvm-unusable";
  // Boots the VM of container or pod `id` (`base` with its state directory,
  // the host's KVM verdict file and, unless given, its console into the
  // shim's log). On failure nothing of it is left.
  static StatusOr<std::shared_ptr<uvm::UtilityVm>> BootVm(uvm::VmConfig base, const std::string& ns,
                                                          const std::string& id);

  VmTask(std::string id, std::string bundle, std::string ns, std::shared_ptr<uvm::UtilityVm> vm,
         bool owns_vm, events::Publisher* publisher, bool mounted);

 private:
  StatusOr<std::unique_ptr<exec::Process>> NewExecProcess(const task::ExecRequest& req) override;
  void KillAll() override;
  // `signal` to every process of the container, through the agent.
  Status SignalAll(uint32_t signal);
  void Teardown() override;
  static StatusOr<std::shared_ptr<VmTask>> CreateWith(
      const task::CreateRequest& req, const std::string& ns, std::shared_ptr<uvm::UtilityVm> vm,
      bool owns_vm, std::unique_ptr<stdio::ProcessIo> io, const std::string& spec,
      const std::string& rootfs, bool mounted, events::Publisher* publisher);
  void WatchVm();
  Status FreezeContainer(bool freeze);

  const std::shared_ptr<uvm::UtilityVm> vm_;
  std::atomic<int> gone_token_{0};  // WatchVm's OnGone, cancelled with the task
  const bool owns_vm_;
  const bool mounted_;

  std::unique_ptr<OomRelay> oom_;          // set once in Create; null without an agent (fakes)
  std::vector<std::string> mount_shares_;  // guest paths of the spec's bind mounts; set in Create
  Mutex mu_;
  bool paused_ GUARDED_BY(mu_) = false;
};

}  // namespace runhcs::vmtask
