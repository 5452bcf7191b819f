// SandboxTask: the fake pod-sandbox task (hcsshim's wcowPodSandboxTask),
// implemented to the letter of its Go source, on Linux.
//
// It holds no container. Its init exec is fake: Start gives the pid of the
// process running the VM (QEMU, as Kata reports: a host tool that follows
// it finds the pod's VM; CRI's /proc/<pid>/ns paths for workloads are
// mapped to the pod's namespaces in the guest), 1 without a VM, and
// publishes TaskStart; Kill while Running makes it exit with status 0,
// whatever the signal; it has no terminal and no stdin. When the task has a
// utility VM, it owns it:
//   - init exits (the normal case: containerd kills the sandbox)
//       -> close(): Close the VM, publish init's TaskExit, release Wait().
//   - the VM dies on its own
//       -> init ForceExit(1), then close().
// close() is idempotent and publishes TaskExit exactly once.
//
// Differences from the Go code, each following the contracts instead:
//   - Kill of the Created init returns FailedPrecondition (Exec contract);
//     hcsshim exits it with status 1.
//   - ForceExit records the status it is given; hcsshim records 1.
//   - ExecInHost/Share/Stats without a VM return FailedPrecondition
//     (task::NotIsolatedError); hcsshim returns a plain error, and its Stats
//     dereferences the missing VM.
//   - KillExec checks `all` with a non-empty exec id (FailedPrecondition)
//     before looking the exec up, as every Task does; the Go code looks up
//     first and so answers NotFound.
//   - DeleteExec waits (bounded) for close() before publishing TaskDelete,
//     so TaskExit always precedes TaskDelete.
// close() is TaskBase's init-exit path; the VM is closed in its Teardown.
#pragma once

#include <functional>

#include <memory>

#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "exec/process_exec.h"
#include "task/task_base.h"
#include "uvm/utility_vm.h"

namespace runhcs::pod {

class SandboxTask : public task::TaskBase {
 public:
  // `host` may be null (a process-isolated pod's fake sandbox). `with_vm`
  // lives as long as the VM and is released right after it is closed (the
  // pod's network). The caller publishes TaskCreate.
  static std::shared_ptr<SandboxTask> Create(events::Publisher* publisher, std::string id,
                                             std::string bundle,
                                             std::shared_ptr<uvm::UtilityVm> host,
                                             std::shared_ptr<void> with_vm = nullptr);
  // Closes the VM if the task never closed. May run on any thread,
  // the VM watcher's included.
  ~SandboxTask() override;

  // Runs in close(), after the VM is closed and before init's TaskExit: the
  // pod waits there for its workloads' TaskExits, which must come first.
  // Set before the task can exit.
  void SetBeforeExit(std::function<void()> fn) {
    MutexLock l(&mu_);
    before_exit_ = std::move(fn);
  }

  Status CreateExec(const task::ExecRequest& req) override;
  std::vector<std::shared_ptr<exec::Exec>> ListExecs() override;
  Status KillExec(std::string_view exec_id, uint32_t signal, bool all) override;
  StatusOr<std::vector<task::ProcessDetails>> Pids() override;
  Status Pause() override;
  Status Resume() override;
  Status Update(const runhcs::wkt::Any& resources) override;
  StatusOr<runhcs::wkt::Any> Stats() override;
  StatusOr<int32_t> ExecInHost(
      const containerd::runhcs::v1::diag::ExecProcessRequest& req) override;
  std::string DumpGuestStacks() override;
  Status Share(const std::string& host_path, const std::string& vm_path, bool read_only) override;

  // Use Create().
  SandboxTask(events::Publisher* publisher, std::string id, std::string bundle,
              std::shared_ptr<uvm::UtilityVm> host);

 private:
  StatusOr<std::unique_ptr<exec::Process>> NewExecProcess(const task::ExecRequest& req) override;
  void KillAll() override {}
  void Teardown() override;
  // The VM watcher: waits for the VM to exit, then force-exits init with 1
  // if the task is still there.
  static void WatchVm(const std::weak_ptr<SandboxTask>& weak, uvm::UtilityVm* host,
                      const std::string& id);

  const std::shared_ptr<uvm::UtilityVm> host_;  // owned; may be null
  Mutex mu_;
  std::function<void()> before_exit_ GUARDED_BY(mu_);
  bool torn_down_ GUARDED_BY(mu_) = false;
  std::shared_ptr<void> with_vm_ GUARDED_BY(mu_);
};

}  // namespace runhcs::pod
