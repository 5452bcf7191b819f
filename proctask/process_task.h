// ProcessTask: a process-isolated container run by an OCI runtime on the
// host (the Task a task shim serves for `--runtime io.containerd.runhcs.v1`).
//
// Lifecycle:
//   Create()      rootfs mounts -> stdio -> `runtime create` -> TaskCreate.
//   init Start    `runtime start` -> TaskStart.
//   init exit     a container without a pid namespace of its own loses
//                 the rest of its processes at once (as runc-v2 does), then
//                 TaskBase's init-exit path.
//   DeleteExec("") `runtime delete --force`, unmount, TaskDelete.
// The bundle keeps `runtime` (binary and root) so the shim's `delete` action
// can clean up after a shim that died.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "exec/process_exec.h"
#include "oci/runtime.h"
#include "stats/cgroup.h"
#include "task/task_base.h"

namespace runhcs::proctask {

class ProcessTask : public task::TaskBase {
 public:
  struct Config {
    std::string ns;
    oci::Runtime::Config runtime;
  };

  static StatusOr<std::shared_ptr<ProcessTask>> Create(const task::CreateRequest& req,
                                                       const Config& cfg,
                                                       events::Publisher* publisher);
  ~ProcessTask() override;

  Status KillExec(std::string_view exec_id, uint32_t signal, bool all) override;
  StatusOr<std::vector<task::ProcessDetails>> Pids() override;
  Status Pause() override;
  Status Resume() override;
  bool Paused() override;
  Status Update(const runhcs::wkt::Any& resources) override;
  StatusOr<runhcs::wkt::Any> Stats() override;
  StatusOr<int32_t> ExecInHost(
      const containerd::runhcs::v1::diag::ExecProcessRequest& req) override;
  std::string DumpGuestStacks() override { return ""; }
  Status Share(const std::string& host_path, const std::string& vm_path, bool read_only) override;

  // The `runtime` file of a bundle: what the `delete` action needs.
  static StatusOr<oci::Runtime::Config> ReadRuntimeFile(const std::string& bundle);

  ProcessTask(std::string id, std::string bundle, std::string ns,
              std::shared_ptr<oci::Runtime> runtime, events::Publisher* publisher, bool mounted);

 private:
  StatusOr<std::unique_ptr<exec::Process>> NewExecProcess(const task::ExecRequest& req) override;
  void KillAll() override;
  void Teardown() override;
  void PrepareDelete() override;
  void FinishDelete() override;
  // Records init's cgroup (for Stats) and watches it for OOM kills.
  void WatchCgroup(pid_t pid);

  // Read-only after Create.
  const std::shared_ptr<oci::Runtime> runtime_;
  const bool mounted_;

  Mutex mu_;
  std::optional<stats::ProcessCgroups> cgroups_ GUARDED_BY(mu_);
  bool paused_ GUARDED_BY(mu_) = false;
};

}  // namespace runhcs::proctask
