// TaskService: containerd.task.v2.Task (17 RPCs) and
// containerd.runhcs.v1.diag.ShimDiag, routed to the pod/task/exec model.
//
// Every handler is a thin wrapper: decode, call the model, encode. Errors are
// Status values with errdefs codes; the TTRPC layer maps them to the wire
// once. Namespaces come from the -namespace flag, never from metadata
// (containerd 1.6 sends none on task calls).
//
// What a shim serves (the reference shim's rules):
//  - A task shim (its own id, no pod) serves one task. A pod shim
//    (is_sandbox) first creates the pod from the sandbox's Create and then
//    adds each workload Create to it.
//  - An id this shim does not serve is NotFound, including before Create.
//  - After Delete of a task's init, the task is gone (NotFound); Shutdown
//    exits the shim only when no task remains, and only for its own id.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/stacks.h"
#include "base/thread_annotations.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "events/publisher.h"
#include "oci/spec.h"
#include "pod/pod.h"
#include "runhcs/diag.ttrpc.h"
#include "task/task.h"
#include "ttrpc/server.h"

namespace runhcs::service {

namespace v2 = ::containerd::task::v2;
namespace diag = ::containerd::runhcs::v1::diag;
using ::runhcs::wkt::Empty;

// Builds tasks and pods for Create. The process-isolation and utility-VM
// implementations plug in here.
class TaskFactory {
 public:
  virtual ~TaskFactory() = default;
  // A task in a shim of its own. Publishes TaskCreate on success.
  virtual StatusOr<std::shared_ptr<task::Task>> CreateTask(const task::CreateRequest& req,
                                                           const oci::Spec& spec) = 0;
  // A pod whose sandbox is `req`. Publishes the sandbox's TaskCreate.
  virtual StatusOr<std::shared_ptr<pod::Pod>> CreatePod(const task::CreateRequest& req,
                                                        const oci::Spec& spec) = 0;
};

class TaskService : public containerd::task::v2::TaskServer,
                    public containerd::runhcs::v1::diag::ShimDiagServer {
 public:
  struct Config {
    std::string id;  // the shim's -id (the sandbox id for a pod shim)
    std::string ns;
    bool is_sandbox = false;
    TaskFactory* factory = nullptr;
    events::Publisher* publisher = nullptr;
    // Called once Shutdown decides the shim should exit; the daemon stops
    // after the reply is sent.
    std::function<void()> on_shutdown;
    // Names the pcs of DiagStacks; unset: symbolized in this process.
    Symbolizer symbolize;
    // DiagStacks' guest part while the shim's task does not exist yet: the
    // stacks of the VMs this process booted for it. Unset: none.
    std::function<std::string()> untasked_guest_stacks;
  };

  explicit TaskService(Config cfg);

  // Registers both services on `server`.
  void Register(ttrpc::Server* server);

  // Number of tasks still served (a deleted task no longer counts).
  size_t task_count();

  // containerd.task.v2.Task
  Status State(const ttrpc::CallContext& ctx, const v2::StateRequest& req,
               v2::StateResponse* resp) override;
  Status Create(const ttrpc::CallContext& ctx, const v2::CreateTaskRequest& req,
                v2::CreateTaskResponse* resp) override;
  Status Start(const ttrpc::CallContext& ctx, const v2::StartRequest& req,
               v2::StartResponse* resp) override;
  Status Delete(const ttrpc::CallContext& ctx, const v2::DeleteRequest& req,
                v2::DeleteResponse* resp) override;
  Status Pids(const ttrpc::CallContext& ctx, const v2::PidsRequest& req,
              v2::PidsResponse* resp) override;
  Status Pause(const ttrpc::CallContext& ctx, const v2::PauseRequest& req, Empty* resp) override;
  Status Resume(const ttrpc::CallContext& ctx, const v2::ResumeRequest& req, Empty* resp) override;
  Status Checkpoint(const ttrpc::CallContext& ctx, const v2::CheckpointTaskRequest& req,
                    Empty* resp) override;
  Status Kill(const ttrpc::CallContext& ctx, const v2::KillRequest& req, Empty* resp) override;
  Status Exec(const ttrpc::CallContext& ctx, const v2::ExecProcessRequest& req,
              Empty* resp) override;
  Status ResizePty(const ttrpc::CallContext& ctx, const v2::ResizePtyRequest& req,
                   Empty* resp) override;
  Status CloseIO(const ttrpc::CallContext& ctx, const v2::CloseIORequest& req,
                 Empty* resp) override;
  Status Update(const ttrpc::CallContext& ctx, const v2::UpdateTaskRequest& req,
                Empty* resp) override;
  void Wait(const ttrpc::CallContext& ctx, const v2::WaitRequest& req,
            ttrpc::TypedResponder<v2::WaitResponse> r) override;
  Status Stats(const ttrpc::CallContext& ctx, const v2::StatsRequest& req,
               v2::StatsResponse* resp) override;
  Status Connect(const ttrpc::CallContext& ctx, const v2::ConnectRequest& req,
                 v2::ConnectResponse* resp) override;
  Status Shutdown(const ttrpc::CallContext& ctx, const v2::ShutdownRequest& req,
                  Empty* resp) override;

  // containerd.runhcs.v1.diag.ShimDiag
  Status DiagPid(const ttrpc::CallContext& ctx, const diag::PidRequest& req,
                 diag::PidResponse* resp) override;
  Status DiagStacks(const ttrpc::CallContext& ctx, const diag::StacksRequest& req,
                    diag::StacksResponse* resp) override;
  Status DiagTasks(const ttrpc::CallContext& ctx, const diag::TasksRequest& req,
                   diag::TasksResponse* resp) override;
  Status DiagExecInHost(const ttrpc::CallContext& ctx, const diag::ExecProcessRequest& req,
                        diag::ExecProcessResponse* resp) override;
  Status DiagShare(const ttrpc::CallContext& ctx, const diag::ShareRequest& req,
                   diag::ShareResponse* resp) override;

 private:
  StatusOr<std::shared_ptr<task::Task>> GetTask(std::string_view id);
  StatusOr<std::shared_ptr<exec::Exec>> GetExec(std::string_view id, std::string_view exec_id);

  const Config cfg_;

  Mutex mu_;
  // Create of the first task or pod is serialized by create_mu_ (held
  // across the factory call; never taken by other RPCs).
  Mutex create_mu_;
  std::shared_ptr<task::Task> task_ GUARDED_BY(mu_);  // task shim
  std::shared_ptr<pod::Pod> pod_ GUARDED_BY(mu_);     // pod shim
  bool task_deleted_ GUARDED_BY(mu_) = false;
  bool shutdown_called_ GUARDED_BY(mu_) = false;
};

}  // namespace runhcs::service
